"""The state of one stream: its audio window, what to transcribe next, and when to send partials and finals.

A driver feeds audio as it arrives (`feed`, `end_of_stream`), asks for finals that came due as stream time passed
(`poll`), asks for the next engine call (`pass_due`, `next_request`), hands back the engine's answer
(`apply(request, result)`), and sends the events it gets. `melvin_trio.core.driver` is the reference driver. All
times are absolute stream seconds from the first audio byte. No I/O, no clock: stream time is the amount of audio
received.

Everything that changes the stream's phase is in `_TRANSITIONS`; everything that decides what to do next is in
`StreamCore._plan` (pure: it reads the state and changes nothing). The parts it uses, each in its own module:
`StreamSettings` (core/settings.py), the requests, results and events (core/events.py), how each pass decodes
(core/decoding.py: greedy, the preview's reduced context, beams for an utterance's last pass in a noisy room),
`AudioWindow` (core/window.py: the audio and each frame's level and speech probability), `LocalAgreement`
(core/agreement.py: which words two passes confirm), `FinalsPolicy` (core/finals.py: when confirmed words go out),
`BackgroundSpeech` (core/background.py), the speech detector (core/vad.py), where a pass's words go
(core/placement.py, with the repairs of core/wordtimes.py) and loop removal (core/loops.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum, auto
from typing import Final

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.agreement import LocalAgreement
from melvin_trio.core.background import TAIL_CONTEXT_S, BackgroundSpeech
from melvin_trio.core.decoding import GREEDY, PREVIEW, Decoding
from melvin_trio.core.events import (
    Detected,
    DetectRequest,
    Event,
    Request,
    Result,
    SendFinal,
    SendPartial,
    TranscribeRequest,
)
from melvin_trio.core.finals import FinalsPolicy
from melvin_trio.core.loops import without_loops
from melvin_trio.core.placement import place_pass
from melvin_trio.core.settings import StreamSettings
from melvin_trio.core.talker import ONSET_S
from melvin_trio.core.vad import FRAME_SAMPLES, FRAME_SECONDS, SpeechDetector, make_detector
from melvin_trio.core.window import AudioWindow
from melvin_trio.core.words import Word, without_non_speech
from melvin_trio.core.wordtimes import longest_collapsed_run

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

_DETECT_MIN_SECONDS: Final = 1.0  # an utterance this short ("Ja.") does not settle the language before eof
_SURE_LANGUAGE: Final = 0.8  # a guess less probable than this is checked again after the next utterance...
_LANGUAGE_CHECKS: Final = 3  # ...at most this many detections in all
_SILENCE_TAIL_S: Final = 0.5  # audio kept before the edge when silence is dropped: an onset may hide in it
_QUIET_SEARCH_S: Final = 3.0  # a full window is cut at the quietest moment of its last seconds
_BROKEN_RUN_WORDS: Final = 3  # a pass with a run this long of collapsed words: its times are not to be trusted
# Speech this long after a pass's last word is words whisper left out (a later utterance in a behind pass, or an
# utterance's tail, `_tail_retry`)...
_UNCOVERED_MIN_S: Final = 0.5
_COVER_TOLERANCE_S: Final = 0.3  # ...in a behind pass, when it begins this long after that word began (loose times)
_TAIL_RETRY_LEAD_S: Final = 3.0  # a tail whisper left out is transcribed again from this long before its last word...
_TAIL_RETRY_MARGIN_DB: Final = 6.0  # ...when its speech is at most this much under the talker's level
_NOISE_MIN_S: Final = 1.0  # the shortest window whose noise floor is measured (`_noisy`)...
_NOISE_PAUSE_S: Final = 0.3  # ...and the pause the detector must hear in it for the noise to count


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
    behind: bool = False
    preview: bool = False


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
        self._end_words_left = False  # the last pass left out words at its window's end, for a later pass to place
        self._passes_in_window = 0  # transcriptions of the window since it was last cut
        self._preview: list[Word] | None = None  # the window's preview words (None: no preview ran in it)
        self._retried_speech = -1  # absolute sample where the last speech a behind pass left out (and retried) began
        self._retried_tail = -1  # absolute sample where the last window whose tail was transcribed again ended
        self._agreement = LocalAgreement(settings.confirm_min_probability, settings.confirm_unsure_after_words)
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

    def _has_speech(self, begin: int, end: int) -> bool:
        return self._window.speech_seconds(begin, end) >= self.settings.vad_min_speech_seconds

    def _plan(self) -> _Step:
        """What to do next, from the state alone (this changes nothing): the one answer to both "is a pass due?"
        and "which request?"."""
        window, settings = self._window, self.settings
        if self.phase is Phase.FINISHED:
            return _Wait()
        if self.language is None:
            spoken = self._window.speech_seconds(window.start, window.total)
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
        first_speech = 0.0  # speech in a window no full pass has seen yet (measured only while it matters)
        if not enough_new and self._passes_in_window == 0:
            first_speech = self._window.speech_seconds(window.start, end)
            enough_new = first_speech >= settings.first_pass_speech_seconds
        if not self._has_speech(window.start, end):
            complete = end < window.total or self._eof
            return _Skip(end, complete) if complete or enough_new else _Wait()
        # Behind, one pass takes every utterance that ended in the window: a pass costs about the same whatever
        # audio it covers, so the backlog shrinks only when each pass covers more audio than it costs.
        behind = self.behind
        if (utterance := self._utterance_end(end, latest=behind)) is not None:
            return _Transcribe(utterance, complete=True, last=False, cut_sample=utterance, in_pause=True, behind=behind)
        if end < window.total:
            # A full window without a pause (a backlog, or speech running on past window_seconds): end the
            # utterance at the quietest moment near the window's end, most likely between two words. Whisper's
            # word times cannot choose the cut: they stretch over several words and lost them.
            # Never before a word already confirmed: the next window would hear it again.
            confirmed_until = int(self._agreement.confirmed_until * SAMPLE_RATE)
            quiet = window.quietest_sample(max(end - int(_QUIET_SEARCH_S * SAMPLE_RATE), confirmed_until), end)
            return _Transcribe(quiet, complete=True, last=False, cut_sample=quiet, in_pause=False, behind=behind)
        last = self._eof
        if self._preview_due(last, behind, enough_new or first_speech >= settings.preview_speech_seconds):
            return _Transcribe(end, complete=False, last=False, cut_sample=None, in_pause=False, preview=True)
        if not last and (not enough_new or behind):
            # Behind: no pass re-transcribes audio that a later pass will see again; the next one waits for an
            # utterance's end or a full window, so the backlog is worked off in non-overlapping windows.
            return _Wait()
        if last and new_audio <= 0 and not self._end_words_left:
            return _Finish()  # the previous pass already saw all the audio: its words are the last ones
        # ...unless it left words at its window's end to a later pass (a fresh tester, a sentence said twice on a
        # slow box: the last pass ended with the audio, "young man." at its very end was left out, and eof came
        # with nothing new to pass): the last pass runs again, complete, and keeps them.
        # Nothing new was said and the last pass left nothing open: no need to ask again.
        if not last and self._finals_policy_idle() and not self._has_speech(self._last_pass_end, end):
            return _Skip(end, False)
        return _Transcribe(end, complete=last, last=last, cut_sample=None, in_pause=False, behind=behind and last)

    def _preview_due(self, last: bool, behind: bool, ready: bool) -> bool:
        """Whether the window's preview is due: none ran yet, no full pass either, and it is `ready` (the first
        full pass is due, or the window holds `preview_speech_seconds` of speech while that pass waits for
        `first_pass_speech_seconds` or min_new_audio_seconds of audio)."""
        return (
            self.settings.preview_pass
            and not (last or behind)
            and self._passes_in_window == 0
            and self._preview is None
            and ready
        )

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
        first_frame, speech_mask, pause_mask = self._window.frame_masks(window.start, end)
        min_speech = max(1, round(settings.vad_min_speech_seconds / FRAME_SECONDS))
        pause = round(settings.pause_seconds / FRAME_SECONDS)
        short_pause = round(settings.short_pause_seconds / FRAME_SECONDS)
        trim_frame = round(settings.trim_seconds / FRAME_SECONDS)
        spoken = 0
        quiet = 0
        found: tuple[int, int] | None = None  # (speech end, pause end) in frames from first_frame
        for index, (is_speech, is_pause) in enumerate(zip(speech_mask, pause_mask, strict=True)):
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
        return window.cut_in_pause(speech_end, pause_end)

    def _retrying_uncovered(self, request: TranscribeRequest, words: list[Word]) -> TranscribeRequest:
        """`request`, or, when it is a behind pass after whose last word the detector heard speech no word covers,
        the same request ending (and cut) in the pause before that speech, so the next window transcribes it again.

        Given a window of several utterances, whisper sometimes stops after one that ends in a long pause (it ends
        the text with a single timestamp, and whisper.cpp skips the rest of the window): "Oh, you think darkness is
        your ally." vanished after "... what you can do for your country." and two seconds of pause. Each stretch of
        speech is retried once: whisper may never transcribe a cough or babble."""
        if not (request.behind and request.complete):
            return request
        window = self._window
        begin = max(int(request.offset * SAMPLE_RATE), window.start)
        spoken = without_non_speech(words)
        covered = request.offset + max((w.start for w in spoken), default=0.0) + _COVER_TOLERANCE_S
        uncovered = self._window.utterance_after(
            begin, request.end_sample, covered, self.settings.pause_seconds, _UNCOVERED_MIN_S
        )
        if uncovered is None or uncovered[1] <= self._retried_speech:
            return request
        pause_start, speech_start = uncovered
        self._retried_speech = speech_start
        cut = window.cut_in_pause(max(pause_start, int(covered * SAMPLE_RATE)), speech_start)
        speech_end = window.speech_end(cut)
        return replace(request, end_sample=cut, last=False, cut_sample=cut, cut_in_pause=True, speech_end=speech_end)

    def _tail_retry(self, request: TranscribeRequest, words: list[Word]) -> int | None:
        """Where to cut the window so that the utterance's tail is transcribed again (absolute sample), or None.

        Whisper sometimes ends an utterance's text early: it closes a segment with a single timestamp, which
        whisper.cpp reads as "no speech after this", and skips the rest of the window (a fresh tester, babble
        18 dB under the talker: every pass over "... how much there might be prudently in his power to do for them"
        ended at "much", its times stacked on 7.0 s, the talker speaking until 8.0 s). When the detector hears at
        least `_UNCOVERED_MIN_S` of speech after the pass's last word, at the talker's level (`_TAIL_RETRY_MARGIN_DB`;
        the talker's level is learnt from confirmed words, or else the speech the pass covered), the words so far go
        out and the window is cut `_TAIL_RETRY_LEAD_S` before that word's end (its times are the unreliable ones, so
        well before it): the next pass, prompted with those words, transcribes the tail, and the words it says
        again from before the cut, in the same words or others, are dropped (`LocalAgreement.new_window`,
        `retold`). Once per utterance (and for the stream's last pass), in a pass that was behind too (a fresh
        tester at --speed 0 lost the tail; dropped as a repeat prefix only, the retold words came back as "and the
        amount, and by then it was nothing to me but bright!" after "... nothing to me, but right!")."""
        ends_utterance = request.cut_sample is not None or request.last
        if not ends_utterance or request.end_sample <= self._retried_tail:
            return None
        spoken = without_non_speech(words)
        if not spoken:
            return None
        last_end = max(w.end for w in spoken)
        begin = int(last_end * SAMPLE_RATE)
        voiced = self._window.voiced_frames(begin, request.end_sample)
        if voiced.size * FRAME_SECONDS < _UNCOVERED_MIN_S:
            return None
        # The talker's, not the babble after the talker (at eof the window ends wherever the stream did):
        # bench.vad's babble cells at 5 and 10 dB SNR, their 2 s babble tail 7 and 11 dB under the talker, got
        # invented words from a retry; the tester's tail was 3 dB under.
        level = self._window.speech_level(begin, request.end_sample)
        talker = self._background.talker_level
        if talker is None:
            talker = self._window.speech_level(int(request.offset * SAMPLE_RATE), begin)
        if level is None or talker is None or level < talker - _TAIL_RETRY_MARGIN_DB:
            return None
        cut = max(int((last_end - _TAIL_RETRY_LEAD_S) * SAMPLE_RATE), self._window.start)
        if cut <= self._window.start:
            return None
        self._retried_tail = request.end_sample
        return cut

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
                # Behind, no prompt: prompted, whisper gave most multi-utterance windows no timestamps at all (16 of
                # 26 on en-long), so no word time could tell which speech it left out (`_retrying_uncovered`).
                prompt="" if step.behind else self._finals.prompt(),
                end_sample=step.end,
                complete=step.complete,
                last=step.last,
                cut_sample=step.cut_sample,
                cut_in_pause=step.in_pause,
                speech_end=self._window.speech_end(step.end),
                behind=step.behind,
                preview=step.preview,
                decoding=self._decoding(step),
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

    def _decoding(self, step: _Transcribe) -> Decoding:
        """Greedy, but the preview's reduced context, and `utterance_beam_size` beams for a pass that ends an
        utterance or the stream (it decides every word no two passes confirmed) in a noisy room (`_noisy`), unless
        the stream is behind."""
        if step.preview:
            return PREVIEW
        beams = self.settings.utterance_beam_size
        if step.complete and not step.behind and beams > 1 and self._noisy(step.end):
            return Decoding(beam_size=beams)
        return GREEDY

    def _noisy(self, end: int) -> bool:
        """Whether the window's speech up to absolute sample `end` is less than `noisy_snr_db` over its noise floor
        (`AudioWindow.noise_floor`; a window shorter than `_NOISE_MIN_S`: not known, so not noisy), a noise the
        detector tells from speech: it hears a pause of `_NOISE_PAUSE_S` in the window. Other talkers all around
        (babble) leave the detector no pause, and there beams latched onto them: bench.vad's babble at 0 dB SNR went
        from WER 0.25 to 0.53 (offline 0.31)."""
        window = self._window
        noise = window.noise_floor(window.start, end, _NOISE_MIN_S)
        speech = window.speech_level(window.start, end)
        if noise is None or speech is None or speech - noise >= self.settings.noisy_snr_db:
            return False
        return window.has_pause(window.start / SAMPLE_RATE, end / SAMPLE_RATE, _NOISE_PAUSE_S)

    def apply(self, request: Request, result: Result) -> list[Event]:
        """Take the engine's answer to `request` and say what to send. Raises StateError for an answer to another
        request than the outstanding one, or of the wrong kind."""
        if request is not self._outstanding:
            raise StateError("an answer to a request that is not outstanding")
        self._outstanding = None
        if isinstance(request, DetectRequest) and isinstance(result, Detected):
            self._on_language(result)
            return []
        if isinstance(request, TranscribeRequest) and isinstance(result, list) and request.preview:
            return self._on_preview(request, result)
        if isinstance(request, TranscribeRequest) and isinstance(result, list):
            return self._on_words(self._retrying_uncovered(request, result), result)
        raise StateError(f"{type(result).__name__} does not answer a {type(request).__name__}")

    def abandon(self, request: Request) -> None:
        """The engine gave no answer to `request` (the call was aborted past its time limit): nothing changes but
        that it is no longer outstanding, so its audio stays in the window and the next request covers it again.
        Raises StateError if `request` is not the outstanding one."""
        if request is not self._outstanding:
            raise StateError("abandoning a request that is not outstanding")
        self._outstanding = None

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

    def _cut(self, sample: int, *, in_pause: bool, retold: bool = False) -> None:
        """Drop audio before absolute `sample` from the window. `in_pause`: the cut lies in a pause the detector
        heard (or in silence), so what follows is new speech; otherwise it split running speech. `retold`: the cut
        lies before the last words sent (`_tail_retry`), whose audio the next passes hear again."""
        self._window.cut(sample)
        self._passes_in_window = 0
        self._preview = None
        # Every word confirmed so far lies before the cut (or, retold, is heard again): later passes drop them.
        self._agreement.new_window(self._finals.window_cut(), repeat_possible=not in_pause, retold=retold)
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
        if not forced:
            return  # most cuts: no level to measure
        level = self._window.speech_level()
        if self._background.is_background(forced, level):
            return
        talker, tail = self._background.unsure_tail(forced)
        if self._background.is_sure(talker):
            # Without this, a stream in which agreement confirmed nothing (all of it a backlog) never learned its
            # talker's level, and the rule never judged its faint tail (a fresh tester: "it would be good to go."
            # on 2 s of babble after the talker, at --speed 0).
            self._background.heard_talker(level)
        if tail:
            # The window's level is the talker's wherever the talker spoke in it (a pass that was behind holds
            # the talker and the babble after it; an utterance's last pass holds words already confirmed), so the
            # unsure tail is judged by the audio under its own words too (a fresh tester: "I'm" at 0.37 on a
            # babble-only tail 1.2 s after the talker).
            begin = int((tail[0].start - TAIL_CONTEXT_S) * SAMPLE_RATE)
            tail_level = self._window.speech_level(begin, int(tail[-1].end * SAMPLE_RATE))
            if self._background.is_background(tail, tail_level):
                forced = talker
        self._finals.take(forced)

    def _take_confirmed(self, words: list[Word]) -> None:
        """Words a second pass (or one sure pass) confirmed: the talker said them, and the window's speech is at
        the talker's level, unless they are background speech: two passes over the same babble agree as readily
        (a fresh tester, babble 15 dB under the talker: "And" confirmed on the babble after the talker, whose
        level then counted as the talker's)."""
        if not words:
            return
        level = self._window.speech_level()
        if self._background.is_background(words, level):
            return
        self._background.heard_talker(level)
        self._finals.take(words)

    def _on_words(self, request: TranscribeRequest, words: list[Word]) -> list[Event]:
        window_end = request.end_sample / SAMPLE_RATE
        shifted = self._heard(request, words)
        talker = self._background.talker_level
        placed = place_pass(request, shifted, self._window, talker, self.settings.pause_seconds)
        self._end_words_left = placed.end_words_left
        self._last_pass_end = request.end_sample
        self._passes_in_window += 1
        self._agreement.insert(placed.words, times_broken=longest_collapsed_run(shifted) >= _BROKEN_RUN_WORDS)
        settings = self.settings
        settled = window_end - settings.settled_margin_seconds if settings.settled_margin_seconds > 0 else None
        trusted = None
        if not request.complete and talker is not None and placed.span is not None:
            trusted = placed.span.trusted_until(request.end_sample, placed.words)
        self._take_confirmed(self._agreement.confirm(settled, settings.settled_min_probability, trusted, placed.onset))
        retry = self._tail_retry(request, shifted)
        if request.last and retry is None:
            self._finish()
            return self._emit()
        if request.cut_sample is not None or retry is not None:
            # The utterance ended in a pause (or the full window was cut, or the stream ended): all its words are
            # as good as they get. Whisper sometimes ends this pass early, agreeing with the pass before up to a
            # word and silent after it (a fresh tester, babble 18 dB under the talker: every pass ended at "there
            # might be", and the words the pass before had after "much" never went out). They were heard in this
            # speech: kept.
            self._agreement.keep_stopped_short(placed.holder_end)
            self._force_open_words()
            events = self._emit(force=True)
            if retry is not None:
                self._cut(retry, in_pause=False, retold=True)
                self._last_pass_end = retry  # the tail is audio no pass has taken: the next pass (or the last) is due
            elif request.cut_sample is not None:
                self._cut(request.cut_sample, in_pause=request.cut_in_pause)
            return events
        return self._emit()

    def _heard(self, request: TranscribeRequest, words: list[Word]) -> list[Word]:
        """A pass's `words` in stream time, none ending past its window, without non-speech tokens and loops."""
        window_end = request.end_sample / SAMPLE_RATE
        return without_loops(
            [
                Word(w.text, w.start + request.offset, min(w.end + request.offset, window_end), w.probability)
                for w in without_non_speech(words)
            ],
            self._window.has_pause,
        )

    def _on_preview(self, request: TranscribeRequest, words: list[Word]) -> list[Event]:
        """A preview's words become the partial until the window's first full pass answers; none is confirmed, and
        the preview does not count as a pass (the full pass follows at once). No more is done to their times: a
        reduced encoder context stacks them on the window's end, and only the text is shown."""
        self._preview = self._heard(request, words)
        return self._emit()

    def _emit(self, force: bool = False) -> list[Event]:
        now = self.received_seconds
        # No final word lies after the speech heard so far: words of different passes go out in text order, and
        # rising from word to word they were pushed into the silence after the speech (a fresh tester's file:
        # "Death" from one pass at 22.18-22.51, then "he is with us." from another at 21.52-22.46, sent at
        # 22.51-23.25 with the speech ending at 22.7).
        speech_until = self._window.speech_end(self._window.total) + ONSET_S
        if self.phase is Phase.FINISHED:
            events = self._finals.events(now, [], drain=True, speech_until=speech_until)
            self._window.cut(self._window.total)
            return events
        # Until the window's first full pass answers, its preview (if any) is what the partial shows.
        shown = self._agreement.hypothesis if self._passes_in_window or self._preview is None else self._preview
        return self._finals.events(now, shown, force=force, speech_until=speech_until)
