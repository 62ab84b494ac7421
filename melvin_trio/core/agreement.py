"""Local agreement: a word is confirmed when two consecutive passes over the growing window agree on it.

After ufal/whisper_streaming's HypothesisBuffer (LocalAgreement-2), with typed words and a Unicode-aware
comparison. Times are absolute stream seconds.

Every pass transcribes the window from its start, so it begins with words already confirmed in this window. Those
are found by text, not by time: whisper.cpp's word times are unreliable (in some passes they collapse onto the
window's end, in others the last word before the edge stretches to it), and trusting them lost every word the
times misplaced. The new pass is aligned with the words confirmed since the window began, and only the words after
the last of them that it repeats are new. Only where whisper re-words the confirmed tail does time decide.
"""

from __future__ import annotations

import math
from difflib import SequenceMatcher
from typing import Final

from melvin_trio.core.words import Word, word_key

# A run of one word matched far from where it was confirmed is a different occurrence of a common word ("the").
_SINGLE_WORD_TOLERANCE_S: Final = 2.0
_SAME_WORD_S: Final = 0.05
# A word the confirming pass puts this much later than the pass before keeps the earlier time: whisper drifted an
# utterance's last words 0.7-1.4 s into the babble after the talker (a fresh tester's stream).
_DRIFT_S: Final = 0.5
_BEFORE_WORDS: Final = 16  # the text before the window, remembered to catch whisper repeating it
_REPEAT_MIN_WORDS: Final = 3
_REPEAT_SIMILARITY: Final = 0.75


class LocalAgreement:
    """Owns the words of the current window: those confirmed, and the latest pass's unconfirmed rest.

    `min_probability`: a word either pass gave a lower probability than this is not confirmed by agreement (nor is
    anything after it): it waits for a pass that is surer, or for the pass that ends its utterance. Whisper is
    often wrong twice in a row, and unsure both times, about the first word of an utterance whose onset it has heard
    with little context (measured: "Unless" heard as "I'd less" at p=0.3 by two passes).

    `unsure_context_words`: an unsure word is confirmed after all when both passes also agree, surely, on this many
    words after it (twice as many for the window's first word, the one whose onset whisper hears with the least
    context; 0: never). Such a word is mostly a rare one (a name: "Kat" at p=0.24) or an onset heard quietly
    ("Somehow" at 0.18-0.39 in five passes), which later passes are no surer of: waiting for the utterance's end held
    every word after it back (a 7.9 s utterance: its first final 6.7 s after the speech began).
    """

    def __init__(self, min_probability: float = 0.0, unsure_context_words: int = 0) -> None:
        self._min_probability = min_probability
        self._unsure_context_words = unsure_context_words
        self._confirmed: list[Word] = []  # words confirmed since the window began
        self._before: list[str] = []  # keys of the last words confirmed before the window
        self._retold: list[Word] = []  # the last words before the window, when its audio holds them too
        self._hypothesis: list[Word] = []  # the previous pass's unconfirmed words
        self._incoming: list[Word] = []
        self._incoming_times_broken = False
        self._stopped_short: list[Word] = []

    @property
    def confirmed_until(self) -> float:
        """Stream time where the last word confirmed in this window ends (0.0: none yet)."""
        return self._confirmed[-1].end if self._confirmed else 0.0

    @property
    def hypothesis(self) -> list[Word]:
        """Words of the latest pass not confirmed yet."""
        return list(self._hypothesis)

    @property
    def stopped_short(self) -> list[Word]:
        """The previous pass's words after the end of the latest pass, when the latest agreed with every word of it
        and ended there (whisper stops a pass early at times: the words are not wrong, only missing)."""
        return list(self._stopped_short)

    def new_window(self, before: list[Word], *, repeat_possible: bool = True, retold: bool = False) -> None:
        """The window was cut after every confirmed word (`before` ends with them): later passes should not repeat
        them. A cut inside running speech may make whisper say the text before it again (`repeat_possible`); after
        a pause the speaker starts anew, and words that say the last sentence again were said again: kept.

        `retold`: the cut lies before the end of `before`'s audio (an utterance's tail transcribed again), so every
        pass of the window hears again the last words of `before`, maybe in other words: they are found as the
        window's confirmed words are (by text, and by time where the text differs), not as a repeated prefix."""
        self._confirmed = []
        self._before = [word_key(w.text) for w in before[-_BEFORE_WORDS:]] if repeat_possible else []
        self._retold = before[-_BEFORE_WORDS:] if retold else []

    def insert(self, words: list[Word], *, times_broken: bool = False) -> None:
        """Take a new pass's words (absolute times); call `confirm` next. `times_broken`: whisper stacked a run of
        this pass's words on one instant (and stretched the words before it over their time), so the words it
        confirms keep the times the previous pass gave them."""
        self._incoming = words[self._first_new(words, times_broken) :]
        self._incoming_times_broken = times_broken

    def _first_new(self, words: list[Word], times_broken: bool = False) -> int:
        """Index of the first word of `words` that was not confirmed before. With `times_broken`, the text alone
        says where the confirmed words end."""
        heard = self._retold + self._confirmed  # what this window's passes say again
        if not heard:
            return self._repeated_prefix([word_key(w.text) for w in words])
        confirmed_keys = [word_key(w.text) for w in heard]
        keys = [word_key(w.text) for w in words]
        matcher = SequenceMatcher(a=confirmed_keys, b=keys, autojunk=False)
        matched_confirmed = matched_new = 0  # one past the last confirmed word found, and where it was found
        for block in matcher.get_matching_blocks():
            if block.size == 0:
                continue
            near = abs(words[block.b].start - heard[block.a].start) <= _SINGLE_WORD_TOLERANCE_S
            if block.size > 1 or near:
                matched_confirmed, matched_new = block.a + block.size, block.b + block.size
        index = matched_new
        # Of two equal words, the text match may have taken the earlier: a word that repeats a confirmed one and
        # does not start after the last confirmed word is that word again. Not where whisper stacked a run on one
        # instant: spread back over the words before it, a sentence's new words lie before the last confirmed one
        # (en-long, "considered as the" confirmed, then "invention of the art of printing." stacked on the window's
        # end and spread from 140.3 s, before "the" at 141.1 s: "invention of the" was dropped as said already).
        last_start = heard[-1].start + _SAME_WORD_S
        confirmed_set = set(confirmed_keys)
        while (
            not times_broken
            and index < len(words)
            and words[index].start <= last_start
            and keys[index] in confirmed_set
        ):
            index += 1
        if matched_confirmed < len(heard):
            # The confirmed tail came back in other words: skip what lies within it in time, at most as many words.
            limit = min(len(words), index + len(heard) - matched_confirmed)
            boundary = heard[-1].end
            while index < limit and words[index].start < boundary - _SAME_WORD_S:
                index += 1
        return index

    def _repeated_prefix(self, keys: list[str]) -> int:
        """How many leading words say again the end of the text before the window. Whisper, prompted with that
        text and given a window that opens mid-sentence, sometimes repeats its last clause (measured: base
        repeated twelve words of a German sentence after a window cut), nearly but not exactly word for word."""
        best, best_score = 0, 0
        for k in range(_REPEAT_MIN_WORDS, min(len(self._before), len(keys)) + 1):
            matcher = SequenceMatcher(a=self._before[-k:], b=keys[:k], autojunk=False)
            matched = sum(block.size for block in matcher.get_matching_blocks())
            score = 2 * matched - k  # the repeat's length: each word not matched counts against it
            if matched / k >= _REPEAT_SIMILARITY and score >= best_score:
                best, best_score = k, score
        return best

    def confirm(
        self,
        settled_before: float | None = None,
        settled_probability: float = 1.0,
        trusted_until: float | None = None,
        onset: float | None = None,
    ) -> list[Word]:
        """Confirm the longest common prefix of the previous and the new pass; keep the rest as the hypothesis.

        `settled_before` (stream seconds): where the previous pass had nothing more to say (it ended before these
        words), a word of the new pass that ends before this time with at least `settled_probability` is confirmed
        by this pass alone, saving a pass of latency; None: only agreement confirms.

        `trusted_until` (stream seconds): where the new pass's times stop being trusted (None: nowhere). A word it
        places later waits, and so does every word after it, for a later pass to place them.

        `onset` (stream seconds): where the new pass found the talker to begin (None: not known). A confirmed word
        takes the earlier of its two passes' times (whisper drifts words later as a window grows), but not a time
        before the onset: the earlier pass, not knowing it, left the word on the sound before the talker (a fresh
        tester: "Captain@0.00-1.07" over a crowd, the talker from 1.41 s, the next pass placing it at 1.34 s)."""
        confirmed: list[Word] = []
        incoming, previous = self._incoming, self._hypothesis
        trusted = math.inf if trusted_until is None else trusted_until
        while incoming and previous and word_key(incoming[0].text) == word_key(previous[0].text):
            if not self._sure(incoming, previous, first=not (self._confirmed or confirmed)):
                break
            new, old = incoming[0], previous[0]
            if new.start >= trusted:
                break
            later = self._incoming_times_broken or new.start > old.start + _DRIFT_S
            later = later and (onset is None or old.start >= onset)
            # Nor a time after the new pass's next word begins: the earlier pass had the word at its window's
            # end, where its times are the least sure (a fresh tester's stream: "make[3.58-3.99]", the last word
            # of a pass ending at 4.0 s, kept before "themselves[3.26-3.56]", and the final squeezed them).
            later = later and not (len(incoming) > 1 and old.start > incoming[1].start)
            confirmed.append(Word(new.text, old.start, old.end, new.probability) if later else new)
            incoming, previous = incoming[1:], previous[1:]
        if settled_before is not None and not previous:
            settled_before = min(settled_before, trusted)
            while incoming and incoming[0].end <= settled_before and incoming[0].probability >= settled_probability:
                confirmed.append(incoming[0])
                incoming = incoming[1:]
        self._stopped_short = previous if confirmed and not incoming else []
        self._hypothesis = incoming
        self._incoming = []
        self._confirmed += confirmed
        return confirmed

    def _sure(self, incoming: list[Word], previous: list[Word], *, first: bool) -> bool:
        """Whether the agreed word leading both lists may be confirmed (see `min_probability`)."""
        if min(incoming[0].probability, previous[0].probability) >= self._min_probability:
            return True
        n = self._unsure_context_words * (2 if first else 1)
        if n <= 0 or len(incoming) <= n or len(previous) <= n:
            return False
        return all(
            word_key(new.text) == word_key(old.text) and min(new.probability, old.probability) >= self._min_probability
            for new, old in zip(incoming[1 : n + 1], previous[1 : n + 1], strict=True)
        )

    def keep_stopped_short(self, before: float) -> None:
        """Take the words of `stopped_short` that start before stream time `before` (the end of the speech) back
        into the hypothesis, after the latest pass's words: for a pass no later pass will follow (an utterance's
        last), where they would otherwise be lost."""
        self._hypothesis += [w for w in self._stopped_short if w.start < before]
        self._stopped_short = []

    def force(self, count: int) -> list[Word]:
        """Confirm the first `count` hypothesis words without agreement (audio no later pass will see again)."""
        forced, self._hypothesis = self._hypothesis[:count], self._hypothesis[count:]
        self._confirmed += forced
        return forced
