"""Whisper's loops removed: a run of words repeated at once, where the speaker did not pause between the copies."""

from __future__ import annotations

from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Final

from melvin_trio.core.words import Word, word_key

__all__ = ["without_loops"]

# A run of words said again after a pause this long between the two copies (the words at their boundary) was said
# again: not a loop.
BOUNDARY_PAUSE_S: Final = 0.3
# ...or after a pause this long anywhere from the first copy's start: whisper's times at the boundary can both lie
# on one side of the pause (measured: a first copy's last word 0.55 s late, inside the pause), and a loop's first
# copy is one stretch of speech. The pause that ends an utterance (StreamSettings.pause_seconds' default).
SAID_AGAIN_PAUSE_S: Final = 0.5
_FUZZY_LOOP_WORDS: Final = 4
_FUZZY_LOOP_SIMILARITY: Final = 0.75


def without_loops(
    words: list[Word], paused_between: Callable[[float, float, float], bool], longest: int = 16
) -> list[Word]:
    """Drop immediate repetitions of a run of words ("it was it was it was" -> "it was"), unless the speaker paused
    between the two runs (a lecturer says a sentence again: both copies are real). `paused_between(begin, end,
    seconds)`: whether the audio holds a pause of at least `seconds` between two stream times.

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
                # From where the first copy's last word begins to where the repeat's first word ends: whisper
                # stretches one of the two words over the pause between them (measured: "delightful." ending where
                # the sentence began again 1 s later; "He" starting where the sentence ended), so the gap between
                # their times would hide the pause (fresh testers: a sentence said two and three times, sent all at
                # once).
                boundary = paused_between(out[-n - 1].start, out[-n].end, BOUNDARY_PAUSE_S)
                if boundary or paused_between(out[-2 * n].start, out[-n].end, SAID_AGAIN_PAUSE_S):
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
