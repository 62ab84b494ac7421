"""The finals policy of a stream: which confirmed words go out when, with times that rise and mean something."""

from __future__ import annotations

from typing import Final

from melvin_trio.core.events import Event, SendFinal, SendPartial
from melvin_trio.core.settings import StreamSettings
from melvin_trio.core.words import Word, join_text
from melvin_trio.core.wordtimes import MIN_WORD_S, after_onset, retimed

__all__ = ["FinalsPolicy"]

_SPOKEN_KEPT: Final = 64


class FinalsPolicy:
    """Owns the words confirmed but not yet sent (`pending`), the recent confirmed text (the next pass's prompt),
    and what went out: decides when a final is due and makes every final's times rise, stay inside the audio and
    never collapse to zero length."""

    def __init__(self, settings: StreamSettings) -> None:
        self._settings = settings
        self.pending: list[Word] = []
        self._spoken: list[Word] = []  # the latest confirmed words, for the prompt
        self._spoken_before_window = 0  # how many of them lie before the window
        self._emitted_until = 0.0  # end of the last word sent in a final
        self._last_partial = ""

    def take(self, words: list[Word]) -> None:
        """Words confirmed (or forced): they wait for their final."""
        self.pending.extend(words)
        self._spoken.extend(words)

    def window_cut(self) -> list[Word]:
        """Every confirmed word now lies before the window; returns them (most recent last)."""
        self._spoken = self._spoken[-_SPOKEN_KEPT:]
        self._spoken_before_window = len(self._spoken)
        return self._spoken

    def prompt(self) -> str:
        """The confirmed text before the window (text inside it would be transcribed twice), at most prompt_chars.
        Not chosen by word times: a word whose time collapsed onto the window's start made whisper skip it."""
        before = self._spoken[: self._spoken_before_window]
        return join_text(before).strip()[-self._settings.prompt_chars :].lstrip()

    def _due_count(self, now: float, force: bool) -> int:
        """How many of the pending words the next final should hold (0: none is due)."""
        for i, word in enumerate(self.pending):
            if word.ends_sentence:
                return i + 1
        age = now - self.pending[0].end
        settings = self._settings
        if force or len(self.pending) >= settings.final_after_words or age >= settings.final_after_seconds:
            return len(self.pending)
        return 0

    def _finalize(self, count: int, now: float, speech_until: float | None, following: list[Word]) -> SendFinal:
        taken, self.pending = self.pending[:count], self.pending[count:]
        # Word times come from different passes; what goes out rises, stays inside the audio (and its speech) and
        # has a length, and leaves the next word (pending, or still open) its time: a word whose start was clamped
        # to the last final's end was spread 0.3 s forward, and the open words after it went out 50 ms each (a
        # fresh tester's stream: "the@16.05-16.35 Valley@16.35-16.40 of@16.40-16.45", "Valley" said from 16.11 s).
        limit = now if speech_until is None else min(now, max(speech_until, self._emitted_until))
        after = self.pending or following
        end = min(max(after[0].start, self._emitted_until), limit) if after else limit
        # With no room before the next word (whisper stacked the last word of a sentence on the next one's start,
        # and the words before it went out already), the least room after it: the next final begins later. A
        # fresh tester: "cats?" at 47.09-47.09, "I'm" from 47.09.
        end = max(end, min(now, self._emitted_until + count * MIN_WORD_S))
        # Words a later pass placed before what went out already (passes place the same words differently: "did"
        # went out at 27.28-27.64, then "not succeed in my design" came from a pass that had "not" at 26.80) are
        # moved after it as words drawn into the silence before speech are (`after_onset`), not clamped onto its
        # end: clamped, "not succeed in my" went out 50 ms each.
        words = retimed(after_onset(taken, self._emitted_until), self._emitted_until, end)
        if words:
            self._emitted_until = words[-1].end
        return SendFinal(words)

    def events(
        self,
        now: float,
        hypothesis: list[Word],
        *,
        force: bool = False,
        drain: bool = False,
        speech_until: float | None = None,
    ) -> list[Event]:
        """The finals due at stream time `now` (every pending word if `force` or `drain`), then the partial if it
        changed (none when draining: nothing is left open). `speech_until`: stream time after which no speech was
        heard (no final word goes past it, unless it has no room before it). `hypothesis`: the words still open,
        in order; the first keeps its start (a final's last word ends by then, unless it has no room before it)."""
        events: list[Event] = []
        if drain:
            if self.pending:
                events.append(self._finalize(len(self.pending), now, speech_until, []))
            return events
        while self.pending and (count := self._due_count(now, force)):
            events.append(self._finalize(count, now, speech_until, hypothesis))
        text = join_text(self.pending + hypothesis)
        if text != self._last_partial:
            self._last_partial = text
            events.append(SendPartial(text))
        return events
