"""The reference driver: runs a stream through the core synchronously, without sockets, threads or a clock.

The unit tests, the property tests and the benchmarks (`bench/replay.py`, `bench/vad.py`) all drive the core with
this one loop, so a change to the core's protocol is made once. The server (`server/session.py`) drives it the
same way, with an event loop and an engine worker in place of the direct calls.

Stream time is simulated: audio arrives `step_seconds` at a time while nothing is due, and each engine call costs
`pass_seconds` of stream time (the audio that arrives meanwhile is fed before its answer is applied, as the
server's reader feeds it while the engine runs), so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.decoding import GREEDY, Decoding
from melvin_trio.core.stream import (
    Detected,
    DetectRequest,
    Event,
    SendFinal,
    SendPartial,
    StreamCore,
    TranscribeRequest,
)
from melvin_trio.core.words import Word

_BYTES_PER_SAMPLE = 2
_MAX_STEPS = 1_000_000


class Recognizer(Protocol):
    """What the driver needs of an engine (melvin_trio.engine.base.Engine satisfies it)."""

    def transcribe(
        self, audio: npt.NDArray[np.float32], *, language: str, prompt: str = "", decoding: Decoding = GREEDY
    ) -> list[Word]: ...

    def detect_language(self, audio: npt.NDArray[np.float32]) -> tuple[str, float]: ...


@dataclass
class Run:
    """What a driven stream produced, in order."""

    finals: list[list[Word]] = field(default_factory=list)
    final_times: list[float] = field(default_factory=list)  # stream time when each final went out
    partials: list[str] = field(default_factory=list)
    requests: list[TranscribeRequest] = field(default_factory=list)
    detections: list[Detected] = field(default_factory=list)

    @property
    def words(self) -> list[Word]:
        return [w for f in self.finals for w in f]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


def drive(
    core: StreamCore,
    pcm: bytes,
    engine: Recognizer,
    *,
    step_seconds: float = 0.25,
    pass_seconds: float = 0.5,
    chunk_bytes: int = 8000,
    pass_seconds_of: Callable[[TranscribeRequest], float] | None = None,
    on_event: Callable[[float, Event], None] | None = None,
    on_request: Callable[[TranscribeRequest], None] | None = None,
) -> Run:
    """Stream `pcm` (s16le at the core's sample rate) into `core` as a live client would, answer its requests with
    `engine`, send eof after the last byte, and return everything the core sent. Raises AssertionError if the
    core never finishes."""
    run = Run()
    fed = 0
    clock = 0.0

    def feed_until(t: float) -> None:
        nonlocal fed
        target = min(len(pcm), int(t * SAMPLE_RATE) * _BYTES_PER_SAMPLE)
        while fed < target:
            size = min(chunk_bytes, target - fed)
            core.feed(pcm[fed : fed + size])
            fed += size

    def take(events: list[Event]) -> None:
        for event in events:
            if on_event is not None:
                on_event(clock, event)
            if isinstance(event, SendFinal):
                run.finals.append(event.words)
                run.final_times.append(core.received_seconds)
            elif isinstance(event, SendPartial):
                run.partials.append(event.text)

    for _ in range(_MAX_STEPS):
        take(core.poll())
        if core.finished:
            return run
        if not core.pass_due():
            if fed >= len(pcm):
                core.end_of_stream()
            else:
                clock += step_seconds
                feed_until(clock)
            continue
        request = core.next_request()
        if request is None:
            continue
        if isinstance(request, DetectRequest):
            detected = Detected(*engine.detect_language(request.audio))
            run.detections.append(detected)
            take(core.apply(request, detected))
            continue
        run.requests.append(request)
        if on_request is not None:
            on_request(request)
        words = engine.transcribe(
            request.audio, language=request.language, prompt=request.prompt, decoding=request.decoding
        )
        clock += pass_seconds_of(request) if pass_seconds_of is not None else pass_seconds
        feed_until(clock)  # as in the server, the audio sent while the engine ran is in the core by its answer
        take(core.apply(request, words))
    raise AssertionError("the stream did not finish")
