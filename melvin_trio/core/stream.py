"""The state of one stream: its audio window, what to transcribe next, and when to send partials and finals.

A driver feeds audio as it arrives (`feed`), asks what to do (`poll` for finals that are due by time,
`next_request` for the next engine call), hands back the engine's answer (`on_words`, `on_language`), and sends the
events it gets. All times are absolute stream seconds from the first audio byte. No I/O, no clock: stream time is
the amount of audio received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from melvin_trio.core.agreement import LocalAgreement
from melvin_trio.core.vad import FRAME_SAMPLES, EnergyVad, VadSettings, frame_energies_db
from melvin_trio.core.words import Word, join_text, word_key

SAMPLE_RATE: Final = 16000
_BYTES_PER_SAMPLE: Final = 2
_DETECT_MAX_SECONDS: Final = 30.0
_SILENCE_TAIL_S: Final = 0.5  # audio kept before the edge when silence is dropped: an onset may hide in it
_PAST_END_S: Final = 0.1
_FINALIZED_KEPT: Final = 64


@dataclass(frozen=True)
class StreamSettings:
    window_seconds: float = 15.0  # longest audio sent to the engine in one pass
    trim_seconds: float = 10.0  # once the window is this long, it is cut at the last finalized sentence end
    min_new_audio_seconds: float = 1.0  # a pass runs once this much audio arrived since the last one began
    final_after_words: int = 6  # a final goes out once this many confirmed words wait...
    final_after_seconds: float = 2.0  # ...or the oldest of them ended this long ago (stream time)...
    # ...or one of them ends a sentence.
    prompt_chars: int = 200  # the finalized text conditioning the next pass, at most this long
    backlog_margin_seconds: float = 1.0  # in a window that will not grow, words ending this near its end wait
    detect_after_speech_seconds: float = 2.0  # language detection waits for this much speech
    vad: VadSettings = field(default_factory=VadSettings)


@dataclass(frozen=True)
class TranscribeRequest:
    audio: npt.NDArray[np.float32]
    offset: float  # stream time of audio[0]
    language: str
    prompt: str
    end_sample: int  # absolute sample index where the window ends
    complete: bool  # no later pass will see more audio in this window (backlog, or the last pass)
    last: bool  # the last pass after eof: every word goes out


@dataclass(frozen=True)
class DetectRequest:
    audio: npt.NDArray[np.float32]


Request = TranscribeRequest | DetectRequest


@dataclass(frozen=True)
class SendPartial:
    text: str


@dataclass(frozen=True)
class SendFinal:
    words: list[Word]


Event = SendPartial | SendFinal


class StreamCore:
    def __init__(self, settings: StreamSettings, language: str | None) -> None:
        self.settings = settings
        self.language = language
        self._pcm = bytearray()  # s16le audio from _start (absolute sample index) to the end of what was received
        self._start = 0
        self._total = 0  # samples received
        self._odd = b""  # half a sample, completed by the next frame
        self._energies: list[float] = []  # per 20 ms frame from _frames_start
        self._frames_start = 0  # absolute frame index of _energies[0]
        self._vad_tail = np.zeros(0, dtype=np.float32)  # samples not yet making a whole frame
        self._vad = EnergyVad(settings.vad)
        self._last_pass_end = 0  # absolute sample where the last pass's window ended
        self._eof = False
        self._agreement = LocalAgreement()
        self._pending: list[Word] = []  # confirmed, not yet sent in a final
        self._finalized: list[Word] = []  # the latest words sent in finals, for the prompt
        self._emitted_until = 0.0  # start of the last word sent in a final
        self._sentence_end = 0.0  # end of the last finalized word that ended a sentence
        self._last_partial = ""
        self._finished = False

    # --- audio in ----------------------------------------------------------------------------------------------

    @property
    def received_seconds(self) -> float:
        return self._total / SAMPLE_RATE

    @property
    def buffered_seconds(self) -> float:
        return (self._total - self._start) / SAMPLE_RATE

    def feed(self, pcm: bytes) -> None:
        """Append s16le audio of any length; an odd byte waits for the next call, so samples stay aligned."""
        if self._eof:
            raise ValueError("audio after eof")
        data = self._odd + pcm
        usable = len(data) - len(data) % _BYTES_PER_SAMPLE
        self._odd = data[usable:]
        if not usable:
            return
        chunk = data[:usable]
        self._pcm += chunk
        self._total += usable // _BYTES_PER_SAMPLE
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
        joined = np.concatenate([self._vad_tail, samples])
        whole = joined.size - joined.size % FRAME_SAMPLES
        if whole:
            energies = frame_energies_db(joined[:whole])
            self._vad.observe(energies)
            self._energies.extend(energies.tolist())
        self._vad_tail = joined[whole:]

    def end_of_stream(self) -> None:
        self._eof = True

    @property
    def finished(self) -> bool:
        """Every word went out in a final; nothing more will come. Until `poll` has handed out the last final,
        a stream that ended is not finished."""
        return self._finished and not self._pending

    # --- decisions ---------------------------------------------------------------------------------------------

    def _window_audio(self, end: int) -> npt.NDArray[np.float32]:
        raw = self._pcm[: (end - self._start) * _BYTES_PER_SAMPLE]
        return np.frombuffer(bytes(raw), dtype="<i2").astype(np.float32) / 32768.0

    def _energies_between(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        first = max(begin // FRAME_SAMPLES - self._frames_start, 0)
        last = max(end // FRAME_SAMPLES - self._frames_start, 0)
        return np.asarray(self._energies[first:last], dtype=np.float64)

    def _has_speech(self, begin: int, end: int) -> bool:
        return self._vad.has_speech(self._energies_between(begin, end))

    def _cut(self, sample: int) -> None:
        """Drop audio before absolute `sample` from the window."""
        sample = min(max(sample, self._start), self._total)
        del self._pcm[: (sample - self._start) * _BYTES_PER_SAMPLE]
        self._start = sample
        keep_from = sample // FRAME_SAMPLES
        del self._energies[: max(keep_from - self._frames_start, 0)]
        self._frames_start = max(self._frames_start, keep_from)

    def _prompt(self) -> str:
        """The finalized text before the window (text inside it would be transcribed twice), at most prompt_chars."""
        window_start = self._start / SAMPLE_RATE
        before = [w for w in self._finalized if w.end <= window_start + _PAST_END_S]
        return join_text(before).strip()[-self.settings.prompt_chars :].lstrip()

    def poll(self) -> list[Event]:
        """Finals that became due as stream time passed (the time limit), with the partial that follows them."""
        return self._emit()

    def pass_due(self) -> bool:
        """Whether `next_request` may have work: enough new audio, a backlog, or the end of the stream."""
        if self._finished:
            return False  # what is left goes out through `poll`
        if self._eof:
            return True
        if self.language is None:
            speech = self._vad.speech_seconds(self._energies_between(self._start, self._total))
            return speech >= self.settings.detect_after_speech_seconds
        end = min(self._total, self._start + int(self.settings.window_seconds * SAMPLE_RATE))
        return end < self._total or end - self._last_pass_end >= self.settings.min_new_audio_seconds * SAMPLE_RATE

    def next_request(self) -> Request | None:
        """What the engine should do next, or None when nothing is due yet (or the stream is finished)."""
        if self._finished:
            return None  # what is left goes out through `poll`
        if self.language is None:
            return self._detection_request()
        end = min(self._total, self._start + int(self.settings.window_seconds * SAMPLE_RATE))
        complete = end < self._total  # a backlog: this window will not grow
        last = self._eof and not complete
        new_audio = end - self._last_pass_end
        if not (complete or last) and new_audio < self.settings.min_new_audio_seconds * SAMPLE_RATE:
            return None
        if last and new_audio <= 0:
            # The previous pass already saw all the audio: its words are the last ones.
            self._finish_with_hypothesis()
            return None
        # Skip the engine when the window holds no speech, or when nothing new was said and the last pass left
        # nothing open.
        has_words = bool(self._pending or self._agreement.hypothesis)
        if not self._has_speech(self._start, end) or not (has_words or self._has_speech(self._last_pass_end, end)):
            self._skip_silence(end, complete or last)
            return None
        return TranscribeRequest(
            audio=self._window_audio(end),
            offset=self._start / SAMPLE_RATE,
            language=self.language,
            prompt=self._prompt(),
            end_sample=end,
            complete=complete or last,
            last=last,
        )

    def _skip_silence(self, end: int, complete: bool) -> None:
        """Nothing worth transcribing up to `end`: move on without an engine call."""
        self._last_pass_end = end
        if complete and self._eof and end >= self._total:
            self._finish_with_hypothesis()
        elif not (self._pending or self._agreement.hypothesis):
            tail = 0 if complete else int(_SILENCE_TAIL_S * SAMPLE_RATE)
            self._cut(end - tail)

    def _detection_request(self) -> DetectRequest | None:
        speech = self._vad.speech_seconds(self._energies_between(self._start, self._total))
        if speech >= self.settings.detect_after_speech_seconds or (self._eof and speech > 0):
            end = min(self._total, self._start + int(_DETECT_MAX_SECONDS * SAMPLE_RATE))
            return DetectRequest(self._window_audio(end))
        if self._eof:
            self._finished = True  # no speech at all: nothing to transcribe
        return None

    def on_language(self, language: str) -> None:
        self.language = language

    def on_words(self, request: TranscribeRequest, words: list[Word]) -> list[Event]:
        """Take the engine's words for `request` (times relative to its audio) and say what to send."""
        window_end = request.end_sample / SAMPLE_RATE
        # A word cannot begin where the audio ends: whisper.cpp puts the words it invents past the audio (and the
        # loops it falls into) at the very end of the window.
        latest_start = window_end - _PAST_END_S
        shifted = [
            Word(w.text, w.start + request.offset, min(w.end + request.offset, window_end), w.probability)
            for w in words
        ]
        inside = [w for w in shifted if w.start < latest_start]
        # A window that will not grow (the last pass, a backlog) has no successor to place those words right: keep
        # them (losing real words is worse than odd times), but not the loops whisper falls into there.
        absolute = inside + _without_loops(shifted[len(inside) :]) if request.complete else inside
        self._last_pass_end = request.end_sample
        self._agreement.insert(absolute)
        confirmed = self._agreement.confirm()
        self._pending.extend(confirmed)
        if request.last:
            self._finish_with_hypothesis()
            return self._drain_events()
        if request.complete:
            # This audio will not be seen again: words well inside the window are as good as they get.
            limit = window_end - self.settings.backlog_margin_seconds
            safe = self._agreement.force(sum(1 for w in self._agreement.hypothesis if w.end <= limit))
            self._pending.extend(safe)
            events = self._emit(force=True)
            if not self._pending and not self._agreement.hypothesis:
                self._cut(int(limit * SAMPLE_RATE))
            elif not safe and not confirmed:
                # whisper placed every word near the end of a full window (its times collapse there): take all
                # but the last, which may straddle the edge, rather than discard the window's speech.
                hypothesis = self._agreement.hypothesis
                taken = self._agreement.force(max(len(hypothesis) - 1, 0))
                self._pending.extend(taken)
                events += self._emit(force=True)
                if not taken:
                    self._agreement.clear_hypothesis()
                    self._cut(int(limit * SAMPLE_RATE))
            return events
        return self._emit()

    def _finish_with_hypothesis(self) -> None:
        self._pending.extend(self._agreement.force(len(self._agreement.hypothesis)))
        self._eof = True
        self._finished = True

    def _drain_events(self) -> list[Event]:
        events: list[Event] = []
        if self._pending:
            events.append(self._finalize(len(self._pending)))
        self._cut(self._total)
        return events

    def _due_count(self, force: bool) -> int:
        """How many of the pending words the next final should hold (0: none is due)."""
        for i, word in enumerate(self._pending):
            if word.ends_sentence:
                return i + 1
        age = self.received_seconds - self._pending[0].end
        if force or len(self._pending) >= self.settings.final_after_words or age >= self.settings.final_after_seconds:
            return len(self._pending)
        return 0

    def _finalize(self, count: int) -> SendFinal:
        taken, self._pending = self._pending[:count], self._pending[count:]
        # Word times come from different passes; what goes out rises monotonically and stays inside the audio.
        words = []
        for w in taken:
            start = min(max(w.start, self._emitted_until), self.received_seconds)
            words.append(Word(w.text, start, min(max(w.end, start), self.received_seconds), w.probability))
            self._emitted_until = start
        self._finalized = (self._finalized + words)[-_FINALIZED_KEPT:]
        # Cut the window only once it is long (whisper is steadier with context before the words it is unsure of),
        # at the last finalized sentence end if there is one, else after this final. Cutting after every final lost
        # words at each cut: whisper.cpp's word times are imprecise, and a window opening mid-word derails it.
        if words[-1].ends_sentence:
            self._sentence_end = words[-1].end
        # Mid-sentence only when the window would otherwise overflow: a prompt ending mid-sentence invites whisper
        # to finish that sentence instead of transcribing the audio (measured: "...can do for" + "you, ask what
        # you can do for your country" came back as "your country.").
        long_window = self.buffered_seconds + self.settings.min_new_audio_seconds
        at_sentence = self._sentence_end > self._start / SAMPLE_RATE
        if (long_window > self.settings.trim_seconds and at_sentence) or long_window > self.settings.window_seconds:
            cut_at = self._sentence_end if at_sentence else words[-1].end
            following = self._pending or self._agreement.hypothesis
            if following:
                cut_at = min(cut_at, following[0].start)
            self._cut(int(cut_at * SAMPLE_RATE))
        return SendFinal(words)

    def _emit(self, force: bool = False) -> list[Event]:
        events: list[Event] = []
        if self._finished:
            return self._drain_events()
        while self._pending and (count := self._due_count(force)):
            events.append(self._finalize(count))
        text = join_text(self._pending + self._agreement.hypothesis)
        if text != self._last_partial:
            self._last_partial = text
            events.append(SendPartial(text))
        return events


def _without_loops(words: list[Word], longest: int = 6) -> list[Word]:
    """Drop immediate repetitions of a run of words ("it was it was it was" -> "it was")."""
    out: list[Word] = []
    for word in words:
        out.append(word)
        for n in range(1, min(longest, len(out) // 2) + 1):
            if [word_key(w.text) for w in out[-n:]] == [word_key(w.text) for w in out[-2 * n : -n]]:
                del out[-n:]
                break
    return out
