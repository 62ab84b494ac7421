"""A quick soak: many connect, auth, stream, disconnect cycles, sequential and parallel, with one and two seats.

Afterwards every seat is free and threads, open files and memory are back at their baseline (within the margins
below); waiting clients were seated in the order they arrived. bench/soak.py is the long version.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import trio

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.client import open_connection, stream_pcm
from melvin_trio.engine.base import Engine
from melvin_trio.evaluation import Clip
from melvin_trio.server.exports import is_stream_id
from tests.server_harness import API_KEY, Running, running_server, wait_for

THREAD_MARGIN = 4  # trio's thread cache keeps a few idle workers for a while
FD_MARGIN = 2
RSS_MARGIN_MB = 25.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def cycle(running: Running, pcm: bytes, *, eof: bool) -> None:
    """One client: connect, authenticate, stream `pcm`, then eof (and wait for the id) or just leave."""
    if eof:
        result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0)
        assert result.stream_id is not None
        assert is_stream_id(result.stream_id)
        return
    async with open_connection(running.ws_url) as ws:
        await ws.send_message(json.dumps({"Authorization": API_KEY}))
        await ws.send_message(pcm)


@pytest.mark.parametrize("seats", [1, 2])
async def test_soak_leaves_no_trace_and_seats_in_arrival_order(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, caplog: pytest.LogCaptureFixture, seats: int
) -> None:
    caplog.set_level(logging.INFO, logger="melvin_trio")
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    speech = read_wav_pcm16(jfk.path)[: int(1.5 * 32000)]
    silence = np.zeros(16000, dtype="<i2").tobytes()
    cycles = 0
    with trio.fail_after(240):
        async with running_server(
            tiny_en_engine, tmp_path, seats=seats, limits={"waiting_notice_seconds": 0.5}
        ) as running:
            await cycle(running, speech, eof=True)  # warm-up: lazy allocations, thread cache
            await wait_for(lambda: running.server.seats.available == seats)
            threads, fds, rss = threading.active_count(), open_fds(), rss_mb()

            for i in range(12):  # sequential
                await cycle(running, speech if i % 2 else silence, eof=i % 4 != 3)
                cycles += 1
            for _ in range(2):  # parallel waves, more clients than seats
                async with trio.open_nursery() as nursery:
                    for k in range(5):
                        nursery.start_soon(partial(cycle, running, speech if k % 2 else silence, eof=k != 4))
                        await trio.sleep(0.1)  # a clear arrival order
                cycles += 5
            with trio.fail_after(30):
                await wait_for(lambda: running.server.seats.available == seats)
            await trio.sleep(0.5)  # closing connections finish their last steps
            assert threading.active_count() <= threads + THREAD_MARGIN
            assert open_fds() <= fds + FD_MARGIN
            assert rss_mb() <= rss + RSS_MARGIN_MB
    assert len(running.export_ids()) == cycles + 1
    assert running.server.seats.waiting == 0

    # Arrival order: the order streams started in is the order the waiting ones were seated in.
    started = [m for r in caplog.records if (m := re.match(r"stream (\w+) started", r.getMessage()))]
    seated = [m for r in caplog.records if (m := re.match(r"stream (\w+) seated", r.getMessage()))]
    waited = {m.group(1) for r in caplog.records if (m := re.match(r"stream (\w+) waits", r.getMessage()))}
    assert waited, "the waves had clients waiting for a seat"
    # (a client that left while it waited gave up its place and was never seated)
    seated_ids = {m.group(1) for m in seated}
    order_started = [m.group(1) for m in started if m.group(1) in waited & seated_ids]
    order_seated = [m.group(1) for m in seated if m.group(1) in waited]
    assert order_seated == order_started
