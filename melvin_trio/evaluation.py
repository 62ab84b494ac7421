"""Word error rate against reference transcripts, for tests and benchmarks.

Both sides are normalised as the shared audio's README asks (lower case, no punctuation, folded whitespace, numbers
as words) with `whisper-normalizer`: its English normaliser for English, its basic one otherwise. That package is a
test and benchmark dependency, imported only here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt


@cache
def _normaliser(language: str) -> Callable[[str], str]:
    try:
        from whisper_normalizer.basic import BasicTextNormalizer
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError as exc:  # pragma: no cover - only without the test extra
        raise RuntimeError("WER needs whisper-normalizer: pip install 'melvin-trio[test]'") from exc
    if language == "en":
        english: Callable[[str], str] = EnglishTextNormalizer()
        return english
    basic: Callable[[str], str] = BasicTextNormalizer()
    return basic


def normalise(text: str, language: str) -> list[str]:
    return _normaliser(language)(text).split()


@dataclass(frozen=True)
class ErrorCount:
    errors: int
    reference_words: int

    @property
    def wer(self) -> float:
        return self.errors / self.reference_words if self.reference_words else float(self.errors > 0)

    def __add__(self, other: ErrorCount) -> ErrorCount:
        return ErrorCount(self.errors + other.errors, self.reference_words + other.reference_words)


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions and deletions each cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def count_errors(reference: str, hypothesis: str, language: str) -> ErrorCount:
    ref = normalise(reference, language)
    return ErrorCount(edit_distance(ref, normalise(hypothesis, language)), len(ref))


@dataclass(frozen=True)
class Clip:
    """One clip of a speech corpus described by a `manifest.jsonl` (file, lang, text, seconds per line)."""

    path: Path
    lang: str
    text: str
    seconds: float

    def audio(self) -> npt.NDArray[np.float32]:
        from melvin_trio.audio import read_wav

        return read_wav(self.path)[0]


def read_manifest(audio_dir: Path, lang: str | None = None) -> list[Clip]:
    """The clips listed in `audio_dir/manifest.jsonl`, optionally of one language. Raises FileNotFoundError."""
    clips = []
    for line in (audio_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if lang is None or entry["lang"] == lang:
            clips.append(Clip(audio_dir / entry["file"], entry["lang"], entry["text"], float(entry["seconds"])))
    return clips
