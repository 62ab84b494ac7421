"""The retention loop: it purges at start and then every interval, and a failing purge does not end it."""

from __future__ import annotations

import trio
import trio.testing

from melvin_trio.server.retention import RETENTION_INTERVAL_S, purge_periodically


async def test_purges_at_start_then_every_interval_and_survives_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []

    def purge(hours: float) -> list[str]:
        calls.append(trio.current_time())
        if len(calls) == 2:
            raise OSError("disk gone for a moment")
        return ["x"]

    start = trio.current_time()
    with trio.move_on_after(3 * RETENTION_INTERVAL_S + 1):
        await purge_periodically(purge, 72, "export(s)")
    assert [round(t - start) for t in calls] == [0, 600, 1200, 1800]
