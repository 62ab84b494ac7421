"""What the core asks of the engine (requests), what the engine answers (results), and what the core sends to
the client (events). Times are absolute stream seconds unless a field says otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from melvin_trio.core import SAMPLE_RATE as _SAMPLE_RATE
from melvin_trio.core.decoding import GREEDY, Decoding
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
    decoding: Decoding = GREEDY  # how the engine decodes this window (the preview's reduced context, a beam)

    def describe(self, words: list[Word]) -> str:
        """One line for a debug log: the window (stream seconds), its kind, and `words` (this request's answer,
        times relative to its audio) at stream times, so a pass seen in a server's log can be run again alone
        (the same audio, language and prompt give the same words)."""
        kind = ", ".join(
            name
            for name, on in (
                ("preview", self.preview),
                (f"beam {self.decoding.beam_size}", self.decoding.beam_size > 1),
                ("complete", self.complete),
                ("last", self.last),
                ("behind", self.behind),
                ("cut in a pause" if self.cut_in_pause else "cut", self.cut_sample is not None),
            )
            if on
        )
        start = self.offset
        end = start + len(self.audio) / _SAMPLE_RATE
        said = " ".join(f"{w.text}[{w.start + start:.2f}-{w.end + start:.2f}]" for w in words)
        prompt = f", prompt of {len(self.prompt.split())} words" if self.prompt else ""
        return f"pass over {start:.2f}-{end:.2f} s ({kind or 'partial'}{prompt}): {said or '(no words)'}"


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
