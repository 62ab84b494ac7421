"""Engine workers and worker seats.

Each whisper context belongs to one `EngineWorker`. Its only way in is `trio.to_thread.run_sync` with a
`CapacityLimiter(1)`: whisper.cpp crashes when one context is used from two threads, and the limiter is released
only when the thread really finishes. Streams sharing a worker are served latest first (the one with the most audio no
pass has seen), each with at most one request waiting; the request is built when its turn comes, so it holds the
newest audio rather than a stale window.

Seats bound how many streams transcribe at once: `SeatPool.open_seat()` hands them out first come, first served, a
GPU seat first when one is free, and takes each back however its holder ends.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import numpy as np
import trio

from melvin_trio.core.events import Detected, DetectRequest, Request, TranscribeRequest
from melvin_trio.engine.base import Engine, EngineAborted, EngineError, EngineTimedOut, Word
from melvin_trio.filetranscribe import WindowRequest, decode_window
from melvin_trio.server.metrics import Metrics

log = logging.getLogger(__name__)

_NO_AUDIO = np.zeros(0, dtype=np.float32)
# A file job's window (30 s, beam search, its own budget) may take this many times the call timeout.
BACKGROUND_TIMEOUT_FACTOR: Final = 3.0
# A busy box is not a stuck engine. Two fresh testers (stops 27, 28), their server at nice 19 beside a load of 4-5
# on 2 cores: passes took 0.5 s, then two in a row passed the 60 s limit, and each stream ended with 12-60 s of its
# speech never transcribed. A call past its limit whose thread used less than STARVED_CPU_SHARE of the time on a
# core was starved, not stuck: the stream retries it however often that happens (`EngineTimedOut.starved`), and the
# box has shown how slow it is now: a call may take SLOW_BOX_FACTOR times the longest of the worker's last
# RECENT_CALLS calls that answered or starved, when that is more than the call timeout. A call that used the CPU and
# did not finish counts as stuck: two in a row end its stream, as before. However slow the box, the limit stays
# under SLOW_BOX_MAX_FACTOR times the call timeout.
STARVED_CPU_SHARE: Final = 0.25
SLOW_BOX_FACTOR: Final = 3.0
SLOW_BOX_MAX_FACTOR: Final = 10.0
RECENT_CALLS: Final = 8

Outcome = list[Word] | Detected | EngineError  # words, a detected language, or the failure


@dataclass
class _Job:
    make_request: Callable[[], Request | WindowRequest | None]
    reply: trio.MemorySendChannel[tuple[Any, Outcome] | None]
    abort: threading.Event = field(default_factory=threading.Event)
    # A file window: served after every stream's request, and aborted (preempted) when a stream's request arrives.
    background: bool = False
    preempted: bool = False
    # The submitter's context: its pass runs in it, so what the engine logs names the stream.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    # How late the stream is (seconds of audio no pass has seen yet): the latest stream's turn comes first.
    lateness: Callable[[], float] | None = None


class EngineWorker:
    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._limiter = trio.CapacityLimiter(1)
        self._queue: dict[object, _Job] = {}  # insertion order is the order of turns
        self._wakeup = trio.Event()
        self.busy_seconds = 0.0  # time spent in engine calls, for the benchmarks
        self.calls = 0
        self.metrics = Metrics()  # the server puts its own here
        self._running: _Job | None = None
        # Seconds of each recent call that answered or starved: how slow the box is now.
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_CALLS)

    async def serve(
        self, call_timeout: float | None = None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run queued requests one at a time until cancelled (cancellation waits for a running call to end).
        A call running longer than `call_timeout` seconds (or `SLOW_BOX_FACTOR` times the longest recent call that
        answered or starved, when more) is aborted and fails its stream only (`EngineTimedOut`)."""
        task_status.started()
        while True:
            if not self._queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            key = self._next_turn()
            job = self._queue.pop(next(iter(self._queue)) if key is None else key)
            try:
                request = job.make_request()
            except Exception as exc:  # a bug in one stream's core must not stop the worker
                log.exception("building a request failed")
                self._deliver(job, (DetectRequest(_NO_AUDIO), EngineError(f"internal error: {exc}")))
                continue
            if request is None:
                self._deliver(job, None)
                continue
            started = trio.current_time()
            timed_out = trio.Event()
            self._running = job
            async with trio.open_nursery() as watchdog:
                limit = call_timeout
                if limit is not None and self._recent:  # the box is this slow now
                    limit = min(max(limit, SLOW_BOX_FACTOR * max(self._recent)), SLOW_BOX_MAX_FACTOR * limit)
                if limit is not None and job.background:  # a 30 s window with beam search: bounded by its budget
                    limit *= BACKGROUND_TIMEOUT_FACTOR
                if limit is not None:
                    watchdog.start_soon(self._abort_after, limit, job.abort, timed_out)
                cpu = 0.0  # seconds the calling thread ran
                try:
                    outcome, cpu = await trio.to_thread.run_sync(
                        partial(job.context.run, self._timed_call, request, job.abort), limiter=self._limiter
                    )
                except Exception as exc:  # whatever the binding raises ends that stream only
                    log.exception("engine call failed")
                    outcome = EngineError(f"{type(exc).__name__}: {exc}")
                watchdog.cancel_scope.cancel()
            self._running = None
            if isinstance(outcome, EngineAborted) and not timed_out.is_set() and not job.preempted:
                # Its stream ended mid-pass (the client left, or the server stops): logged with that stream.
                job.context.run(log.info, "%s: pass aborted: its stream ended", self.name)
            wall = trio.current_time() - started
            if timed_out.is_set():
                starved = cpu < STARVED_CPU_SHARE * wall
                log.error(
                    "%s: an engine call passed the %g s limit and was aborted (it ran %.0f %% of that time: %s)",
                    self.name,
                    limit,
                    100 * cpu / wall,
                    "a starved call" if starved else "a stuck one",
                )
                outcome = EngineTimedOut(f"the engine took longer than {limit:g} s", starved=starved)
            self.busy_seconds += wall
            if not isinstance(outcome, EngineError) or (isinstance(outcome, EngineTimedOut) and outcome.starved):
                self._recent.append(wall)
            self.metrics.engine_pass(
                self.engine.info.model_name,
                "detect" if isinstance(request, DetectRequest) else "file" if job.background else "transcribe",
                trio.current_time() - started,
                ok=not isinstance(outcome, EngineError),
            )
            self.calls += 1
            self._deliver(job, (request, outcome))

    def _next_turn(self) -> object | None:
        """The stream whose turn it is: the latest one (the most audio no pass has seen; among equals the one that
        asked first), so a stream's words wait for the engine about as long as any other's. None: only file
        windows wait."""
        best: object | None = None
        best_lateness = -1.0
        for key, job in self._queue.items():  # insertion order: the first asker wins a tie
            if job.background:
                continue
            try:
                lateness = job.lateness() if job.lateness is not None else 0.0
            except Exception:  # a broken measure must not stop the worker: that stream just loses its priority
                log.exception("reading a stream's lateness failed")
                lateness = 0.0
            if lateness > best_lateness:
                best, best_lateness = key, lateness
        return best

    @staticmethod
    async def _abort_after(seconds: float, abort: threading.Event, timed_out: trio.Event) -> None:
        await trio.sleep(seconds)
        timed_out.set()
        abort.set()  # whisper.cpp checks it between graph steps; the thread returns soon after

    def _timed_call(self, request: Request | WindowRequest, abort: threading.Event) -> tuple[Outcome, float]:
        """`_call`'s outcome (an EngineError it raised as the outcome) and the CPU seconds its thread ran."""
        cpu = time.thread_time()
        try:
            outcome = self._call(request, abort)
        except EngineError as exc:
            outcome = exc
        return outcome, time.thread_time() - cpu

    def _call(self, request: Request | WindowRequest, abort: threading.Event) -> Outcome:
        if isinstance(request, WindowRequest):
            return decode_window(self.engine, request, abort.is_set)
        if isinstance(request, DetectRequest):
            return Detected(*self.engine.detect_language(request.audio))
        assert isinstance(request, TranscribeRequest)
        return self.engine.transcribe(
            request.audio,
            language=request.language,
            prompt=request.prompt,
            abort=abort.is_set,
            decoding=request.decoding,
        )

    @staticmethod
    def _deliver(job: _Job, value: tuple[Any, Outcome] | None) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):  # the stream went away
            job.reply.send_nowait(value)

    async def submit(
        self,
        key: object,
        make_request: Callable[[], Request | None],
        lateness: Callable[[], float] | None = None,
    ) -> tuple[Request, Outcome] | None:
        """Queue a turn for stream `key`; `make_request` is called when the turn comes. Of several streams waiting,
        the one with the highest `lateness()` (seconds of its audio no pass has seen) goes first; without one, in
        the order they asked. Returns the request and its outcome, or None if there was nothing to do. Cancelling
        withdraws the turn, or aborts the running call."""
        send, receive = trio.open_memory_channel[tuple[Any, Outcome] | None](1)
        job = _Job(make_request, send, lateness=lateness)
        self._queue[key] = job
        self._wakeup.set()
        running = self._running
        if running is not None and running.background:  # live streams come first
            running.preempted = True
            running.abort.set()
        try:
            async with receive:
                result: tuple[Request, Outcome] | None = await receive.receive()
                return result
        except trio.EndOfChannel:
            return None
        finally:
            if self._queue.get(key) is job:
                del self._queue[key]
            job.abort.set()

    async def submit_background(self, key: object, request: WindowRequest | DetectRequest) -> Outcome | None:
        """Run one window of a file job (or its language detection) when no stream's request is queued. Returns
        its outcome, or None when a stream's request preempted it (the caller tries again later). Cancelling
        withdraws it or aborts it."""
        send, receive = trio.open_memory_channel[tuple[Any, Outcome] | None](1)
        job = _Job(lambda: request, send, background=True)
        self._queue[key] = job
        self._wakeup.set()
        try:
            async with receive:
                reply = await receive.receive()
        except trio.EndOfChannel:
            return None
        finally:
            if self._queue.get(key) is job:
                del self._queue[key]
            job.abort.set()
        if reply is None:
            return None
        outcome = reply[1]
        if job.preempted and isinstance(outcome, EngineAborted):
            return None
        return outcome


@dataclass(frozen=True)
class Seat:
    kind: str  # "cuda" or "cpu"
    index: int
    worker: EngineWorker


@dataclass(eq=False)
class _Waiter:
    chosen: trio.Event = field(default_factory=trio.Event)
    seat: Seat | None = None  # set by the hand-over, before `chosen`


class SeatPool:
    """Worker seats, handed out first come, first served, a GPU seat first when one is free.

    The only way to hold a seat is `open_seat()`, an async context manager that gives the seat back however its
    block ends. A seat freed while clients wait is handed to the first of them directly; a waiter that is cancelled
    after it was chosen passes the seat on, so no seat is ever lost between owners.
    """

    def __init__(self, seats: list[Seat]) -> None:
        if not seats:
            raise ValueError("no worker seats")
        # GPU seats first: a free GPU seat is always taken before a CPU seat.
        self._free = sorted(seats, key=lambda s: (s.kind != "cuda", s.index))
        self._order = {id(s): n for n, s in enumerate(self._free)}
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self.total = len(seats)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def idle(self) -> bool:
        """No live stream holds a seat or waits for one: the engines are free for file jobs."""
        return self.available == self.total and self.waiting == 0

    @property
    def must_wait(self) -> bool:
        """A client asking now would wait (no free seat, or others are in line before it)."""
        return not self._free or bool(self._waiters)

    @asynccontextmanager
    async def open_seat(self, while_waiting: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[Seat]:
        """Hold a seat for the duration of the block. If none is free, wait in line, running `while_waiting`
        (e.g. notices to the client) until seated. Cancelling while waiting gives up the place in the line;
        the seat is given back whenever the block ends, by an exception or cancellation included."""
        seat: Seat | None = None
        try:
            if not self.must_wait:
                seat = self._free.pop(0)
            else:
                async with trio.open_nursery() as nursery:
                    if while_waiting is not None:
                        nursery.start_soon(while_waiting)
                    seat = await self._wait_in_line()
                    nursery.cancel_scope.cancel()
            yield seat
        finally:
            if seat is not None:
                self._give_back(seat)

    async def _wait_in_line(self) -> Seat:
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.chosen.wait()
        except BaseException:
            if waiter.seat is not None:
                self._give_back(waiter.seat)  # chosen, but cancelled before it could take the seat: pass it on
            else:
                self._waiters.remove(waiter)
            raise
        assert waiter.seat is not None
        return waiter.seat

    def _give_back(self, seat: Seat) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.seat = seat
            waiter.chosen.set()
            return
        self._free.append(seat)
        self._free.sort(key=lambda s: self._order[id(s)])
