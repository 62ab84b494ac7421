"""Local agreement: a word is confirmed when two consecutive passes over the growing window agree on it.

After ufal/whisper_streaming's HypothesisBuffer (LocalAgreement-2), with typed words and a Unicode-aware
comparison. Times are absolute stream seconds.

Each pass re-transcribes audio whose words were already confirmed. Those are found by text, not by time:
whisper.cpp's word times near the edge of a window are unreliable (the last word before the edge stretches to it),
and trusting them dropped every word of the next pass that began before the stretched end. The new pass is
aligned on the longest run of recently confirmed words it repeats, near where they were; only without such a run
does time decide (a word older than the last confirmed one is old).
"""

from __future__ import annotations

from typing import Final

from melvin_trio.core.words import Word, word_key

_ALIGN_WORDS: Final = 8  # confirmed words remembered for alignment
_SINGLE_WORD_TOLERANCE_S: Final = 1.0  # a one-word match must lie this close to where the word was confirmed
_RUN_TOLERANCE_S: Final = 3.0  # a longer run may have drifted further
_SAME_WORD_S: Final = 0.05


class LocalAgreement:
    def __init__(self) -> None:
        self._recent: list[Word] = []  # the last confirmed words
        self._hypothesis: list[Word] = []  # the previous pass's unconfirmed words
        self._incoming: list[Word] = []

    @property
    def hypothesis(self) -> list[Word]:
        """Words of the latest pass not confirmed yet."""
        return list(self._hypothesis)

    def insert(self, words: list[Word]) -> None:
        """Take a new pass's words (absolute times); call `confirm` next."""
        self._incoming = words[self._first_new(words) :]

    def _first_new(self, words: list[Word]) -> int:
        """Index of the first word of `words` that was not confirmed before."""
        if not self._recent:
            return 0
        keys = [word_key(w.text) for w in words]
        anchor = self._recent[-1].start
        for n in range(min(len(self._recent), len(words)), 0, -1):
            pattern = [word_key(w.text) for w in self._recent[-n:]]
            tolerance = _SINGLE_WORD_TOLERANCE_S if n == 1 else _RUN_TOLERANCE_S
            ends = [
                p
                for p in range(n, len(words) + 1)
                if keys[p - n : p] == pattern and abs(words[p - 1].start - anchor) <= tolerance
            ]
            if ends:
                # The earliest of the matches near the anchor: a later one would drop the words in between, and a
                # lost word is worse than one said twice.
                return min(ends)
        index = 0
        while index < len(words) and words[index].start <= anchor + _SAME_WORD_S:
            index += 1
        return index

    def confirm(self) -> list[Word]:
        """Confirm the longest common prefix of the previous and the new pass; keep the rest as the hypothesis."""
        confirmed: list[Word] = []
        incoming, previous = self._incoming, self._hypothesis
        while incoming and previous and word_key(incoming[0].text) == word_key(previous[0].text):
            confirmed.append(incoming[0])
            incoming, previous = incoming[1:], previous[1:]
        self._hypothesis = incoming
        self._incoming = []
        self._remember(confirmed)
        return confirmed

    def force(self, count: int) -> list[Word]:
        """Confirm the first `count` hypothesis words without agreement (audio no later pass will see again)."""
        forced, self._hypothesis = self._hypothesis[:count], self._hypothesis[count:]
        self._remember(forced)
        return forced

    def clear_hypothesis(self) -> None:
        self._hypothesis = []

    def _remember(self, words: list[Word]) -> None:
        self._recent = (self._recent + words)[-_ALIGN_WORDS:]
