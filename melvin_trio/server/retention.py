"""Retention (`keep_data_for_hours`): one loop deletes what is older, at start and then at a steady interval."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S: Final = 600.0  # how often old exports and ended jobs are looked for (README: every 10 minutes)


async def purge_periodically(purge: Callable[[float], list[str]], hours: float, what: str) -> None:
    """Call `purge(hours)` (it deletes what is older than `hours` and returns what it deleted) now and then every
    RETENTION_INTERVAL_S (or a quarter of `hours`, if shorter), until cancelled. A failing purge (OSError) is logged
    and tried again next time; `what` names the things deleted in the log ("export(s)", "job(s)")."""
    while True:
        try:
            purged = purge(hours)
        except OSError:
            log.exception("deleting old %s failed", what)
        else:
            if purged:
                log.info("deleted %d %s older than %g hours", len(purged), what, hours)
        await trio.sleep(min(RETENTION_INTERVAL_S, hours * 3600 / 4))
