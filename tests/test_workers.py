"""Engine workers and seats, with the fake engine: turns, fairness, failures, seat order."""

from __future__ import annotations

import math
import random
import threading

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


async def test_the_latest_stream_goes_first() -> None:
    """Of the streams waiting for one worker, the one with the most audio no pass has seen is served first (ties:
    the first to ask), so no stream's words wait much longer than another's."""
    release = threading.Event()

    def blocking_echo(audio: np.ndarray, prompt: str) -> list[Word]:
        if audio[0] == 0:
            release.wait(5)
        return _echo(audio, prompt)

    worker = EngineWorker(FakeEngine([blocking_echo]), "w")
    served: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)

            async def stream(tag: float, lateness: float) -> None:
                result = await worker.submit(f"s{tag}", lambda: _request(tag), lambda: lateness)
                assert result is not None
                assert isinstance(result[1], list)
                served.append(result[1][0].text)

            async with trio.open_nursery() as streams:
                streams.start_soon(stream, 0, 0.0)  # holds the engine while the others queue up
                await trio.testing.wait_all_tasks_blocked()
                for tag, lateness in ((1, 1.0), (2, 5.0), (3, 3.0), (4, 5.0)):
                    streams.start_soon(stream, tag, lateness)
                    await trio.testing.wait_all_tasks_blocked()
                release.set()
            nursery.cancel_scope.cancel()
    assert served == ["tag0", "tag2", "tag4", "tag3", "tag1"]


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
    async with pool.open_seat() as first:
        assert first.kind == "cuda"
        async with pool.open_seat() as second:
            assert second.kind == "cpu"
            assert second.index == 0
    async with pool.open_seat() as again:
        assert again.kind == "cuda"
    assert pool.available == 3


async def test_waiting_clients_are_seated_in_arrival_order() -> None:
    worker = EngineWorker(FakeEngine(), "w")
    pool = SeatPool([Seat("cpu", 0, worker)])
    seated: list[int] = []
    notices: list[int] = []
    release = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def holder() -> None:
                async with pool.open_seat():
                    await release.wait()

            async def wait(n: int) -> None:
                async def notice() -> None:
                    notices.append(n)
                    await trio.sleep_forever()

                async with pool.open_seat(notice):
                    seated.append(n)
                    await trio.sleep(0.01)

            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            for n in range(5):
                nursery.start_soon(wait, n)
                await trio.testing.wait_all_tasks_blocked()
            assert pool.waiting == 5
            assert pool.must_wait  # a newcomer does not jump the line
            release.set()
    assert seated == [0, 1, 2, 3, 4]
    assert notices == [0, 1, 2, 3, 4]
    assert (pool.available, pool.waiting) == (1, 0)


async def test_a_waiting_client_that_leaves_gives_up_its_place() -> None:
    worker = EngineWorker(FakeEngine(), "w")
    pool = SeatPool([Seat("cpu", 0, worker)])
    async with pool.open_seat():
        with trio.move_on_after(0.1):
            async with pool.open_seat():
                raise AssertionError("seated while the only seat is taken")
        assert pool.waiting == 0
    assert pool.available == 1


@pytest.mark.parametrize("cancel_first", [True, False])
async def test_a_waiter_cancelled_as_the_seat_is_handed_to_it_passes_it_on(cancel_first: bool) -> None:
    """The seat is freed and the first waiter cancelled in the same step, in either order: the seat goes to the
    next waiter, never nowhere."""
    worker = EngineWorker(FakeEngine(), "w")
    pool = SeatPool([Seat("cpu", 0, worker)])
    release = trio.Event()
    seated: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def holder() -> None:
                async with pool.open_seat():
                    await release.wait()

            first_scope = trio.CancelScope()

            async def first() -> None:
                with first_scope:
                    async with pool.open_seat():
                        seated.append("first")

            async def second() -> None:
                async with pool.open_seat():
                    seated.append("second")

            for task in (holder, first, second):
                nursery.start_soon(task)
                await trio.testing.wait_all_tasks_blocked()
            assert pool.waiting == 2
            if cancel_first:
                first_scope.cancel()
                release.set()
            else:
                release.set()
                first_scope.cancel()
    assert seated == ["second"]
    assert (pool.available, pool.waiting) == (1, 0)


async def test_a_holder_cancelled_or_failing_gives_its_seat_back() -> None:
    pool = _pool()
    with trio.CancelScope() as scope:
        async with pool.open_seat():
            scope.cancel()
            await trio.sleep(1)
    with pytest.raises(RuntimeError, match="first pass"):
        async with pool.open_seat():
            raise RuntimeError("the first pass failed")
    assert pool.available == 3


async def test_random_arrivals_and_cancellations_leave_every_seat_free(autojump_clock: trio.testing.MockClock) -> None:
    """Many borrowers arrive, wait, hold and are cancelled at random moments (whole seconds on a mock clock, so
    hand-overs and cancellations often fall on the same step); whatever the order, all seats come back."""
    rng = random.Random(8)
    pool = _pool()
    holding = 0
    most = 0
    for _ in range(20):
        async with trio.open_nursery() as nursery:

            async def borrower(arrive: int, hold: int, cancel_at: int | None) -> None:
                nonlocal holding, most
                await trio.sleep(arrive)
                with trio.move_on_after(cancel_at if cancel_at is not None else math.inf):
                    async with pool.open_seat(trio.sleep_forever):
                        holding += 1
                        most = max(most, holding)
                        try:
                            await trio.sleep(hold)
                        finally:
                            holding -= 1

            for _ in range(rng.randrange(1, 12)):
                nursery.start_soon(borrower, rng.randrange(4), rng.randrange(4), rng.choice([None, *range(6)]))
        assert (pool.available, pool.waiting, holding) == (pool.total, 0, 0)
    assert most == pool.total  # the storm did fill the pool
    async with pool.open_seat() as seat:  # and the next borrower is seated at once
        assert seat.kind == "cuda"


def test_a_pool_needs_seats() -> None:
    with pytest.raises(ValueError, match="no worker seats"):
        SeatPool([])
