"""The state of one stream: its audio window, what to transcribe next, and when to send partials and finals.

A driver feeds audio as it arrives (`feed`), asks what to do (`poll` for finals that are due by time,
`next_request` for the next engine call), hands back the engine's answer (`on_words`, `on_language`), and sends the
events it gets. All times are absolute stream seconds from the first audio byte. No I/O, no clock: stream time is
the amount of audio received.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Final

import numpy as np
import numpy.typing as npt

from melvin_trio.core.agreement import LocalAgreement
from melvin_trio.core.vad import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    SAMPLE_RATE,
    SpeechDetector,
    frame_energies_db,
    make_detector,
)
from melvin_trio.core.words import Word, join_text, without_non_speech, word_key

__all__ = ["SAMPLE_RATE"]
_BYTES_PER_SAMPLE: Final = 2
_DETECT_MAX_SECONDS: Final = 30.0
_SILENCE_TAIL_S: Final = 0.5  # audio kept before the edge when silence is dropped: an onset may hide in it
_PAST_END_S: Final = 0.1
_QUIET_SEARCH_S: Final = 3.0  # a full window is cut at the quietest moment of its last seconds
_QUIET_FRAMES: Final = 3  # about 100 ms
_FUZZY_LOOP_WORDS: Final = 4
_FUZZY_LOOP_SIMILARITY: Final = 0.75
_SPOKEN_KEPT: Final = 64


@dataclass(frozen=True)
class StreamSettings:
    """How streams are cut and finalized: the one source of these defaults (config.yml's `streaming:` section is
    parsed into this class)."""

    window_seconds: float = 15.0  # longest audio sent to the engine in one pass
    trim_seconds: float = 10.0  # past this much window, a short pause ends the utterance too
    min_new_audio_seconds: float = 1.0  # a pass runs once this much audio arrived since the last one began
    final_after_words: int = 6  # a final goes out once this many confirmed words wait...
    final_after_seconds: float = 2.0  # ...or the oldest of them ended this long ago (stream time)...
    # ...or one of them ends a sentence.
    prompt_chars: int = 200  # the finalized text conditioning the next pass, at most this long
    detect_after_speech_seconds: float = 3.0  # language detection waits for this much speech
    pause_seconds: float = 0.5  # silence after speech that ends an utterance: all its words become final
    short_pause_seconds: float = 0.2  # the pause that ends an utterance already longer than trim_seconds
    vad_detector: str = "silero"  # the speech detector: "silero" (trained) or "energy" (level over the noise floor)
    vad_speech_threshold: float = 0.5  # a frame whose speech probability reaches this is speech...
    vad_pause_threshold: float = 0.35  # ...one below this is a pause; frames in between neither count nor end one
    vad_min_speech_seconds: float = 0.1  # a window needs this much speech to be transcribed ("Yes." holds 0.2 s)


@dataclass(frozen=True)
class TranscribeRequest:
    audio: npt.NDArray[np.float32]
    offset: float  # stream time of audio[0]
    language: str
    prompt: str
    end_sample: int  # absolute sample index where the window ends
    complete: bool  # no later pass will see more audio in this window (backlog, or the last pass)
    last: bool  # the last pass after eof: every word goes out
    cut_sample: int | None = None  # the window ends in a pause: every word goes out, and the window is cut here
    cut_in_pause: bool = False  # the cut lies in a pause, not inside running speech


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
    def __init__(self, settings: StreamSettings, language: str | None, detector: SpeechDetector | None = None) -> None:
        """`detector` is made from `settings.vad_detector` unless given (one per stream: it keeps state)."""
        self.settings = settings
        self.language = language
        self._pcm = bytearray()  # s16le audio from _start (absolute sample index) to the end of what was received
        self._start = 0
        self._total = 0  # samples received
        self._odd = b""  # half a sample, completed by the next frame
        self._energies: list[float] = []  # level per frame from _frames_start
        self._speech: list[float] = []  # speech probability per frame from _frames_start
        self._frames_start = 0  # absolute frame index of _energies[0]
        self._vad_tail = np.zeros(0, dtype=np.float32)  # samples not yet making a whole frame
        self._detector = detector if detector is not None else make_detector(settings.vad_detector)
        self._last_pass_end = 0  # absolute sample where the last pass's window ended
        self._eof = False
        self._agreement = LocalAgreement()
        self._pending: list[Word] = []  # confirmed, not yet sent in a final
        self._spoken: list[Word] = []  # the latest confirmed words, for the prompt
        self._spoken_before_window = 0  # how many of them lie before the window
        self._emitted_until = 0.0  # start of the last word sent in a final
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
            frames = joined[:whole].reshape(-1, FRAME_SAMPLES)
            self._energies.extend(frame_energies_db(frames).tolist())
            self._speech.extend(self._detector.probabilities(frames).tolist())
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

    def _speech_between(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        first = max(begin // FRAME_SAMPLES - self._frames_start, 0)
        last = max(end // FRAME_SAMPLES - self._frames_start, 0)
        return np.asarray(self._speech[first:last], dtype=np.float64)

    def _speech_seconds(self, begin: int, end: int) -> float:
        mask = self._speech_between(begin, end) >= self.settings.vad_speech_threshold
        return float(np.count_nonzero(mask)) * FRAME_SECONDS

    def _has_speech(self, begin: int, end: int) -> bool:
        return self._speech_seconds(begin, end) >= self.settings.vad_min_speech_seconds

    def _cut(self, sample: int, *, in_pause: bool) -> None:
        """Drop audio before absolute `sample` from the window. `in_pause`: the cut lies in a pause the detector
        heard (or in silence), so what follows is new speech; otherwise it split running speech."""
        sample = min(max(sample, self._start), self._total)
        del self._pcm[: (sample - self._start) * _BYTES_PER_SAMPLE]
        self._start = sample
        keep_from = sample // FRAME_SAMPLES
        del self._energies[: max(keep_from - self._frames_start, 0)]
        del self._speech[: max(keep_from - self._frames_start, 0)]
        self._frames_start = max(self._frames_start, keep_from)
        # Every word confirmed so far lies before the cut: later passes will not see them again.
        self._spoken = self._spoken[-_SPOKEN_KEPT:]
        self._agreement.new_window(self._spoken, repeat_possible=not in_pause)
        self._spoken_before_window = len(self._spoken)

    def _prompt(self) -> str:
        """The confirmed text before the window (text inside it would be transcribed twice), at most prompt_chars.
        Not chosen by word times: a word whose time collapsed onto the window's start made whisper skip it."""
        before = self._spoken[: self._spoken_before_window]
        return join_text(before).strip()[-self.settings.prompt_chars :].lstrip()

    def _take(self, words: list[Word]) -> None:
        """Words confirmed (or forced): they wait for their final."""
        self._pending.extend(words)
        self._spoken.extend(words)

    def poll(self) -> list[Event]:
        """Finals that became due as stream time passed (the time limit), with the partial that follows them."""
        return self._emit()

    def pass_due(self) -> bool:
        """Whether `next_request` may have work: enough new audio, a finished utterance, a backlog, or the end."""
        if self._finished:
            return False  # what is left goes out through `poll`
        if self._eof:
            return True
        if self.language is None:
            return self._speech_seconds(self._start, self._total) >= self.settings.detect_after_speech_seconds
        end = self._window_end()
        if end < self._total or end - self._last_pass_end >= self.settings.min_new_audio_seconds * SAMPLE_RATE:
            return True
        return self._last_pass_end < end and self._utterance_end(end) is not None

    def _window_end(self) -> int:
        return min(self._total, self._start + int(self.settings.window_seconds * SAMPLE_RATE))

    def _utterance_end(self, end: int) -> int | None:
        """The middle of the first pause after speech in the window up to `end` (absolute sample), or None.

        A pause is `pause_seconds` of frames near the noise floor (`short_pause_seconds` once the window is longer
        than `trim_seconds`) after at least the VAD's minimum of speech. Cutting there never splits a word, unlike a cut
        at whisper's word times, which are imprecise by a few hundred ms; and a window that ends in silence gives
        whisper its best shot at the utterance's last words. The pass ends where the cut is: a pass reaching past it
        heard the soft onset of the next word in the pause's second half, and that word came out twice.
        """
        first_frame = -(-self._start // FRAME_SAMPLES)  # the first whole frame inside the window
        speech = self._speech_between(first_frame * FRAME_SAMPLES, end)
        speech_mask = speech >= self.settings.vad_speech_threshold
        pause_mask = speech < self.settings.vad_pause_threshold
        min_speech = round(self.settings.vad_min_speech_seconds / FRAME_SECONDS)
        pause = round(self.settings.pause_seconds / FRAME_SECONDS)
        short_pause = round(self.settings.short_pause_seconds / FRAME_SECONDS)
        trim_frame = round(self.settings.trim_seconds / FRAME_SECONDS)
        spoken = 0
        quiet = 0
        for index, (is_speech, is_pause) in enumerate(zip(speech_mask.tolist(), pause_mask.tolist(), strict=True)):
            spoken += is_speech
            if not is_pause:
                quiet = 0
                continue
            quiet += 1
            if spoken < min_speech:
                continue
            pause_start = index + 1 - quiet
            needed = short_pause if pause_start >= trim_frame else pause
            if quiet >= needed:
                pause_end = (first_frame + index + 1) * FRAME_SAMPLES
                speech_end = (first_frame + pause_start) * FRAME_SAMPLES
                # The quietest moment of the pause's middle half: the detector's frames are 32 ms, its decision
                # lags the speech by a frame or two; the level is exact.
                quarter = (pause_end - speech_end) // 4
                return self._quietest_sample(speech_end + quarter, pause_end - quarter)
        return None

    def next_request(self) -> Request | None:
        """What the engine should do next, or None when nothing is due yet (or the stream is finished)."""
        if self._finished:
            return None  # what is left goes out through `poll`
        if self.language is None:
            return self._detection_request()
        end = self._window_end()
        if not self._has_speech(self._start, end):
            complete = end < self._total or self._eof
            if complete or end - self._last_pass_end >= self.settings.min_new_audio_seconds * SAMPLE_RATE:
                self._skip_silence(end, complete)
            return None
        if (utterance := self._utterance_end(end)) is not None:
            return self._request(utterance, complete=True, last=False, cut_sample=utterance, in_pause=True)
        if end < self._total:
            # A full window without a pause (a backlog, or speech running on past window_seconds): end the
            # utterance at the quietest moment near the window's end, most likely between two words. Whisper's
            # word times cannot choose the cut: they stretch over several words and lost them.
            quiet = self._quietest_sample(end - int(_QUIET_SEARCH_S * SAMPLE_RATE), end)
            return self._request(quiet, complete=True, last=False, cut_sample=quiet, in_pause=False)
        last = self._eof
        new_audio = end - self._last_pass_end
        if not last and new_audio < self.settings.min_new_audio_seconds * SAMPLE_RATE:
            return None
        if last and new_audio <= 0:
            # The previous pass already saw all the audio: its words are the last ones.
            self._finish_with_hypothesis()
            return None
        # Nothing new was said and the last pass left nothing open: no need to ask again.
        idle = not (last or self._pending or self._agreement.hypothesis)
        if idle and not self._has_speech(self._last_pass_end, end):
            self._skip_silence(end, False)
            return None
        return self._request(end, complete=last, last=last, cut_sample=None, in_pause=False)

    def _quietest_sample(self, begin: int, end: int) -> int:
        """The middle of the quietest 100 ms between `begin` and `end` (absolute samples)."""
        begin = max(begin, self._start)
        energies = self._energies_between(begin, end)
        if energies.size < _QUIET_FRAMES:
            return end
        power = np.convolve(10.0 ** (energies / 10.0), np.ones(_QUIET_FRAMES), mode="valid")
        first = max(begin // FRAME_SAMPLES, self._frames_start)
        best = int(np.argmin(power[::-1]))  # the latest of equally quiet places: the longest window
        frame = first + power.size - 1 - best + _QUIET_FRAMES // 2
        return min(max(frame * FRAME_SAMPLES, begin), end)

    def _request(
        self, end: int, *, complete: bool, last: bool, cut_sample: int | None, in_pause: bool
    ) -> TranscribeRequest:
        return TranscribeRequest(
            audio=self._window_audio(end),
            offset=self._start / SAMPLE_RATE,
            language=self.language or "",
            prompt=self._prompt(),
            end_sample=end,
            complete=complete,
            last=last,
            cut_sample=cut_sample,
            cut_in_pause=in_pause,
        )

    def _skip_silence(self, end: int, complete: bool) -> None:
        """Nothing worth transcribing up to `end`: move on without an engine call."""
        self._last_pass_end = end
        if complete and self._eof and end >= self._total:
            self._finish_with_hypothesis()
        elif complete:
            # No later pass will look here again: what the last pass left open goes out as it is.
            self._take(self._agreement.force(len(self._agreement.hypothesis)))
            self._cut(end, in_pause=True)
        elif not (self._pending or self._agreement.hypothesis):
            self._cut(end - int(_SILENCE_TAIL_S * SAMPLE_RATE), in_pause=True)

    def _detection_request(self) -> DetectRequest | None:
        speech = self._speech_seconds(self._start, self._total)
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
        shifted = _without_loops(
            [
                Word(w.text, w.start + request.offset, min(w.end + request.offset, window_end), w.probability)
                for w in without_non_speech(words)
            ],
            self._paused_between,
        )
        inside = [w for w in shifted if w.start < latest_start]
        # A window that will not grow (an utterance that ended, a backlog, the last pass) has no successor to place
        # those words right: keep them (losing real words is worse than odd times).
        absolute = shifted if request.complete else inside
        self._last_pass_end = request.end_sample
        self._agreement.insert(absolute)
        confirmed = self._agreement.confirm()
        self._take(confirmed)
        if request.last:
            self._finish_with_hypothesis()
            return self._drain_events()
        if request.cut_sample is not None:
            # The utterance ended in a pause: all its words are as good as they get.
            self._take(self._agreement.force(len(self._agreement.hypothesis)))
            events = self._emit(force=True)
            self._cut(request.cut_sample, in_pause=request.cut_in_pause)
            return events
        return self._emit()

    def _paused_between(self, begin: float, end: float) -> bool:
        """Whether the detector heard a pause of at least `pause_seconds` between two stream times."""
        quiet = (
            self._speech_between(int(begin * SAMPLE_RATE), int(end * SAMPLE_RATE)) < self.settings.vad_pause_threshold
        )
        needed = round(self.settings.pause_seconds / FRAME_SECONDS)
        run = 0
        for is_quiet in quiet.tolist():
            run = run + 1 if is_quiet else 0
            if run >= needed:
                return True
        return False

    def _finish_with_hypothesis(self) -> None:
        self._take(self._agreement.force(len(self._agreement.hypothesis)))
        self._eof = True
        self._finished = True

    def _drain_events(self) -> list[Event]:
        events: list[Event] = []
        if self._pending:
            events.append(self._finalize(len(self._pending)))
        self._cut(self._total, in_pause=True)
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


def _without_loops(words: list[Word], paused_between: Callable[[float, float], bool], longest: int = 16) -> list[Word]:
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
                if paused_between(out[-n - 1].end, out[-n].start):
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
