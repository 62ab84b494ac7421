"""Word times that mean something: whisper.cpp's token times, repaired.

whisper.cpp often collapses a run of words onto one instant (the end of the window, or of its speech), stretches the
word before such a run over the run's time, or places a word in the silence before the speech. These pure functions
give every word a time inside the audio that holds it, rising from word to word and at least `MIN_WORD_S` long
wherever there is room. Times are stream seconds.
"""

from __future__ import annotations

import math
from typing import Final

from melvin_trio.core.words import Word

__all__ = [
    "MIN_WORD_S",
    "after_onset",
    "after_stretched",
    "longest_collapsed_run",
    "onto_stretched",
    "out_of_pauses",
    "outside_pauses",
    "pushed",
    "retimed",
    "spread_collapsed",
    "within_speech",
]

MIN_WORD_S: Final = 0.05  # seconds: a word shorter than this has no real time (whisper collapsed it)
_TIME_EPSILON_S: Final = 1e-6
_SPREAD_WORD_S: Final = 0.3  # the length given to each word of a collapsed run that has no room around it
# How far past a pause the end of a sentence drifted into it is sought (`out_of_pauses`). Measured on files of
# shared clips with gaps (tiny.en, file decoding): the words moved back lay at most 6 words from the run's first and
# 0.9 s past the pause's end; the longest run of the four drifted sentences in five clips with 3 s gaps.
_SENTENCE_TAIL_WORDS: Final = 8
_SENTENCE_TAIL_S: Final = 2.0
# The least room a word moved back before a pause may get, with the words before it in that speech (from the pause
# before it, not from their times, which whisper may have stacked): 10 words a second, twice a fast talker's rate.
# Less room means the speech before the pause is not where the words belong (a fresh tester, a stream behind: "Oh,"
# alone in 0.16 s of speech before a 0.9 s pause, and "you think darkness is your ally." after it squeezed into it).
_MIN_ROOM_WORD_S: Final = 0.1
# A word this long after words packed tighter than that was stretched over their time (`onto_stretched`). Length
# alone does not tell: offline, on en-long's clean speech, whisper's longest right words last 0.9-1.36 s
# ("antecedents," said slowly); the words packed before it do.
_STRETCHED_WORD_S: Final = 1.0


def within_speech(words: list[Word], speech_end: float | None) -> list[Word]:
    """Words whisper placed after the speech ended (in the silence that ends the window) belong to the speech:
    move them back to its end, spread over it (`spread_collapsed` gives each its length)."""
    if speech_end is None:
        return words
    return [w if w.start < speech_end else Word(w.text, speech_end, speech_end, w.probability) for w in words]


def after_onset(words: list[Word], onset: float, until: float | None = None) -> list[Word]:
    """Words whisper placed before `onset` (stream seconds: where the talker begins, after sound the detector calls
    speech too, such as babble), moved after it. Whisper puts the first word early by as much as it lies before the
    onset, and catches up within about that distance: the words that begin before `onset` plus that distance (and
    before `until`, a pause after the onset: no squeeze reaches across it) are squeezed linearly from where they lie
    into [onset, the last one's end]. `words` rise. Unchanged when those words leave no room after the onset, or
    when none ends after it.

    Measured: two fresh testers' streams, 1 s of babble before a talker: "Mr. John Dashwood had" at 0.00-2.42 s
    (offline too), the talker saying them at 1.27-2.78 s; "Had he married a more" 0.9-0.5 s early."""
    if not words or words[0].start >= onset or words[-1].end <= onset:
        return words  # nothing before the onset, or nothing of the talker's (the background's words)
    reach = 2 * onset - words[0].start if until is None else min(2 * onset - words[0].start, until)
    k = max((i for i, w in enumerate(words) if w.start < reach), default=0)
    if words[k].end - onset < (k + 1) * MIN_WORD_S:
        return words
    out = list(words)
    _scale(out, 0, k + 1, onset, words[k].end)
    return out


def outside_pauses(words: list[Word], pauses: list[tuple[float, float]]) -> list[Word]:
    """No word spans a pause: a word that begins before a pause (start, end in seconds) and ends after its start
    ends where it starts (whisper stretched "home." of a clip's end over the 3 s of silence after it, on a fresh
    tester's stream); one that begins in a pause's second half and ends after it begins where it ends; one begun in
    its first half ends there, wholly inside it, for `out_of_pauses` to place (stop 27's tester: "man."@4.47-7.48 s
    over 3.87-7.36 s of silence, the end of the sentence before it). A word wholly inside a pause is left as it is.
    Times may then touch: `pushed` gives each its length again.

    A word that begins inside a pause is not simply given to the sentence before it: tried (stop 12, for "us."
    stretched over 3 s of silence into the next clip), JFK sent at once lost its last sentence's times: "ask what you
    can do for your country." followed "you," back before the pause, the last word ending at 7.6 s (offline: 11.0
    s). `out_of_pauses` decides by sentence and clause ends, and by the room before the pause."""
    out: list[Word] = []
    for w in words:
        start, end = w.start, w.end
        for a, b in pauses:
            if start < a < end:
                end = a
            elif a <= start < (a + b) / 2 and b < end:
                end = b  # wholly in the pause: `out_of_pauses` gives it to the speech it belongs to
            elif a <= start < b < end:
                start = b
        out.append(w if (start, end) == (w.start, w.end) else Word(w.text, start, end, w.probability))
    return out


def out_of_pauses(words: list[Word], pauses: list[tuple[float, float]], heard_until: float = math.inf) -> list[Word]:
    """Words wholly inside a pause (start, end in seconds) moved to the speech they belong to: whisper's times
    drift, and in a window of several sentences it places a sentence's tail in the pause after it (a fresh tester,
    five clips with 3 s of silence between them: "will doubt my being so." at 9.62-13.0 s, the silence 10.04-13.04
    s) or the next sentence's first word in the pause before it ("No" at 6.0 s, the speech resuming at 6.32 s).

    A run of such words continues the sentence before the pause up to its first sentence end (none, when the word
    before the run ends a sentence or there is none; the end may lie just after the pause, see `_tail_limit`, and
    the words up to it move too), or with no sentence end in reach, up to its first clause end (`Word.ends_clause`:
    stop 27's tester, "by a similar process," drifted into 3 s of silence after its clip), unless the word before
    the run begins a sentence (the next sentence's start drawn early: "Right! Produced" before the pause, "the block
    books," in it, on a noisy file): that part is placed at the end of the speech before the pause,
    `_SPREAD_WORD_S` a word (less when the speech before the pause is short), the words of that speech squeezed to
    make room, unless that speech cannot hold them at `_MIN_ROOM_WORD_S` a word (then the whole run goes forward); the
    rest begins the speech after it, `_SPREAD_WORD_S` a word from the pause's end,
    up to the next word (or, for two words or more with no room there, past it: the words after them make room,
    see `_stretched_after`). A run in a pause that reaches `heard_until` (the end of the audio the words were heard in,
    seconds), with no word after it, continues the speech before the pause whole: no speech after it was heard
    (a fresh file's window, cut in a 3.3 s silence: whisper stacked "the woodcutters of the Netherlands by a similar
    process," on its end, and they went out 50 ms a word in the silence). Times may then touch: `pushed` gives each
    its length again. `words` rise."""
    out = list(words)
    i = 0
    while i < len(out):
        pause = next(((a, b) for a, b in pauses if a <= out[i].start and out[i].end <= b), None)
        if pause is None:
            i += 1
            continue
        a, b = pause
        j = i
        while j < len(out) and a <= out[j].start and out[j].end <= b:
            j += 1
        split = i  # words i..split-1 end the sentence before the pause, split..j-1 begin the one after it
        if i > 0 and not out[i - 1].ends_sentence:
            tail = range(i, _tail_limit(out, i, j, b))
            split = next((k + 1 for k in tail if out[k].ends_sentence), i)
            if split == i and i > 1 and not out[i - 2].ends_sentence:
                split = next((k + 1 for k in tail if out[k].ends_clause), i)
        if i > 0 and j == len(out) and b >= heard_until:
            split = j
        # The words before, back to the pause before them, were drifted late too: squeezed to make room.
        since = max((end for _, end in pauses if end <= a), default=0.0)
        k = i
        while k > 0 and out[k - 1].start >= since:
            k -= 1
        first = out[k].start if k < i else since  # no word in that speech yet: all of it is theirs
        if split > i and a - since < (split - k) * _MIN_ROOM_WORD_S:
            split = i  # no room before the pause: the run begins the speech after it
        if split > i:
            n = split - i
            length = min(_SPREAD_WORD_S, max(a - first, 0.0) / (split - k))
            if k < i and out[i - 1].end > a - n * length:
                _scale(out, k, i, first, a - n * length)
            _place(out, i, split, max(a - n * length, out[i - 1].end if i > 0 else 0.0), a)
        if j > split:
            n = j - split
            ceiling = out[j].start if j < len(out) else b + n * _SPREAD_WORD_S
            room = _stretched_after(out, j, n, b, pauses) if n > 1 and ceiling - b < n * _SPREAD_WORD_S else None
            if room is None:
                _place(out, split, j, b, max(min(ceiling, b + n * _SPREAD_WORD_S), b))
            else:
                # A run with no room before the next word: whisper drew the words after it early too, and
                # stretched them over the run's time. They make room, as far as they need to.
                m, share = room
                _place(out, split, j, b, b + n * share)
                _scale(out, j, m + 1, b + n * share, out[m].end)
        i = max(j, split)
    return out


def onto_stretched(words: list[Word]) -> list[Word]:
    """Words whisper packed tighter than `_MIN_ROOM_WORD_S` a word (two or more) just before a word it stretched
    over their time (`_STRETCHED_WORD_S` or more, and at least `_MIN_ROOM_WORD_S` for itself and each of them)
    share that word's time: they and it are spread evenly from the first one's start to its end. `words` rise.

    A fresh file's window, Batman's last sentence: "I didn't see the light until I was already a man, but then it
    was nothing to me but" packed into 0.5 s at the window's start, and "right!" over the 6 s of speech after it."""
    out = list(words)
    for j in range(2, len(out)):
        if out[j].end - out[j].start < _STRETCHED_WORD_S:
            continue
        # The packed words: the most words before j, none of them `_SPREAD_WORD_S` long, that whisper gave less
        # than `_MIN_ROOM_WORD_S` a word.
        i = j
        for k in range(j - 1, -1, -1):
            if out[k].end - out[k].start >= _SPREAD_WORD_S:
                break
            if j - k >= 2 and out[j - 1].end - out[k].start < (j - k) * _MIN_ROOM_WORD_S:
                i = k
        if i < j and out[j].end - out[j].start >= (j - i + 1) * _MIN_ROOM_WORD_S:
            _place(out, i, j + 1, out[i].start, out[j].end)
    return out


def after_stretched(words: list[Word]) -> list[Word]:
    """Words whisper packed tighter than `_MIN_ROOM_WORD_S` a word (two or more) just after a word it stretched over
    their time (`_STRETCHED_WORD_S` or more, and at least `_MIN_ROOM_WORD_S` for itself and each of them) share
    that word's time: it and they are spread evenly from its start to the last one's end. The mirror of
    `onto_stretched`. `words` rise.

    Stop 28's fresh tester, a sentence said twice with 1 s between: the second copy's last pass gave
    "old-sposed@5.64-6.78 young@6.78-6.83 man.@6.83-6.88", the talker saying "young man." over about 6.0-6.88 s."""
    out = list(words)
    for j in range(len(out) - 2):
        if out[j].end - out[j].start < _STRETCHED_WORD_S:
            continue
        # The packed words: the most words after j, none of them `_SPREAD_WORD_S` long, that whisper gave less
        # than `_MIN_ROOM_WORD_S` a word.
        m = j
        for k in range(j + 1, len(out)):
            if out[k].end - out[k].start >= _SPREAD_WORD_S:
                break
            if k - j >= 2 and out[k].end - out[j + 1].start < (k - j) * _MIN_ROOM_WORD_S:
                m = k
        if m > j and out[j].end - out[j].start >= (m - j + 1) * _MIN_ROOM_WORD_S:
            _place(out, j, m + 1, out[j].start, out[m].end)
    return out


def _stretched_after(
    words: list[Word], j: int, n: int, start: float, pauses: list[tuple[float, float]]
) -> tuple[int, float] | None:
    """(m, share): the first index m from `j` on such that the words j..m, squeezed, leave `n` words before them
    `_SPREAD_WORD_S` each from `start`, giving each of their own as much, none of them after the next pause; else
    the last word before that pause, and `share` what the speech up to its end gives each of them and the `n`
    words, when that is at least `_MIN_ROOM_WORD_S`; None when neither.

    A fresh tester's file: "He might even have been" stacked in the 3 s pause before their speech, "made" at 14.98
    s and "amiable" stretched over 1.1 s; moved after the pause (14.75 s) with no room before "made", the run went
    out 50 ms a word, and "amiable" 1.6 s early. A fast talker's speech may not give `_SPREAD_WORD_S` to every word:
    "And the valley of the" stacked at 7.0 s before 2.7 s of speech that holds them with six words more (stop 28's
    scan) went out 50 ms each."""
    limit = next((a for a, _ in pauses if a > start), math.inf)
    last = None
    for m in range(j, len(words)):
        if words[m].start >= limit:
            break
        if words[m].end - start >= (m - j + 1 + n) * _SPREAD_WORD_S:
            return m, _SPREAD_WORD_S
        last = m
    if last is None:
        return None
    share = (words[last].end - start) / (last - j + 1 + n)
    return (last, share) if share >= _MIN_ROOM_WORD_S and words[last].end <= limit else None


def _tail_limit(words: list[Word], i: int, j: int, pause_end: float) -> int:
    """Where the search for the end of a sentence that a run inside a pause (words i..j-1) continues stops: the
    sentence may end just after the pause (whisper drifted "to him and painful to" into a 3 s silence and
    "myself." to the speech after it, a fresh tester's file), within `_SENTENCE_TAIL_WORDS` words from the run's
    first and `_SENTENCE_TAIL_S` seconds of the pause's end."""
    k = j
    while k < min(len(words), i + _SENTENCE_TAIL_WORDS) and words[k].start < pause_end + _SENTENCE_TAIL_S:
        k += 1
    return k


def longest_collapsed_run(words: list[Word]) -> int:
    """The most words in a row shorter than `MIN_WORD_S` (a run whisper stacked on one instant)."""
    longest = run = 0
    for w in words:
        run = run + 1 if _collapsed(w) else 0
        longest = max(longest, run)
    return longest


def retimed(words: list[Word], begin: float, end: float) -> list[Word]:
    """`words` with times inside [begin, end] (a pass's window up to its speech's end; for a final, the end of the
    last word sent and the start of the next word or the audio received), rising (each starts where the one before
    it ends, or later), spread where whisper collapsed them (`spread_collapsed`), and, wherever [begin, end] has
    room for it, none shorter than `MIN_WORD_S`."""
    out: list[Word] = []
    t = begin
    for w in words:
        start = min(max(w.start, t), end)
        t = min(max(w.end, start), end)
        out.append(Word(w.text, start, t, w.probability))
    return pushed(spread_collapsed(out, begin, end), begin, end)


def pushed(words: list[Word], begin: float, end: float) -> list[Word]:
    """Rising words, each made at least `MIN_WORD_S` long (less only when [begin, end] has no room for that):
    pushed later where they would overlap, then back from `end`, so each moves as little as it can."""
    if not words:
        return words
    length = min(MIN_WORD_S, (end - begin) / len(words))
    starts: list[float] = []
    ends: list[float] = []
    t = begin
    for w in words:
        starts.append(max(w.start, t))
        t = max(w.end, starts[-1] + length)
        ends.append(t)
    t = end
    for k in range(len(words) - 1, -1, -1):
        ends[k] = min(ends[k], t)
        starts[k] = min(starts[k], ends[k] - length)
        t = starts[k]
    return [Word(w.text, a, b, w.probability) for w, a, b in zip(words, starts, ends, strict=True)]


def spread_collapsed(words: list[Word], begin: float, end: float) -> list[Word]:
    """Give the words whisper collapsed (shorter than 50 ms each: a run of them is typically stacked on one
    instant, often the end of the window or of its speech) times that mean something. `words` rise and lie in
    [begin, end]. Each run is spread backwards from where it ends, `_SPREAD_WORD_S` per word, into the room before
    it; with no room there, the words before it in this final are squeezed to make room (whisper stretched the
    words before a stacked run over the run's time), unless that leaves less than `_SPREAD_WORD_S` a word and there
    is room forwards, up to the next word (`end` after the last). Only a run with no room at all (every word of
    the final on one instant) stays as it is."""
    out = list(words)
    i = 0
    while i < len(out):
        if not _collapsed(out[i]):
            i += 1
            continue
        j = i
        while j < len(out) and _collapsed(out[j]):
            j += 1
        n = j - i
        previous_end = out[i - 1].end if i > 0 else begin
        room_end = out[j].start if j < len(out) else end
        finish = out[j - 1].end
        forward_start = max(previous_end, out[i].start)
        forward_stop = min(room_end, forward_start + n * _SPREAD_WORD_S)
        squeezed = _compressible(out, i, n, finish, begin)
        if finish - previous_end >= n * MIN_WORD_S:
            _place(out, i, j, max(previous_end, finish - n * _SPREAD_WORD_S), finish)
        elif squeezed is not None and (squeezed[1] or forward_stop - forward_start < n * MIN_WORD_S):
            k, first = squeezed[0]
            length = min(_SPREAD_WORD_S, (finish - first) / (j - k))
            _scale(out, k, i, first, finish - n * length)
            _place(out, i, j, finish - n * length, finish)
        elif forward_stop - forward_start >= n * MIN_WORD_S:
            _place(out, i, j, forward_start, forward_stop)
        i = j
    return out


def _collapsed(word: Word) -> bool:
    """Shorter than `MIN_WORD_S`, not counting float error: a word `pushed` made exactly that long has a time (a
    fresh tester's stream: "No one who is", placed 50 ms each on their speech, were spread again as a collapsed run
    when they went out, back into the 3 s of silence before it)."""
    return word.end - word.start < MIN_WORD_S - _TIME_EPSILON_S


def _compressible(
    words: list[Word], i: int, n: int, finish: float, begin: float
) -> tuple[tuple[int, float], bool] | None:
    """Where the words before index `i`, squeezed together, leave room before `finish` for the `n` words from `i` on:
    the first word to squeeze and where the room starts, and whether each word gets `_SPREAD_WORD_S` (the nearest
    words give that much room) or only `MIN_WORD_S` or more (all the words before, from the first one's start, or
    from `begin` when even they have too little). None when there is no such room.

    The room before the first word is the last resort: in a final, it is the silence since the last word sent (a
    fresh tester's stream: a sentence said from 15.87 s, whose last words two passes placed out of order, went
    out squeezed back over 3 s of silence, from 12.22 s)."""
    for k in range(i - 1, -1, -1):
        if finish - words[k].start >= (i - k + n) * _SPREAD_WORD_S:
            return (k, words[k].start), True
    for first in (words[0].start, begin) if i > 0 else ():
        if finish - first >= (i + n) * MIN_WORD_S:
            return (0, first), False
    return None


def _place(words: list[Word], i: int, j: int, start: float, stop: float) -> None:
    """Words i..j-1 spread evenly over [start, stop]."""
    step = (stop - start) / (j - i)
    for k in range(i, j):
        w = words[k]
        words[k] = Word(w.text, start + (k - i) * step, start + (k - i + 1) * step, w.probability)


def _scale(words: list[Word], i: int, j: int, start: float, stop: float) -> None:
    """Words i..j-1 squeezed (or stretched) linearly from where they lie into [start, stop], in order."""
    if i >= j:
        return
    old_start, old_stop = words[i].start, max(words[j - 1].end, words[i].start)
    ratio = (stop - start) / (old_stop - old_start) if old_stop > old_start else 0.0
    for k in range(i, j):
        w = words[k]
        a = start + (w.start - old_start) * ratio
        b = start + (w.end - old_start) * ratio if ratio else stop
        words[k] = Word(w.text, a, b, w.probability)
