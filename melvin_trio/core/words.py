"""Timed words, shared by the engine interface and the streaming core."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Final

SENTENCE_END: Final = (".", "!", "?", "…", "。", "！", "？")
CLAUSE_END: Final = (",", ";", ":", "、", "，", "；", "：")
_MIN_PROBABILITY: Final = 1e-6  # a word whisper gave probability 0 still counts (log 0)


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word. Times in seconds; `probability` in [0, 1]."""

    text: str
    start: float
    end: float
    probability: float

    def shifted(self, offset: float) -> Word:
        return Word(self.text, self.start + offset, self.end + offset, self.probability)

    @property
    def ends_sentence(self) -> bool:
        return self.text.rstrip("\"')]»“”’").endswith(SENTENCE_END)

    @property
    def ends_clause(self) -> bool:
        """A sentence end, or a comma, semicolon or colon: where whisper heard the talker pause."""
        return self.ends_sentence or self.text.rstrip("\"')]»“”’").endswith(CLAUSE_END)


def word_key(text: str) -> str:
    """The form in which two passes' words are compared: Unicode-normalised, case-folded, without punctuation.

    Letters of every script and umlauts are kept ("für" and "fur" differ; the original's `[^a-z]` made every
    Cyrillic word equal to every other); Unicode case folding makes "Straße" and "STRASSE" agree, as they should.
    Only punctuation, symbols and spaces are dropped, so "Final." agrees with "final".
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "PSZ")


def join_text(words: list[Word]) -> str:
    """The protocol's text form: every word preceded by a space, as Whisper segments are."""
    return "".join(f" {w.text}" for w in words)


_OPENING: Final = {"[": "]", "(": ")", "*": "*"}
_NOTES: Final = "♪♫♬♩"


def without_non_speech(words: list[Word]) -> list[Word]:
    """Drop what whisper writes for sounds that are not words: music notes ("♪♪"), bracketed or parenthesised
    descriptions ("[Music]", "(upbeat music)", "[BLANK_AUDIO]", "*laughs*", over several tokens too), and words
    left without a letter or digit."""
    out: list[Word] = []
    closing: str | None = None
    for word in words:
        text = word.text.strip()
        if closing is not None:
            if closing in text:
                closing = None
            continue
        opener = _OPENING.get(text[:1])
        if opener is not None:
            if opener not in text[1:]:
                closing = opener
            continue
        cleaned = text.translate({ord(ch): None for ch in _NOTES}).strip()
        if not any(ch.isalnum() for ch in cleaned):
            continue
        out.append(word if cleaned == text else Word(cleaned, word.start, word.end, word.probability))
    return out


def mean_log_probability(words: list[Word]) -> float:
    """The mean natural log of the words' probabilities (a probability of 0 counts as 1e-6); 0.0 for no words."""
    if not words:
        return 0.0
    return sum(math.log(max(w.probability, _MIN_PROBABILITY)) for w in words) / len(words)
