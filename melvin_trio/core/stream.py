"""The state of one stream: its audio window, what to transcribe next, and when to send partials and finals.

A driver feeds audio as it arrives (`feed`, `end_of_stream`), asks for finals that came due as stream time passed
(`poll`), asks for the next engine call (`pass_due`, `next_request`), hands back the engine's answer
(`apply(request, result)`), and sends the events it gets. `melvin_trio.core.driver` is the reference driver. All
times are absolute stream seconds from the first audio byte. No I/O, no clock: stream time is the amount of audio
received.

Everything that changes the stream's phase is in `_TRANSITIONS`; everything that decides what to do next is in
`StreamCore._plan` (pure: it reads the state and changes nothing). The parts it uses: `LocalAgreement`
(core/agreement.py: which words two passes confirm), `AudioWindow` and `FinalsPolicy` (here), the speech detector
(core/vad.py), word-time repair (core/wordtimes.py) and loop removal (core/loops.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

import numpy as np
import numpy.typing as npt

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.agreement import LocalAgreement
from melvin_trio.core.background import BackgroundSpeech
from melvin_trio.core.loops import without_loops
from melvin_trio.core.vad import FRAME_SAMPLES, FRAME_SECONDS, SpeechDetector, frame_energies_db, make_detector
from melvin_trio.core.words import Word, join_text, without_non_speech
from melvin_trio.core.wordtimes import longest_collapsed_run, retimed, within_speech

__all__ = [
    "SAMPLE_RATE",
    "DetectRequest",
    "Detected",
    "Event",
    "Phase",
    "Request",
    "Result",
    "SendFinal",
    "SendPartial",
    "StateError",
    "StreamCore",
    "StreamSettings",
    "TranscribeRequest",
]

_BYTES_PER_SAMPLE: Final = 2
_DETECT_MAX_SECONDS: Final = 30.0  # whisper detects the language on at most 30 s
_DETECT_MIN_SECONDS: Final = 1.0  # an utterance this short ("Ja.") does not settle the language before eof
_SURE_LANGUAGE: Final = 0.8  # a guess less probable than this is checked again after the next utterance...
_LANGUAGE_CHECKS: Final = 3  # ...at most this many detections in all
_SILENCE_TAIL_S: Final = 0.5  # audio kept before the edge when silence is dropped: an onset may hide in it
_PAST_END_S: Final = 0.1
_QUIET_SEARCH_S: Final = 3.0  # a full window is cut at the quietest moment of its last seconds
_QUIET_FRAMES: Final = 3  # about 100 ms
_SPOKEN_KEPT: Final = 64
_REPEAT_PAUSE_S: Final = 0.3  # a run of words said again after a pause this long was said again: not a loop
_ONSET_S: Final = 0.1  # a word may begin this long before the detector hears speech
_BROKEN_RUN_WORDS: Final = 3  # a pass with a run this long of collapsed words: its times are not to be trusted


@dataclass(frozen=True)
class StreamSettings:
    """How streams are cut and finalized: the one source of these defaults (config.yml's `streaming:` section is
    parsed into this class)."""

    window_seconds: float = 15.0  # longest audio sent to the engine in one pass
    trim_seconds: float = 10.0  # past this much window, a short pause ends the utterance too
    min_new_audio_seconds: float = 1.0  # a pass runs once this much audio arrived since the last one began...
    first_pass_speech_seconds: float = 0.5  # ...or, for an utterance's first pass, once it holds this much speech
    # Two passes agreeing on a word whisper gives less than this probability do not confirm it: it waits for a surer
    # pass or its utterance's end. bench/replay.py, en-long first 100 s, pass 0.7 s: WER 0.024 at 0, 0.012 at 0.35
    # and at 0.5 (p50 latency 1.60, 1.54 and 1.74 s of stream time).
    confirm_min_probability: float = 0.35
    # A word a pass heard at least settled_margin_seconds before its window's end, at least settled_min_probability
    # sure, where the previous pass had nothing more to say, needs no second pass (0: off). bench/replay.py, en-long
    # first 100 s, pass 0.8 s: p50 latency 1.59 -> 1.32 s of stream time, p90 2.68 -> 2.42 s, WER 0.016 both.
    settled_margin_seconds: float = 0.5
    settled_min_probability: float = 0.9
    # A final goes out once this many confirmed words wait (1: as soon as a word is confirmed; bench/replay.py: p50
    # 1.64 s against 1.90 s at 6, the same WER)...
    final_after_words: int = 1
    final_after_seconds: float = 2.0  # ...or the oldest of them ended this long ago (stream time)...
    # ...or one of them ends a sentence.
    prompt_chars: int = 200  # the finalized text conditioning the next pass, at most this long
    detect_after_speech_seconds: float = 3.0  # language detection waits for this much speech (or an utterance's end)
    pause_seconds: float = 0.5  # silence after speech that ends an utterance: all its words become final
    short_pause_seconds: float = 0.2  # the pause that ends an utterance already longer than trim_seconds
    vad_detector: str = "silero"  # the speech detector: "silero" (trained) or "energy" (level over the noise floor)
    vad_speech_threshold: float = 0.5  # a frame whose speech probability reaches this is speech...
    vad_pause_threshold: float = 0.35  # ...one below this is a pause; frames in between neither count nor end one
    vad_min_speech_seconds: float = 0.1  # a window needs this much speech to be transcribed ("Yes." holds 0.2 s)
    # Graceful overload: once this much received audio waits that no pass has covered (passes cost more than the
    # audio they cover: many streams, a busy CPU, a client faster than real time), the stream is behind and runs
    # only the passes that end an utterance or a full window (non-overlapping, each final at once) until it has
    # caught up. Normal lag is min_new_audio_seconds plus the queue: 1-3 s with up to four streams on one context.
    behind_seconds: float = 4.0
    # Background speech: words no second pass confirmed (an utterance's end, the last pass) whose confidence (the
    # geometric mean of their probabilities) is below background_max_confidence AND whose audio is at least
    # background_margin_db quieter than the stream's talker are someone else far from the microphone, and are not
    # sent. Heard alone, such speech makes whisper invent text (bench/vad.py, babble at 20 dB SNR: "Thank you very
    # much." at confidence 0.36, 20 dB under the talker; the talker's own unconfirmed runs there: 0.6 and up).
    # Either condition alone keeps the words. 0 confidence: off.
    background_max_confidence: float = 0.5
    background_margin_db: float = 15.0


# --- requests, results and events -------------------------------------------------------------------------------


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
    cut_in_pause: bool = False  # the cut lies in a pause the detector heard, not inside running speech
    speech_end: float | None = None  # stream time where the last speech in the window ends


@dataclass(frozen=True)
class DetectRequest:
    """Detect the language of `audio`: speech only, the silence around and between it left out."""

    audio: npt.NDArray[np.float32]


Request = TranscribeRequest | DetectRequest


@dataclass(frozen=True)
class Detected:
    """The answer to a DetectRequest: the most likely language and its probability."""

    language: str
    probability: float


Result = list[Word] | Detected  # the answer to a TranscribeRequest: its words (times relative to its audio)


@dataclass(frozen=True)
class SendPartial:
    text: str


@dataclass(frozen=True)
class SendFinal:
    words: list[Word]


Event = SendPartial | SendFinal


# --- the phases --------------------------------------------------------------------------------------------------


class Phase(Enum):
    WAITING_FOR_LANGUAGE = auto()  # audio arrives; nothing is transcribed before the language is known
    LISTENING = auto()  # utterances are transcribed as they grow, and finalized at their pauses
    DRAINING = auto()  # eof came: the last passes run (after a detection if the language is still open)
    FINISHED = auto()  # every word went out (or the stream held no speech)


class Signal(Enum):
    LANGUAGE_CHOSEN = auto()
    END_OF_STREAM = auto()
    LAST_WORDS_TAKEN = auto()


_TRANSITIONS: Final[dict[tuple[Phase, Signal], Phase]] = {
    (Phase.WAITING_FOR_LANGUAGE, Signal.LANGUAGE_CHOSEN): Phase.LISTENING,
    (Phase.WAITING_FOR_LANGUAGE, Signal.END_OF_STREAM): Phase.DRAINING,
    (Phase.LISTENING, Signal.LANGUAGE_CHOSEN): Phase.LISTENING,  # a revisited guess
    (Phase.LISTENING, Signal.END_OF_STREAM): Phase.DRAINING,
    (Phase.DRAINING, Signal.LANGUAGE_CHOSEN): Phase.DRAINING,
    (Phase.DRAINING, Signal.LAST_WORDS_TAKEN): Phase.FINISHED,
}


class StateError(RuntimeError):
    """An event the stream's phase does not expect (audio after eof, a second eof, an answer to no request)."""


# --- the parts ---------------------------------------------------------------------------------------------------


class AudioWindow:
    """Owns the audio not yet cut away: the s16le samples from `start` to `total` (absolute sample indices), and
    per 32 ms frame its level and the detector's speech probability. Also keeps up to 30 s of the stream's speech
    (the frames the detector does not call a pause) for language detection."""

    def __init__(self, detector: SpeechDetector, pause_threshold: float, speech_threshold: float) -> None:
        self._detector = detector
        self._pause_threshold = pause_threshold
        self._speech_threshold = speech_threshold
        self._pcm = bytearray()
        self.start = 0
        self.total = 0  # samples received
        self._odd = b""  # half a sample, completed by the next frame
        self._levels: list[float] = []  # dBFS per frame from _frames_start
        self._speech: list[float] = []  # speech probability per frame from _frames_start
        self._frames_start = 0  # absolute frame index of _levels[0]
        self._tail = np.zeros(0, dtype=np.float32)  # samples not yet making a whole frame
        self._speech_audio: list[npt.NDArray[np.float32]] = []
        self._speech_audio_frames = 0
        self._after_speech = 0  # frames left to keep after a speech frame (the decision lags the sound)
        self.keep_speech = True  # keep speech for language detection (until the language is sure)

    def feed(self, pcm: bytes) -> None:
        data = self._odd + pcm
        usable = len(data) - len(data) % _BYTES_PER_SAMPLE
        self._odd = data[usable:]
        if not usable:
            return
        chunk = data[:usable]
        self._pcm += chunk
        self.total += usable // _BYTES_PER_SAMPLE
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
        joined = np.concatenate([self._tail, samples])
        whole = joined.size - joined.size % FRAME_SAMPLES
        if whole:
            frames = joined[:whole].reshape(-1, FRAME_SAMPLES)
            speech = self._detector.probabilities(frames)
            self._levels.extend(frame_energies_db(frames).tolist())
            self._speech.extend(speech.tolist())
            if self.keep_speech:
                self._keep_speech(frames, speech)
        self._tail = joined[whole:]

    def _keep_speech(self, frames: npt.NDArray[np.float32], speech: npt.NDArray[np.float32]) -> None:
        limit = int(_DETECT_MAX_SECONDS / FRAME_SECONDS)
        for frame, probability in zip(frames, speech.tolist(), strict=True):
            if self._speech_audio_frames >= limit:
                return
            if probability >= self._pause_threshold:
                self._after_speech = 3
            elif self._after_speech:
                self._after_speech -= 1
            else:
                continue
            self._speech_audio.append(frame)
            self._speech_audio_frames += 1

    @property
    def speech_audio_seconds(self) -> float:
        return self._speech_audio_frames * FRAME_SECONDS

    def speech_audio(self) -> npt.NDArray[np.float32]:
        if not self._speech_audio:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._speech_audio).astype(np.float32)

    def audio(self, end: int) -> npt.NDArray[np.float32]:
        raw = self._pcm[: (end - self.start) * _BYTES_PER_SAMPLE]
        return np.frombuffer(bytes(raw), dtype="<i2").astype(np.float32) / 32768.0

    def _slice(self, values: list[float], begin: int, end: int) -> npt.NDArray[np.float64]:
        first = max(begin // FRAME_SAMPLES - self._frames_start, 0)
        last = max(end // FRAME_SAMPLES - self._frames_start, 0)
        return np.asarray(values[first:last], dtype=np.float64)

    def levels(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        return self._slice(self._levels, begin, end)

    def speech(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        return self._slice(self._speech, begin, end)

    def speech_level(self, begin: float, end: float) -> float | None:
        """The power-mean level (dBFS) of the frames between stream times `begin` and `end` the detector calls
        speech (all of them if none is), or None if that audio is no longer in the window."""
        first, last = int(begin * SAMPLE_RATE), int(end * SAMPLE_RATE) + FRAME_SAMPLES
        levels = self.levels(first, last)
        if levels.size == 0:
            return None
        speech = self.speech(first, last)[: levels.size] >= self._speech_threshold
        chosen = levels[speech] if speech.any() else levels
        return float(10.0 * np.log10(np.mean(10.0 ** (chosen / 10.0))))

    def cut(self, sample: int) -> None:
        """Drop the audio before absolute `sample`."""
        sample = min(max(sample, self.start), self.total)
        del self._pcm[: (sample - self.start) * _BYTES_PER_SAMPLE]
        self.start = sample
        keep_from = sample // FRAME_SAMPLES
        drop = max(keep_from - self._frames_start, 0)
        del self._levels[:drop]
        del self._speech[:drop]
        self._frames_start = max(self._frames_start, keep_from)

    def quietest_sample(self, begin: int, end: int) -> int:
        """The middle of the quietest 100 ms between `begin` and `end` (absolute samples): the level is exact here,
        and a cut there most likely falls between two words."""
        begin = max(begin, self.start)
        levels = self.levels(begin, end)
        if levels.size < _QUIET_FRAMES:
            return end
        power = np.convolve(10.0 ** (levels / 10.0), np.ones(_QUIET_FRAMES), mode="valid")
        first = max(begin // FRAME_SAMPLES, self._frames_start)
        best = int(np.argmin(power[::-1]))  # the latest of equally quiet places: the longest window
        frame = first + power.size - 1 - best + _QUIET_FRAMES // 2
        return min(max(frame * FRAME_SAMPLES, begin), end)


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

    def _finalize(self, count: int, now: float) -> SendFinal:
        taken, self.pending = self.pending[:count], self.pending[count:]
        # Word times come from different passes; what goes out rises, stays inside the audio and has a length.
        end = min(max(self.pending[0].start, self._emitted_until), now) if self.pending else now
        words = retimed(taken, self._emitted_until, end)
        if words:
            self._emitted_until = words[-1].end
        return SendFinal(words)

    def events(self, now: float, hypothesis: list[Word], *, force: bool = False, drain: bool = False) -> list[Event]:
        """The finals due at stream time `now` (every pending word if `force` or `drain`), then the partial if it
        changed (none when draining: nothing is left open)."""
        events: list[Event] = []
        if drain:
            if self.pending:
                events.append(self._finalize(len(self.pending), now))
            return events
        while self.pending and (count := self._due_count(now, force)):
            events.append(self._finalize(count, now))
        text = join_text(self.pending + hypothesis)
        if text != self._last_partial:
            self._last_partial = text
            events.append(SendPartial(text))
        return events


# --- the planner's steps -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wait:
    """Nothing to do until more audio (or eof) arrives."""


@dataclass(frozen=True)
class _Detect:
    pass


@dataclass(frozen=True)
class _Transcribe:
    end: int
    complete: bool
    last: bool
    cut_sample: int | None
    in_pause: bool


@dataclass(frozen=True)
class _Skip:
    """No speech up to `end`: move on without an engine call."""

    end: int
    complete: bool


@dataclass(frozen=True)
class _Finish:
    """The last pass already saw every sample (or there was no speech): what is left goes out."""


@dataclass(frozen=True)
class _DropSilence:
    """Waiting for a language with no speech yet: the silence so far is not kept."""

    sample: int


_Step = _Wait | _Detect | _Transcribe | _Skip | _Finish | _DropSilence


class StreamCore:
    """One stream: its phase, its language, and the decisions; the audio is in `AudioWindow`, the words waiting
    to go out in `FinalsPolicy`, the agreement between passes in `LocalAgreement`."""

    def __init__(self, settings: StreamSettings, language: str | None, detector: SpeechDetector | None = None) -> None:
        """`language` None: detect it on the stream's speech. `detector` is made from `settings.vad_detector`
        unless given (one per stream: it keeps state)."""
        self.settings = settings
        self.language = language
        self._language_checks = 0
        self._language_sure = language is not None
        self._utterances_since_check = 0
        self.phase = Phase.LISTENING if language is not None else Phase.WAITING_FOR_LANGUAGE
        self._window = AudioWindow(
            detector if detector is not None else make_detector(settings.vad_detector),
            settings.vad_pause_threshold,
            settings.vad_speech_threshold,
        )
        self._window.keep_speech = not self._language_sure
        self._last_pass_end = 0  # absolute sample where the last pass's window ended
        self._passes_in_window = 0  # transcriptions of the window since it was last cut
        self._agreement = LocalAgreement(settings.confirm_min_probability)
        self._finals = FinalsPolicy(settings)
        self._outstanding: Request | None = None
        self._background = BackgroundSpeech(settings.background_max_confidence, settings.background_margin_db)

    def _signal(self, signal: Signal) -> None:
        try:
            self.phase = _TRANSITIONS[(self.phase, signal)]
        except KeyError:
            raise StateError(f"{signal.name} is not expected while {self.phase.name}") from None

    # --- audio in ----------------------------------------------------------------------------------------------

    @property
    def received_seconds(self) -> float:
        return self._window.total / SAMPLE_RATE

    @property
    def buffered_seconds(self) -> float:
        return (self._window.total - self._window.start) / SAMPLE_RATE

    @property
    def lag_seconds(self) -> float:
        """Received audio that no pass has covered yet, in seconds: how far the transcription trails the stream."""
        return max(self._window.total - max(self._last_pass_end, self._window.start), 0) / SAMPLE_RATE

    @property
    def behind(self) -> bool:
        """The stream trails by at least `behind_seconds`: only utterance-ending and full-window passes run."""
        return self.lag_seconds >= self.settings.behind_seconds

    @property
    def _eof(self) -> bool:
        return self.phase in (Phase.DRAINING, Phase.FINISHED)

    def feed(self, pcm: bytes) -> None:
        """Append s16le audio of any length; an odd byte waits for the next call, so samples stay aligned.
        Raises StateError after eof."""
        if self._eof:
            raise StateError("audio after eof")
        self._window.feed(pcm)

    def end_of_stream(self) -> None:
        """No more audio will come. Raises StateError if eof came already."""
        self._signal(Signal.END_OF_STREAM)

    @property
    def finished(self) -> bool:
        """Every word went out in a final; nothing more will come. Until `poll` has handed out the last final,
        a stream that ended is not finished."""
        return self.phase is Phase.FINISHED and not self._finals.pending

    # --- the planner -------------------------------------------------------------------------------------------

    def _window_end(self) -> int:
        return min(self._window.total, self._window.start + int(self.settings.window_seconds * SAMPLE_RATE))

    def _speech_seconds(self, begin: int, end: int) -> float:
        mask = self._window.speech(begin, end) >= self.settings.vad_speech_threshold
        return float(np.count_nonzero(mask)) * FRAME_SECONDS

    def _has_speech(self, begin: int, end: int) -> bool:
        return self._speech_seconds(begin, end) >= self.settings.vad_min_speech_seconds

    def _plan(self) -> _Step:
        """What to do next, from the state alone (this changes nothing): the one answer to both "is a pass due?"
        and "which request?"."""
        window, settings = self._window, self.settings
        if self.phase is Phase.FINISHED:
            return _Wait()
        if self.language is None:
            spoken = self._speech_seconds(window.start, window.total)
            enough = window.speech_audio_seconds >= settings.detect_after_speech_seconds
            ended = window.speech_audio_seconds >= _DETECT_MIN_SECONDS and self._utterance_end(window.total) is not None
            if window.speech_audio_seconds > 0 and (enough or ended or self._eof):
                return _Detect()
            if self._eof:
                return _Finish()  # no speech at all: nothing to transcribe
            if (
                spoken < settings.vad_min_speech_seconds
                and window.total - window.start > 2 * _SILENCE_TAIL_S * SAMPLE_RATE
            ):
                return _DropSilence(window.total - int(_SILENCE_TAIL_S * SAMPLE_RATE))
            return _Wait()
        revisit = self.phase is Phase.LISTENING and not self._language_sure and self._utterances_since_check > 0
        if revisit and window.speech_audio_seconds > 0:
            return _Detect()
        end = self._window_end()
        new_audio = end - self._last_pass_end
        enough_new = new_audio >= settings.min_new_audio_seconds * SAMPLE_RATE
        # An utterance's first pass runs as soon as it holds first_pass_speech_seconds of speech: the first partial
        # comes sooner than a fixed cadence from the cut would allow.
        if not enough_new and self._passes_in_window == 0:
            enough_new = self._speech_seconds(window.start, end) >= settings.first_pass_speech_seconds
        if not self._has_speech(window.start, end):
            complete = end < window.total or self._eof
            return _Skip(end, complete) if complete or enough_new else _Wait()
        # Behind, one pass takes every utterance that ended in the window: a pass costs about the same whatever
        # audio it covers, so the backlog shrinks only when each pass covers more audio than it costs.
        behind = self.behind
        if (utterance := self._utterance_end(end, latest=behind)) is not None:
            return _Transcribe(utterance, complete=True, last=False, cut_sample=utterance, in_pause=True)
        if end < window.total:
            # A full window without a pause (a backlog, or speech running on past window_seconds): end the
            # utterance at the quietest moment near the window's end, most likely between two words. Whisper's
            # word times cannot choose the cut: they stretch over several words and lost them.
            # Never before a word already confirmed: the next window would hear it again.
            confirmed_until = int(self._agreement.confirmed_until * SAMPLE_RATE)
            quiet = window.quietest_sample(max(end - int(_QUIET_SEARCH_S * SAMPLE_RATE), confirmed_until), end)
            return _Transcribe(quiet, complete=True, last=False, cut_sample=quiet, in_pause=False)
        last = self._eof
        if not last and (not enough_new or behind):
            # Behind: no pass re-transcribes audio that a later pass will see again; the next one waits for an
            # utterance's end or a full window, so the backlog is worked off in non-overlapping windows.
            return _Wait()
        if last and new_audio <= 0:
            return _Finish()  # the previous pass already saw all the audio: its words are the last ones
        # Nothing new was said and the last pass left nothing open: no need to ask again.
        if not last and self._finals_policy_idle() and not self._has_speech(self._last_pass_end, end):
            return _Skip(end, False)
        return _Transcribe(end, complete=last, last=last, cut_sample=None, in_pause=False)

    def _finals_policy_idle(self) -> bool:
        return not (self._finals.pending or self._agreement.hypothesis)

    def _utterance_end(self, end: int, *, latest: bool = False) -> int | None:
        """A cut in the first pause after speech in the window up to `end` (absolute sample), or None; `latest`:
        in the last such pause instead.

        A pause is `pause_seconds` of frames the detector calls a pause (`short_pause_seconds` once the window is
        longer than `trim_seconds`) after at least `vad_min_speech_seconds` of speech. Cutting there never splits a
        word, unlike a cut at whisper's word times, which are imprecise by a few hundred ms; and a window that ends
        in silence gives whisper its best shot at the utterance's last words. The pass ends where the cut is: a
        pass reaching past it heard the soft onset of the next word, and that word came out twice.
        """
        window, settings = self._window, self.settings
        first_frame = -(-window.start // FRAME_SAMPLES)  # the first whole frame inside the window
        speech = window.speech(first_frame * FRAME_SAMPLES, end)
        speech_mask = speech >= settings.vad_speech_threshold
        pause_mask = speech < settings.vad_pause_threshold
        min_speech = max(1, round(settings.vad_min_speech_seconds / FRAME_SECONDS))
        pause = round(settings.pause_seconds / FRAME_SECONDS)
        short_pause = round(settings.short_pause_seconds / FRAME_SECONDS)
        trim_frame = round(settings.trim_seconds / FRAME_SECONDS)
        spoken = 0
        quiet = 0
        found: tuple[int, int] | None = None  # (speech end, pause end) in frames from first_frame
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
                found = (pause_start, index + 1)
                if not latest:
                    break
                # A pause that goes on extends this cut's room; speech after it starts a new utterance.
                spoken = 0
        if found is None:
            return None
        speech_end, pause_end = ((first_frame + frame) * FRAME_SAMPLES for frame in found)
        # The quietest moment of the pause's middle half: the detector's decision lags the sound by a frame or
        # two; the level is exact.
        quarter = (pause_end - speech_end) // 4
        return window.quietest_sample(speech_end + quarter, pause_end - quarter)

    def _voiced_frames(self, begin: int, end: int) -> npt.NDArray[np.intp]:
        """Absolute indices of the frames between samples `begin` and `end` the detector does not call a pause."""
        begin = max(begin, self._window.start)
        speech = self._window.speech(begin, end)
        return begin // FRAME_SAMPLES + np.flatnonzero(speech >= self.settings.vad_pause_threshold)

    def _speech_end(self, end: int) -> float:
        """Stream time where the last frame the detector does not call a pause ends, before `end`."""
        voiced = self._voiced_frames(self._window.start, end)
        if voiced.size == 0:
            return end / SAMPLE_RATE
        return min((int(voiced[-1]) + 2) * FRAME_SAMPLES, end) / SAMPLE_RATE

    # --- the driver's calls ------------------------------------------------------------------------------------

    def pass_due(self) -> bool:
        """Whether `next_request` has something to do (an engine call, or silence to skip)."""
        return not isinstance(self._plan(), _Wait)

    def next_request(self) -> Request | None:
        """What the engine should do next, or None when nothing is due (silence may have been skipped, or the
        stream may have finished: what is left goes out through `poll`). Raises StateError while a request is
        outstanding."""
        if self._outstanding is not None:
            raise StateError("the previous request has no answer yet")
        step = self._plan()
        window = self._window
        if isinstance(step, _Detect):
            request: Request = DetectRequest(window.speech_audio())
        elif isinstance(step, _Transcribe):
            request = TranscribeRequest(
                audio=window.audio(step.end),
                offset=window.start / SAMPLE_RATE,
                language=self.language or "",
                prompt=self._finals.prompt(),
                end_sample=step.end,
                complete=step.complete,
                last=step.last,
                cut_sample=step.cut_sample,
                cut_in_pause=step.in_pause,
                speech_end=self._speech_end(step.end),
            )
        else:
            if isinstance(step, _Skip):
                self._skip_silence(step.end, step.complete)
            elif isinstance(step, _Finish):
                self._finish()
            elif isinstance(step, _DropSilence):
                window.cut(step.sample)
            return None
        self._outstanding = request
        return request

    def apply(self, request: Request, result: Result) -> list[Event]:
        """Take the engine's answer to `request` and say what to send. Raises StateError for an answer to another
        request than the outstanding one, or of the wrong kind."""
        if request is not self._outstanding:
            raise StateError("an answer to a request that is not outstanding")
        self._outstanding = None
        if isinstance(request, DetectRequest) and isinstance(result, Detected):
            self._on_language(result)
            return []
        if isinstance(request, TranscribeRequest) and isinstance(result, list):
            return self._on_words(request, result)
        raise StateError(f"{type(result).__name__} does not answer a {type(request).__name__}")

    def poll(self) -> list[Event]:
        """Finals that became due as stream time passed (the time limit), with the partial that follows them."""
        return self._emit()

    # --- what the answers change -------------------------------------------------------------------------------

    def _on_language(self, detected: Detected) -> None:
        self._language_checks += 1
        self._utterances_since_check = 0
        if self.language is None or detected.language != self.language:
            self.language = detected.language
        self._language_sure = detected.probability >= _SURE_LANGUAGE or self._language_checks >= _LANGUAGE_CHECKS
        self._window.keep_speech = not self._language_sure
        self._signal(Signal.LANGUAGE_CHOSEN)

    def _cut(self, sample: int, *, in_pause: bool) -> None:
        """Drop audio before absolute `sample` from the window. `in_pause`: the cut lies in a pause the detector
        heard (or in silence), so what follows is new speech; otherwise it split running speech."""
        self._window.cut(sample)
        self._passes_in_window = 0
        # Every word confirmed so far lies before the cut: later passes will not see them again.
        self._agreement.new_window(self._finals.window_cut(), repeat_possible=not in_pause)
        if in_pause:
            self._utterances_since_check += 1

    def _skip_silence(self, end: int, complete: bool) -> None:
        self._last_pass_end = end
        if complete and self._eof and end >= self._window.total:
            self._finish()
        elif complete:
            # No later pass will look here again: what the last pass left open goes out as it is.
            self._force_open_words()
            self._cut(end, in_pause=True)
        elif self._finals_policy_idle():
            self._cut(end - int(_SILENCE_TAIL_S * SAMPLE_RATE), in_pause=True)

    def _finish(self) -> None:
        self._force_open_words()
        self._signal(Signal.LAST_WORDS_TAKEN)

    def _force_open_words(self) -> None:
        """The words the last pass left open go out without a second pass's agreement (no later pass will see
        their audio), unless they are background speech."""
        forced = self._agreement.force(len(self._agreement.hypothesis))
        if forced and not self._background.is_background(
            forced, self._window.speech_level(forced[0].start, forced[-1].end)
        ):
            self._finals.take(forced)

    def _take_confirmed(self, words: list[Word]) -> None:
        """Words a second pass (or one sure pass) confirmed: the talker said them, at the talker's level."""
        if words:
            self._background.heard_talker(self._window.speech_level(words[0].start, words[-1].end))
            self._finals.take(words)

    def _on_words(self, request: TranscribeRequest, words: list[Word]) -> list[Event]:
        window_end = request.end_sample / SAMPLE_RATE
        # A word cannot begin where the audio ends: whisper.cpp puts the words it invents past the audio (and the
        # loops it falls into) at the very end of the window.
        latest_start = window_end - _PAST_END_S
        shifted = without_loops(
            [
                Word(w.text, w.start + request.offset, min(w.end + request.offset, window_end), w.probability)
                for w in without_non_speech(words)
            ],
            self._paused_between,
        )
        inside = [w for w in shifted if w.start < latest_start]
        # A window that will not grow (an utterance that ended, a backlog, the last pass) has no successor to place
        # those words right: keep them (losing real words is worse than odd times), within the speech.
        absolute = within_speech(shifted, request.speech_end) if request.complete else inside
        # Times that mean something from the start: inside the audio that holds them (this window, up to the end
        # of its speech), rising, and no run stacked on one instant. Spread later (in the final), a run at the
        # window's start went into the silence before the window, and one at its end had no room left.
        holder_end = request.speech_end if request.complete and request.speech_end is not None else window_end
        holder_start = self._speech_start(int(request.offset * SAMPLE_RATE), request.end_sample)
        absolute = retimed(absolute, holder_start, max(holder_end, holder_start))
        self._last_pass_end = request.end_sample
        self._passes_in_window += 1
        self._agreement.insert(absolute, times_broken=longest_collapsed_run(shifted) >= _BROKEN_RUN_WORDS)
        settings = self.settings
        settled = window_end - settings.settled_margin_seconds if settings.settled_margin_seconds > 0 else None
        self._take_confirmed(self._agreement.confirm(settled, settings.settled_min_probability))
        if request.last:
            self._finish()
            return self._emit()
        if request.cut_sample is not None:
            # The utterance ended in a pause (or the full window was cut): all its words are as good as they get.
            self._force_open_words()
            events = self._emit(force=True)
            self._cut(request.cut_sample, in_pause=request.cut_in_pause)
            return events
        return self._emit()

    def _speech_start(self, begin: int, end: int) -> float:
        """Stream time where the first frame the detector does not call a pause begins, between absolute samples
        `begin` and `end`, less `_ONSET_S` (a soft onset comes before the detector hears it): whisper puts the
        first word of a window at the window's start, in the silence before the speech."""
        voiced = self._voiced_frames(begin, end)
        if voiced.size == 0:
            return begin / SAMPLE_RATE
        return max(int(voiced[0]) * FRAME_SAMPLES / SAMPLE_RATE - _ONSET_S, begin / SAMPLE_RATE)

    def _paused_between(self, begin: float, end: float) -> bool:
        """Whether the detector heard a pause between two stream times (a pause long enough to end the utterance
        cuts the window there anyway: this sees the shorter ones inside a window)."""
        speech = self._window.speech(int(begin * SAMPLE_RATE), int(end * SAMPLE_RATE))
        needed = round(_REPEAT_PAUSE_S / FRAME_SECONDS)
        run = 0
        for is_quiet in (speech < self.settings.vad_pause_threshold).tolist():
            run = run + 1 if is_quiet else 0
            if run >= needed:
                return True
        return False

    def _emit(self, force: bool = False) -> list[Event]:
        now = self.received_seconds
        if self.phase is Phase.FINISHED:
            events = self._finals.events(now, [], drain=True)
            self._window.cut(self._window.total)
            return events
        return self._finals.events(now, self._agreement.hypothesis, force=force)
