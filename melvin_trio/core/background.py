"""Background speech: someone far from the microphone, whose words whisper could not make out.

Heard alone (the tail of a window after the talker stopped), faint background speech makes whisper invent text:
bench/vad.py, speech over babble at 20 dB SNR, ended in "Thank you very much." (geometric mean probability 0.36,
20 dB under the talker) where offline transcription of the same audio has nothing. Local agreement rarely lets
such words through (two passes seldom invent the same text); the words that go out without a second pass (an
utterance's last words, the last pass's) are checked here: all of them against the window's speech level, and
their unsure tail against its own (a pass that was behind holds the talker and the tail after it in one window,
and the talker's speech sets that window's level).
"""

from __future__ import annotations

import math
import statistics
from typing import Final

from melvin_trio.core.words import Word, mean_log_probability

__all__ = ["TAIL_CONTEXT_S", "BackgroundSpeech"]

_LEVELS_KEPT: Final = 32  # the talker's level is the median over this many latest confirmations
# A tail is judged by its own audio from this long before its first word: whisper's time for a word after a pause
# may begin late, never early, so a real word of the talker is not measured on the pause alone.
TAIL_CONTEXT_S: Final = 0.3


class BackgroundSpeech:
    """Owns the stream's talker level (the median speech level, dBFS, of the latest windows in which words were
    confirmed) and decides whether unconfirmed words are background speech: unsure (geometric mean probability
    below `max_confidence`) AND heard in a window at least `margin_db` under the talker (half of it for words under
    half of `max_confidence`). Either condition alone keeps the words: a quiet second talker whisper is sure of is a
    talker; an unsure word at the talker's level is the talker, badly heard. `max_confidence` 0: off."""

    def __init__(self, max_confidence: float, margin_db: float) -> None:
        self._max_confidence = max_confidence
        self._margin_db = margin_db
        self._levels: list[float] = []

    @property
    def talker_level(self) -> float | None:
        """The talker's level in dBFS, or None before any confirmed speech."""
        return statistics.median(self._levels) if self._levels else None

    def heard_talker(self, level_dbfs: float | None) -> None:
        """Words at `level_dbfs` were confirmed (two passes agreed, or one was sure): the talker said them."""
        if level_dbfs is not None:
            self._levels.append(level_dbfs)
            del self._levels[:-_LEVELS_KEPT]

    def is_sure(self, words: list[Word]) -> bool:
        """Whether whisper was sure of `words` (geometric mean probability at least `max_confidence`): unconfirmed
        words this sure are the talker's, and teach its level where nothing was confirmed (a backlog, a sender
        faster than real time: every word is forced)."""
        return bool(words) and self._max_confidence > 0 and _confidence(words) >= self._max_confidence

    def unsure_tail(self, words: list[Word]) -> tuple[list[Word], list[Word]]:
        """`words` split into what comes before their unsure tail and that tail: the longest run of words at the
        end each below `max_confidence` (possibly all of them, possibly none)."""
        if self._max_confidence <= 0:
            return words, []
        first = len(words)
        while first > 0 and words[first - 1].probability < self._max_confidence:
            first -= 1
        return words[:first], words[first:]

    def is_background(self, words: list[Word], level_dbfs: float | None) -> bool:
        """Whether `words` (no second pass confirmed them), heard at `level_dbfs`, are background speech. Without
        a level, or before the talker was heard, never."""
        if not words or level_dbfs is None or (talker := self.talker_level) is None:
            return False
        confidence = _confidence(words)
        if confidence >= self._max_confidence:
            return False
        # The less sure, the nearer the talker background speech may be: under half of max_confidence, half the
        # margin. A fresh tester, babble 10 dB under the talker going on 3.7 s after it: "For a march done down to
        # the earth, will never be there." at a geometric mean probability of 0.19, measured 9.3 dB under the talker,
        # went out (offline had nothing there).
        margin = self._margin_db if confidence >= self._max_confidence / 2 else self._margin_db / 2
        return level_dbfs <= talker - margin


def _confidence(words: list[Word]) -> float:
    """The geometric mean of the words' probabilities."""
    return math.exp(mean_log_probability(words))
