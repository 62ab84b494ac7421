"""A scripted engine for tests of logic: it answers each call with the next prepared result."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from melvin_trio.engine.base import (
    GREEDY,
    SAMPLE_RATE,
    AbortCheck,
    Audio,
    Decoding,
    EngineAborted,
    EngineError,
    EngineInfo,
    Word,
    check_language,
)


class Hang:
    """A script entry: the call runs, burning CPU, until it is aborted (an engine stuck in a call), then raises
    EngineAborted."""


class Starve:
    """A script entry: the call gets no CPU until it is aborted (a box too busy to run it), then raises
    EngineAborted."""


Script = list[Word] | EngineError | Hang | Starve | Callable[[Audio, str], "list[Word] | Hang | Starve"]


@dataclass(frozen=True, slots=True)
class FakeCall:
    seconds: float
    language: str
    prompt: str
    decoding: Decoding = GREEDY


@dataclass
class FakeEngine:
    """Answers `transcribe` from `script`, one entry per call: a word list, an exception to raise, a Hang or a
    Starve, or a function of (audio, prompt) returning one of those. Records every call in `calls`. When the script
    runs out, the last entry repeats."""

    script: Iterable[Script] = ()
    model_name: str = "fake"
    multilingual: bool = True
    detected: tuple[str, float] = ("en", 1.0)
    calls: list[FakeCall] = field(default_factory=list)
    _pending: deque[Script] = field(init=False)
    _last: Script = field(init=False)

    def __post_init__(self) -> None:
        self._pending = deque(self.script)
        self._last = []

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(model_name=self.model_name, multilingual=self.multilingual)

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str = "",
        abort: AbortCheck | None = None,
        decoding: Decoding = GREEDY,
    ) -> list[Word]:
        check_language(self.info, language)
        self.calls.append(FakeCall(audio.size / SAMPLE_RATE, language, prompt, decoding))
        entry = self._pending.popleft() if self._pending else self._last
        self._last = entry
        if isinstance(entry, EngineError):
            raise entry
        if callable(entry) and not isinstance(entry, Hang | Starve):
            entry = entry(audio, prompt)
        if isinstance(entry, Hang):
            while not (abort is not None and abort()):
                sum(range(10_000))  # busy, as a stuck decoder loop is
            raise EngineAborted("aborted")
        if isinstance(entry, Starve):
            while not (abort is not None and abort()):
                time.sleep(0.01)
            raise EngineAborted("aborted")
        return list(entry)

    def detect_language(self, audio: Audio) -> tuple[str, float]:
        return self.detected if self.multilingual else ("en", 1.0)
