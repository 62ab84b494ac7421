"""Timed words, shared by the engine interface and the streaming core."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

SENTENCE_END: Final = (".", "!", "?", "…", "。", "！", "？")


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
