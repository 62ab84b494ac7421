"""Where the talker is heard in a pass's window, and what that says of whisper's word times around it.

Other talkers (babble, a crowd) or a fan around the talker are what the speech detector may call speech too, and
whisper places the talker's words on them: its first words early, on the sound before the talker, and its last
words late, stretched over the sound after it. The talker's own sound is louder: `TalkerSpan.measure` finds the
first and the last 100 ms of the window at the talker's level (every frame within `TALKER_MARGIN_DB` of it), and
the span's methods say where whisper's times are to be moved or not trusted.

Pure: no I/O, no engine; times are stream seconds, spans absolute samples (16 kHz).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.window import AudioWindow
from melvin_trio.core.words import Word

__all__ = ["AROUND_TALKER_S", "DRIFT_TOLERANCE_S", "ONSET_S", "TALKER_MARGIN_DB", "TalkerSpan"]

ONSET_S: Final = 0.1  # a word may begin this long before the detector hears speech
# The talker is heard where every frame of 100 ms reaches this much under its level: the babble around a fresh
# tester's talker lay 11-16 dB under it, the talker's vowels rarely 10 (stop 13). A crowd burst that comes within
# 10 dB of the talker is taken for the talker (a crowd 12 dB under, often; 15 dB under, sometimes).
TALKER_MARGIN_DB: Final = 10.0
AROUND_TALKER_S: Final = 0.5  # ...and judged where the window holds this much before or after the talker
DRIFT_TOLERANCE_S: Final = 0.1  # a word may begin this long after the talker's last loud 100 ms
_AROUND_SAMPLES: Final = round(AROUND_TALKER_S * SAMPLE_RATE)


@dataclass(frozen=True)
class TalkerSpan:
    """Where the talker is heard in one pass's window: from the start of its first loud 100 ms (`begin`) to the end
    of its last (`end`), absolute samples."""

    begin: int
    end: int

    @classmethod
    def measure(cls, window: AudioWindow, begin: int, end: int, talker_level: float | None) -> TalkerSpan | None:
        """The span between absolute samples `begin` and `end` (a pass's window), at `TALKER_MARGIN_DB` under
        `talker_level` (dBFS; before it is learnt, the window's speech level stands for it: the talker's frames are
        the loudest of it), or None (no such 100 ms, or no audio)."""
        level = talker_level if talker_level is not None else window.speech_level(begin, end)
        if level is None:
            return None
        span = window.loud_span(begin, end, level - TALKER_MARGIN_DB)
        return None if span is None else cls(*span)

    def onset(self, speech_start: float) -> float | None:
        """Stream time where the talker begins (the span's start, less `ONSET_S`), when the detector heard
        `AROUND_TALKER_S` or more of speech before it from `speech_start` (babble before the talker: whisper places
        the talker's first words on it, `wordtimes.after_onset`); None otherwise."""
        onset = self.begin / SAMPLE_RATE - ONSET_S
        return onset if onset - speech_start >= AROUND_TALKER_S else None

    def heard_until(self, speech_end: float) -> float | None:
        """Stream time after which the window holds no more of the talker (the span's end plus
        `DRIFT_TOLERANCE_S`), when the detector hears speech (babble, a crowd) until `speech_end`, `AROUND_TALKER_S`
        or more after the span; None otherwise (after a pause, the detector's speech end bounds the words).

        Measured: a fresh tester, a crowd 15 dB under the talker for 3 s after it, "asthma.@4.72-7.00", the talker
        silent from 5.05 s (stop 14)."""
        if speech_end * SAMPLE_RATE - self.end < _AROUND_SAMPLES:
            return None
        return self.end / SAMPLE_RATE + DRIFT_TOLERANCE_S

    def trusted_until(self, window_end: int, words: list[Word]) -> float | None:
        """Stream time from which the times of a pass's `words` are not to be trusted, or None: where whisper drifted
        them into the sound after the talker (babble, a fan: what the detector may call speech). When the window
        (ending at absolute sample `window_end`) runs on over such sound and its words run past the talker's last
        loud 100 ms, they are stretched by as much as they run past: words that begin within that distance before
        it are not trusted either.

        Measured: a fresh tester, babble 16 dB under the talker, real time: "its power to do for them" went out at
        7.30-9.40 s, the talker saying it at 6.59-7.80 s; the two passes that ended 1-2 s after the talker agreed
        on those times (the first words of the run were late as well as the last), the passes after them placed
        every word right (stop 13)."""
        if not words or window_end - self.end < _AROUND_SAMPLES:
            return None
        heard_until = self.end / SAMPLE_RATE + DRIFT_TOLERANCE_S
        past = words[-1].end - heard_until
        return None if past <= 0 else heard_until - past
