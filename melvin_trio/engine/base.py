"""The engine interface: 16 kHz mono float32 audio in, timed words out (times from the start of that audio)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from melvin_trio.core import SAMPLE_RATE as SAMPLE_RATE
from melvin_trio.core.decoding import BEAM_SIZES as BEAM_SIZES
from melvin_trio.core.decoding import GREEDY as GREEDY
from melvin_trio.core.decoding import PREVIEW as PREVIEW
from melvin_trio.core.decoding import Decoding as Decoding
from melvin_trio.core.words import Word
from melvin_trio.errors import MelvinError

Audio = npt.NDArray[np.float32]
AbortCheck = Callable[[], bool]

__all__ = [
    "FILE_DECODING",
    "GREEDY",
    "PREVIEW",
    "SAMPLE_RATE",
    "AbortCheck",
    "Audio",
    "Decoding",
    "Engine",
    "EngineAborted",
    "EngineError",
    "EngineInfo",
    "EngineTimedOut",
    "UnsupportedLanguage",
    "Word",
    "check_language",
]


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model_name: str
    multilingual: bool


# Files: beam 5 with whisper's temperature fallback in steps of 0.2 (best of 5 per step), as whisper and
# faster-whisper decode offline. By measurement (bench/README.md, "Engines side by side"): on the shared English
# clips tiny.en gives WER 0.033 so (faster-whisper 0.033 with the same settings) against 0.042 greedy with the same
# fallback, at about 1.8x its time. Greedy is one setting away: `beam_size` 1 in a job's settings, `--beam-size 1`.
FILE_DECODING: Final = Decoding(beam_size=5, temperature_inc=0.2)

# The temperatures a caller may choose (the file API's settings), inclusive; the beam sizes: BEAM_SIZES.
TEMPERATURES: Final = (0.0, 1.0)  # temperature and temperature_inc


class EngineError(MelvinError, RuntimeError):
    """A transcription failed; the engine stays usable for the next call."""


class EngineAborted(EngineError):
    """The abort check asked the engine to stop; the partial result is discarded."""


class EngineTimedOut(EngineError):
    """A call ran past its time limit and was aborted; the engine stays usable. `starved`: the call got little CPU
    in that time (the box was too busy to run it), rather than using it and not finishing."""

    def __init__(self, message: str, *, starved: bool = False) -> None:
        super().__init__(message)
        self.starved = starved


class UnsupportedLanguage(EngineError):
    """The model cannot transcribe the requested language (an English-only model asked for another one)."""


class Engine(Protocol):
    """A speech recogniser. Implementations are not thread-safe: one call at a time per engine."""

    @property
    def info(self) -> EngineInfo: ...

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str = "",
        abort: AbortCheck | None = None,
        decoding: Decoding = GREEDY,
    ) -> list[Word]:
        """Transcribe `audio` in `language` (an ISO 639-1 code), conditioned on the text `prompt`, decoded as
        `decoding` says.

        Raises UnsupportedLanguage, EngineAborted when `abort` returns True, or EngineError.
        """
        ...

    def detect_language(self, audio: Audio) -> tuple[str, float]:
        """The most likely language of `audio` and its probability; English-only models answer ("en", 1.0)."""
        ...


def check_language(info: EngineInfo, language: str) -> None:
    """Raise UnsupportedLanguage unless the model can transcribe `language`."""
    if not info.multilingual and language != "en":
        raise UnsupportedLanguage(
            f"model {info.model_name} is English-only and cannot transcribe language {language!r}; "
            "use a multilingual model (e.g. base) for other languages"
        )
