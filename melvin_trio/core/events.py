"""What the core asks of the engine (requests), what the engine answers (results), and what the core sends to
the client (events). Times are absolute stream seconds unless a field says otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from melvin_trio.core.words import Word

__all__ = [
    "DetectRequest",
    "Detected",
    "Event",
    "Request",
    "Result",
    "SendFinal",
    "SendPartial",
    "TranscribeRequest",
]


@dataclass(frozen=True)
class TranscribeRequest:
    audio: npt.NDArray[np.float32]
    offset: float  # stream time of audio[0]
    language: str
    prompt: str
    end_sample: int  # absolute sample index where the window ends
    complete: bool  # no later pass will see more audio in this window (backlog, or the last pass)
    last: bool  # the last pass after eof: every word goes out
    cut_sample: int | None = None  # the window ends in a pause: every word goes out, and the window is cut here
    cut_in_pause: bool = False  # the cut lies in a pause the detector heard, not inside running speech
    speech_end: float | None = None  # stream time where the last speech in the window ends
    behind: bool = False  # a pass of a stream that is behind: non-overlapping windows, no prompt
    # A preview: the utterance's first words, for a partial only (no word of it is confirmed); the engine may
    # encode only the window's length (whisper.cpp's reduced audio_ctx), whose text is good and times are not.
    preview: bool = False


@dataclass(frozen=True)
class DetectRequest:
    """Detect the language of `audio`: speech only, the silence around and between it left out."""

    audio: npt.NDArray[np.float32]


Request = TranscribeRequest | DetectRequest


@dataclass(frozen=True)
class Detected:
    """The answer to a DetectRequest: the most likely language and its probability."""

    language: str
    probability: float


Result = list[Word] | Detected  # the answer to a TranscribeRequest: its words (times relative to its audio)


@dataclass(frozen=True)
class SendPartial:
    text: str


@dataclass(frozen=True)
class SendFinal:
    words: list[Word]


Event = SendPartial | SendFinal
