"""Where one streaming pass's words go: from whisper's times, in stream seconds, to times inside the audio that holds
them, rising from word to word, with no run stacked on one instant. Pure: it reads the stream's audio window and
changes nothing. The repairs themselves are `core/wordtimes.py`; this module decides which apply to a pass, from
where its speech, its talker and its pauses are (`AudioWindow`, `TalkerSpan`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.events import TranscribeRequest
from melvin_trio.core.talker import ONSET_S, TalkerSpan
from melvin_trio.core.window import AudioWindow
from melvin_trio.core.words import Word
from melvin_trio.core.wordtimes import (
    after_onset,
    after_stretched,
    out_of_pauses,
    outside_pauses,
    pushed,
    retimed,
    within_speech,
)

__all__ = ["PAST_END_S", "PlacedPass", "place_pass"]

# A word cannot begin in a window's last PAST_END_S seconds: whisper.cpp puts the words it invents past the audio
# (and the loops it falls into) at the very end of the window.
PAST_END_S: Final = 0.1


@dataclass(frozen=True)
class PlacedPass:
    """One pass's words placed (`words`, stream seconds, rising), and what the core needs to know of the placing:
    whether whisper put words on the window's last `PAST_END_S` that this pass leaves to a later one
    (`end_words_left`), where the audio that holds the words ends (`holder_end`, seconds: the speech's end in a
    complete pass, else the window's), the talker's span in the window (None without a known talker level), and the
    talker's onset in it (None when there is none to go by)."""

    words: list[Word]
    end_words_left: bool
    holder_end: float
    span: TalkerSpan | None
    onset: float | None


def place_pass(
    request: TranscribeRequest,
    heard: list[Word],
    window: AudioWindow,
    talker_level: float | None,
    pause_seconds: float,
) -> PlacedPass:
    """Place `heard` (the pass's words in stream seconds, none ending past its window) within the audio of
    `request` in `window`: the talker's level (dBFS, None when not yet known) tells its onset and where it was
    last heard, and pauses of at least `pause_seconds` no word may span."""
    window_end = request.end_sample / SAMPLE_RATE
    latest_start = window_end - PAST_END_S
    inside = [w for w in heard if w.start < latest_start]
    stacked = len(heard) - len(inside)  # the words whisper put on the window's last PAST_END_S
    if (
        not request.complete
        and stacked >= 2
        and inside
        and inside[-1] is heard[len(inside) - 1]
        and inside[-1].end >= latest_start - PAST_END_S
    ):
        # Whisper stretched the word before a run it stacked on the window's end over the run's time: the word
        # keeps its share, as `spread_collapsed` would give it (a fresh tester's stream: "and[15.88-16.94]",
        # five words stacked at 16.94 s; confirmed so, the words after it went out 50 ms each).
        last = inside[-1]
        inside[-1] = Word(last.text, last.start, last.start + (last.end - last.start) / (stacked + 1), last.probability)
    # A window that will not grow (an utterance that ended, a backlog, the last pass) has no successor to place
    # those words right: keep them (losing real words is worse than odd times), within the speech.
    words = within_speech(heard, request.speech_end) if request.complete else inside
    # Times that mean something from the start: inside the audio that holds them (this window, up to the end
    # of its speech), rising, and no run stacked on one instant. Spread later (in the final), a run at the
    # window's start went into the silence before the window, and one at its end had no room left.
    holder_end = request.speech_end if request.complete and request.speech_end is not None else window_end
    begin = int(request.offset * SAMPLE_RATE)
    holder_start = window.speech_start(begin, request.end_sample, ONSET_S)
    span = TalkerSpan.measure(window, begin, request.end_sample, talker_level)
    onset = None if span is None else span.onset(holder_start)
    if onset is not None:
        words, holder_start = after_onset(words, onset), onset
    pauses = window.pauses(begin, request.end_sample, pause_seconds)
    if onset is None:
        # Words whisper drew back into the pause before the speech are moved after the pause, not clamped onto
        # its end: clamped, they were pushed out 50 ms each (a fresh tester: "If the reader" at 1.47-1.62 s,
        # said over 1.45-2.14 s). Not across the next pause: the words after it are another utterance's.
        speech = holder_start + ONSET_S
        words = after_onset(words, speech, next((a for a, _ in pauses if a > speech), None))
    words = retimed(words, holder_start, max(holder_end, holder_start))
    # A word whisper drifted wholly into a pause goes to the speech it belongs to, as in files (a fresh tester,
    # real time: "No" at 5.78-6.08 s in 3 s of digital silence, its speech from 6.86 s).
    words = out_of_pauses(outside_pauses(words, pauses), pauses)
    heard_until = None if span is None else span.heard_until(window.speech_end(request.end_sample))
    if request.complete and heard_until is not None:
        # No later pass places these words: the word whisper stretched over the babble after the talker ends
        # where the talker stops (a fresh tester: "asthma.@4.72-7.00", the talker silent from 5.05 s).
        words = outside_pauses(words, [(heard_until, max(holder_end, heard_until))])
    words = pushed(after_stretched(words), holder_start, max(holder_end, holder_start))
    end_words_left = not request.complete and len(inside) < len(heard)
    return PlacedPass(words, end_words_left, holder_end, span, onset)
