"""Engine workers and seats, with the fake engine: turns, fairness, failures, seat order."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from melvin_trio.core.stream import TranscribeRequest
from melvin_trio.engine.base import EngineError, Word
from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.workers import EngineWorker, Seat, SeatPool


def _request(tag: float) -> TranscribeRequest:
    audio = np.full(1600, tag, dtype=np.float32)
    return TranscribeRequest(audio, offset=0.0, language="en", prompt="", end_sample=1600, complete=False, last=False)


def _echo(audio: np.ndarray, prompt: str) -> list[Word]:
    if audio[0] < 0:
        raise EngineError("this stream's audio breaks the engine")
    return [Word(f"tag{audio[0]:.0f}", 0.0, 0.1, 1.0)]


async def test_streams_sharing_a_worker_take_turns() -> None:
    engine = FakeEngine([_echo])
    worker = EngineWorker(engine, "w")
    served: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)

            async def stream(tag: float, passes: int) -> None:
                for _ in range(passes):
                    result = await worker.submit(f"s{tag}", lambda: _request(tag))
                    assert result is not None
                    words = result[1]
                    assert isinstance(words, list)
                    served.append(words[0].text)

            async with trio.open_nursery() as streams:
                for tag in (1, 2, 3):
                    streams.start_soon(stream, tag, 3)
            nursery.cancel_scope.cancel()
    # round robin: no stream gets a second turn before the others had their first
    assert sorted(served[:3]) == ["tag1", "tag2", "tag3"]
    assert sorted(served[3:6]) == ["tag1", "tag2", "tag3"]


async def test_the_request_is_built_when_the_turn_comes() -> None:
    engine = FakeEngine([_echo])
    worker = EngineWorker(engine, "w")
    newest = [1.0]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            # the worker is not running yet: the turn waits, and the stream's audio moves on meanwhile
            result_box: list[object] = []
            answered = trio.Event()

            async def submit() -> None:
                result_box.append(await worker.submit("s", lambda: _request(newest[0])))
                answered.set()

            nursery.start_soon(submit)
            await trio.testing.wait_all_tasks_blocked()
            newest[0] = 7.0
            await nursery.start(worker.serve)
            await answered.wait()
            nursery.cancel_scope.cancel()
    result = result_box[0]
    assert isinstance(result, tuple)
    assert result[1][0].text == "tag7"


async def test_an_engine_error_reaches_only_its_stream() -> None:
    engine = FakeEngine([_echo])
    worker = EngineWorker(engine, "w")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            bad = await worker.submit("bad", lambda: _request(-1.0))
            good = await worker.submit("good", lambda: _request(4.0))
            nursery.cancel_scope.cancel()
    assert bad is not None
    assert isinstance(bad[1], EngineError)
    assert good is not None
    assert isinstance(good[1], list)


async def test_nothing_to_do_answers_none() -> None:
    worker = EngineWorker(FakeEngine([_echo]), "w")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            assert await worker.submit("s", lambda: None) is None
            nursery.cancel_scope.cancel()


def _pool() -> SeatPool:
    worker = EngineWorker(FakeEngine(), "w")
    return SeatPool([Seat("cpu", 0, worker), Seat("cuda", 0, worker), Seat("cpu", 1, worker)])


async def test_gpu_seats_are_handed_out_first() -> None:
    pool = _pool()
    a, b = object(), object()
    first = pool.try_take(a)
    assert first is not None
    assert first.kind == "cuda"
    second = pool.try_take(b)
    assert second is not None
    assert second.kind == "cpu"
    pool.give_back(a, first)
    again = pool.try_take(a)
    assert again is not None
    assert again.kind == "cuda"


async def test_waiting_clients_are_seated_in_arrival_order() -> None:
    worker = EngineWorker(FakeEngine(), "w")
    pool = SeatPool([Seat("cpu", 0, worker)])
    holder = object()
    seat = pool.try_take(holder)
    assert seat is not None
    seated: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def wait(n: int) -> None:
                me = object()
                got = await pool.take(me)
                seated.append(n)
                await trio.sleep(0.01)
                pool.give_back(me, got)

            for n in range(5):
                nursery.start_soon(wait, n)
                await trio.testing.wait_all_tasks_blocked()
            assert pool.waiting == 5
            assert pool.try_take(object()) is None  # a newcomer does not jump the line
            pool.give_back(holder, seat)
    assert seated == [0, 1, 2, 3, 4]
    assert pool.available == 1


async def test_a_waiting_client_that_leaves_gives_up_its_place() -> None:
    worker = EngineWorker(FakeEngine(), "w")
    pool = SeatPool([Seat("cpu", 0, worker)])
    holder = object()
    seat = pool.try_take(holder)
    assert seat is not None
    with trio.move_on_after(0.1):
        await pool.take(object())
    assert pool.waiting == 0
    pool.give_back(holder, seat)
    assert pool.available == 1


def test_a_pool_needs_seats() -> None:
    with pytest.raises(ValueError, match="no worker seats"):
        SeatPool([])
