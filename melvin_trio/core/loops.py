"""Whisper's loops removed: a run of words repeated at once, where the speaker did not pause between the copies."""

from __future__ import annotations

from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Final

from melvin_trio.core.words import Word, word_key

__all__ = ["without_loops"]

_FUZZY_LOOP_WORDS: Final = 4
_FUZZY_LOOP_SIMILARITY: Final = 0.75


def without_loops(words: list[Word], paused_between: Callable[[float, float], bool], longest: int = 16) -> list[Word]:
    """Drop immediate repetitions of a run of words ("it was it was it was" -> "it was"), unless the speaker paused
    between the two runs (a lecturer says a sentence again: both copies are real).

    Greedy decoding without temperature fallback (too slow here) sometimes loops, repeating a clause of a dozen
    words; speech itself almost never repeats a run of words at once. The repeat need not be exact (base said a
    German clause twice, "darin entverhalten ... gepraktizieret" then "darin verhalten ... gep"): a run of 4 or more
    words 75 % equal to the run before it goes too. A single word may be said twice ("very, very"), so only its
    third time in a row goes.
    """
    out: list[Word] = []
    keys: list[str] = []
    for word in words:
        out.append(word)
        keys.append(word_key(word.text))
        if len(keys) >= 3 and keys[-1] == keys[-2] == keys[-3]:
            del out[-1:], keys[-1:]
            continue
        for n in range(2, min(longest, len(out) // 2) + 1):
            if keys[-n:] == keys[-2 * n : -n] or (n >= _FUZZY_LOOP_WORDS and _similar(keys[-n:], keys[-2 * n : -n])):
                # From where the first copy's last word begins: whisper stretches a word before a pause over the
                # pause (measured: "delightful." ending where the sentence began again 1 s later), so the end of
                # that word would hide the pause (a fresh tester: a sentence said twice, sent all at once).
                if paused_between(out[-n - 1].start, out[-n].start):
                    continue
                del out[-n:], keys[-n:]
                break
    return out


def _similar(a: list[str], b: list[str]) -> bool:
    """Two runs that start alike (a loop's period) and are mostly the same words."""
    if a[0] != b[0]:
        return False
    matched = sum(block.size for block in SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks())
    return matched >= _FUZZY_LOOP_SIMILARITY * len(a)
