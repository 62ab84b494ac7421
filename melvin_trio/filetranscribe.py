"""Offline transcription of a whole file: 30 s windows, each conditioned on the text before it, as whisper does.

Only speech is decoded: the streams' trained speech detector finds it (`speech_regions`), and windows cover it and
nothing else, so whisper never hears long silence, noise or music alone (it invents words there). The language, when
not given, is detected on that speech too. Each stretch of speech is cut into windows of at most `WINDOW_SECONDS`,
each cut at the quietest 100 ms of the window's last `CUT_SEARCH_SECONDS` (a pause, so no word is split), and each
window is decoded with the tail of the text so far as its prompt. Cutting ahead of time rather than seeking by
whisper's last timestamp (whisper's own loop, which whisper.cpp's `whisper_full` also runs inside one call) makes
every window a separate engine call: a file job yields the engine to live streams between windows, and its progress
is the share of windows done.

`FileTranscription` is the sans-IO plan (the language detection, which window next, what prompt, the words so far);
`run` drives it with an engine directly (the CLI), `server/jobs.py` drives it through the shared engine workers.

Time bound: a window decoded with beam search and temperature fallback gets `window_budget(seconds)`; past it the
call is aborted and the window decoded greedily without fallback, which costs about one pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from melvin_trio.core.events import DetectRequest
from melvin_trio.core.settings import StreamSettings
from melvin_trio.core.vad import FRAME_SAMPLES, FRAME_SECONDS, frame_energies_db, make_detector, pause_runs
from melvin_trio.core.words import Word, join_text, without_non_speech
from melvin_trio.core.wordtimes import after_onset, onto_stretched, out_of_pauses, outside_pauses, pushed
from melvin_trio.engine.base import SAMPLE_RATE, AbortCheck, Audio, Decoding, Engine, EngineAborted

WINDOW_SECONDS: Final = 30.0
CUT_SEARCH_SECONDS: Final = 5.0
# A stretch of speech longer than a window leaves at least this much to its last window: whisper, given the last
# 0.85 s of Batman (a word's end and the silence after it) as a window of its own, looped "I'm not a man" (a fresh
# tester's file).
MIN_LAST_WINDOW_SECONDS: Final = 2.0
_CUT_FRAME: Final = 1600  # 100 ms
PROMPT_CHARS: Final = 200
_STREAMING: Final = StreamSettings()  # the default speech detector and its thresholds
# Where a stretch of speech starts. Silero's decision can lag the sound by well over a second (a Common Voice German
# clip at -35 dBFS scores 0.1-0.25 for its first 1.5 s), and whisper, given a sentence without its start, may drop
# the whole sentence (de-long: "Die Beamten gehen nun verstärkt ..." lost with a fixed 1 s lead). But a fixed 2 s
# lead of noise before speech drew JFK's first words 1.6 s early into it. So the level places the onset: within
# ONSET_SEARCH_SECONDS before the detector's first speech frame, the first frame ONSET_RISE_DB over the quietest
# tenth of those frames (the detector decides that there is speech; the level, where). Decoding starts
# ONSET_LEAD_SECONDS before the onset: whisper hears a first word better after some quiet (0.3 s cost 3 errors on
# the 24 English clips, each a file: "Cat" -> "Kat", "Frere" -> "Freer"; 1.0 s: the same words as the whole clip),
# and no word is placed before the onset.
ONSET_SEARCH_SECONDS: Final = 2.0
ONSET_RISE_DB: Final = 12.0
ONSET_LEAD_SECONDS: Final = 1.0
SPEECH_TAIL_SECONDS: Final = 1.0  # kept after a stretch's last speech frame (its last word's fading end)
# But no word of a stretch ends later than this after its last speech frame: whisper stretches the last word to the
# window's end ("delightful.@3.02-4.33", the talker silent from 3.85 s and the detector's last speech frame ending
# at 3.97 s; a fresh tester). The detector's decision trails the sound's end (0.1-0.2 s on the tester's files).
SPEECH_END_MARGIN_SECONDS: Final = 0.1
# Non-speech shorter than this stays inside a window: whisper reads ordinary pauses, and each cut costs it context
# (de-long, base, beam search: 27 errors in 166 words with 5 s, as with no speech detection at all; 31 with 3 s).
# Longer non-speech (silence, noise, music) is left out, since whisper invents words on it ("Thank you.").
SPEECH_GAP_SECONDS: Final = 5.0
# Language detection hears at most this much of the file's speech: whisper's own detection reads one 30 s window.
DETECT_SECONDS: Final = 30.0
# A beam + fallback decode may take this long per second of window, plus a constant, before it is redone greedily.
BUDGET_PER_SECOND: Final = 2.0
BUDGET_BASE_SECONDS: Final = 20.0
# A window whose text holds fewer words than this per second of its speech lost most of it (whisper closed the
# text early): it is split at its longest pause and each half decoded again. Measured per window, in words per
# second of detected speech: en-long 2.5-4.2 (3.2 in all), de-long with base 1.75-3.5 (2.2 in all); the tester's
# window that lost Batman's 20 s: 0.57, and 1.1 when cut 5 s earlier (so 1.25, not 1.0).
SPARSE_WORDS_PER_SECOND: Final = 1.25
SPARSE_MIN_SPEECH_SECONDS: Final = 4.0
# A window whose words stop before a pause after which this much of it is not in a pause is cut in that pause, and
# the rest is asked for as a window of its own (`_split_uncovered`). As streams do (`core/stream.py`, the uncovered
# speech of a behind pass), 0.5 s: one short word.
UNCOVERED_MIN_SPEECH_SECONDS: Final = 0.5
# Segments: a new one after a sentence end, a pause this long, or this many words.
SEGMENT_PAUSE_SECONDS: Final = 1.0
SEGMENT_MAX_WORDS: Final = 40


def window_budget(seconds: float) -> float:
    return BUDGET_BASE_SECONDS + BUDGET_PER_SECOND * seconds


@dataclass(frozen=True)
class SpeechRegion:
    """A stretch of a file's speech, in samples: decoded from `start` to `end`; its sound rises at `onset` (no word
    is placed before it: whisper draws a first word back to its window's start); its last speech frame ends at
    `speech_end` (no word lasts long after it, SPEECH_END_MARGIN_SECONDS)."""

    start: int
    onset: int
    end: int
    speech_end: int


Detected = tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]  # per 32 ms frame: speech probability, dBFS


def detect(audio: Audio, settings: StreamSettings = _STREAMING) -> Detected:
    """The speech probability (`settings.vad_detector`, one state over the whole file) and the level of every whole
    frame of `audio`. Raises ValueError for an unknown detector. CPU-bound: Silero took 0.30 s for 51 s of audio."""
    n = audio.size // FRAME_SAMPLES
    frames = audio[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
    if n == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float64)
    return make_detector(settings.vad_detector).probabilities(frames), frame_energies_db(frames)


def pauses(detected: Detected, settings: StreamSettings = _STREAMING) -> list[tuple[float, float]]:
    """(start, end) in seconds of each run of at least `settings.pause_seconds` of frames under
    `settings.vad_pause_threshold`: the pauses no word's time may span (as in streams, `outside_pauses`)."""
    needed = max(round(settings.pause_seconds / FRAME_SECONDS), 1)
    runs = pause_runs(detected[0], settings.vad_pause_threshold, needed)
    return [(a * FRAME_SECONDS, b * FRAME_SECONDS) for a, b in runs]


def speech_regions(
    audio: Audio, settings: StreamSettings = _STREAMING, detected: Detected | None = None
) -> list[SpeechRegion]:
    """The stretches of `audio` that hold speech, in order and apart: the streams' speech detector
    (`settings.vad_detector`, one state over the whole file) at `settings.vad_speech_threshold`; runs of speech
    frames less than SPEECH_GAP_SECONDS apart are one region, a region needs `settings.vad_min_speech_seconds` of
    speech frames; each is decoded from ONSET_LEAD_SECONDS before its onset (see ONSET_SEARCH_SECONDS) to
    SPEECH_TAIL_SECONDS after its last speech frame (within the audio). `detected`: `detect(audio, settings)`, when
    already run. Raises ValueError for an unknown detector.

    Every window of a file is decided by the trained detector, whatever the level: a window decoded because it was
    louder than -50 dBFS turned 40 s of white noise at that level into invented words, and placed real words inside
    it (a fresh tester)."""
    probabilities, levels = detect(audio, settings) if detected is None else detected
    speech = np.flatnonzero(probabilities >= settings.vad_speech_threshold)
    if speech.size == 0:
        return []
    gap_frames = round(SPEECH_GAP_SECONDS / FRAME_SECONDS)
    min_frames = max(1, round(settings.vad_min_speech_seconds / FRAME_SECONDS))
    breaks = np.flatnonzero(np.diff(speech) > gap_frames)
    firsts = np.concatenate(([0], breaks + 1))
    lasts = np.concatenate((breaks, [speech.size - 1]))
    tail = round(SPEECH_TAIL_SECONDS * SAMPLE_RATE)
    lead = round(ONSET_LEAD_SECONDS * SAMPLE_RATE)
    regions: list[SpeechRegion] = []
    for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
        if last - first + 1 < min_frames:
            continue  # a blip in noise, not speech
        onset = _onset(levels, int(speech[first])) * FRAME_SAMPLES
        speech_end = min((int(speech[last]) + 1) * FRAME_SAMPLES, audio.size)
        end = min(speech_end + tail, audio.size)
        if regions and onset - lead <= regions[-1].end:
            regions[-1] = SpeechRegion(regions[-1].start, regions[-1].onset, end, speech_end)
        else:
            regions.append(SpeechRegion(max(onset - lead, 0), onset, end, speech_end))
    return regions


def _onset(levels: npt.NDArray[np.float64], first_speech: int) -> int:
    """The frame where the speech the detector first hears at frame `first_speech` starts (ONSET_SEARCH_SECONDS)."""
    low = max(first_speech - round(ONSET_SEARCH_SECONDS / FRAME_SECONDS), 0)
    before = levels[low:first_speech]
    if before.size == 0:
        return first_speech
    loud = np.flatnonzero(before >= np.percentile(before, 10) + ONSET_RISE_DB)
    return low + int(loud[0]) if loud.size else first_speech


def plan_windows(
    samples: int, audio: Audio | None = None, regions: list[SpeechRegion] | None = None
) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering each of `regions` (default: the whole of `samples`), each at most
    WINDOW_SECONDS; a region longer than that is cut at the quietest 100 ms of each window's last CUT_SEARCH_SECONDS
    when `audio` is given, else at the window's end, and never less than MIN_LAST_WINDOW_SECONDS before the
    region's end."""
    window = int(WINDOW_SECONDS * SAMPLE_RATE)
    search = int(CUT_SEARCH_SECONDS * SAMPLE_RATE)
    least = int(MIN_LAST_WINDOW_SECONDS * SAMPLE_RATE)
    windows: list[tuple[int, int]] = []
    for start, stop in [(0, samples)] if regions is None else [(r.start, r.end) for r in regions]:
        while start < stop:
            end = min(start + window, stop)
            if end < stop:
                end = min(end, stop - least)  # what is left is a window whisper can read
            if end < stop and audio is not None:
                region = audio[end - search : end].astype(np.float64)
                n = region.size // _CUT_FRAME
                power = np.mean(region[: n * _CUT_FRAME].reshape(n, _CUT_FRAME) ** 2, axis=1)
                end = end - search + int(np.argmin(power)) * _CUT_FRAME + _CUT_FRAME // 2
            windows.append((start, end))
            start = end
    return windows


def speech_sample(audio: Audio, regions: list[SpeechRegion], seconds: float = DETECT_SECONDS) -> Audio:
    """The first `seconds` of the speech in `regions` (from each one's onset), joined."""
    limit = int(seconds * SAMPLE_RATE)
    parts: list[Audio] = [audio[:0]]
    for region in regions:
        parts.append(audio[region.onset : min(region.end, region.onset + limit)])
        limit -= parts[-1].size
        if limit <= 0:
            break
    return np.concatenate(parts)


@dataclass(frozen=True)
class WindowRequest:
    """One engine call of a file: the window's audio, where it starts in the file, and how to decode it."""

    index: int
    audio: Audio
    offset: float
    language: str
    prompt: str
    decoding: Decoding


@dataclass
class FileTranscription:
    """The plan of one file's transcription: where its speech is (`speech`), the windows that cover it, the language
    (detected on the speech when `language` is None), and the words so far. Drive it with `next_request`: answer a
    DetectRequest with `detected`, a WindowRequest with `add`. Audio outside `speech` never reaches the engine."""

    audio: Audio
    language: str | None
    decoding: Decoding
    initial_prompt: str = ""
    settings: StreamSettings = _STREAMING  # the speech detector's, as the streams of the same config use them
    words: list[Word] = field(default_factory=list)
    speech: list[SpeechRegion] = field(init=False)
    windows: list[tuple[int, int]] = field(init=False)
    language_probability: float | None = None  # set when the language was detected
    done_windows: int = 0

    def __post_init__(self) -> None:
        """Finds the speech and plans its windows (CPU-bound, see `speech_regions`: the server builds the plan in a
        thread). Raises ValueError for an unknown detector."""
        detected = detect(self.audio, self.settings)
        self._speech_frames = detected[0] >= self.settings.vad_speech_threshold
        self._progress = 0.0
        self.speech = speech_regions(self.audio, self.settings, detected)
        self._pauses = pauses(detected, self.settings)
        self._levels = detected[1]  # where the speech after a pause rises (`_audio_start`)
        self.windows = plan_windows(self.audio.size, self.audio, self.speech)
        onsets = {region.start: region.onset for region in self.speech}
        self._first_word = [onsets.get(start, start) / SAMPLE_RATE for start, _ in self.windows]
        # After a stretch's speech, from SPEECH_END_MARGIN_SECONDS past its last speech frame to its end: no word
        # spans it, and a word whisper placed wholly in it is moved back, as into any pause.
        margin = SPEECH_END_MARGIN_SECONDS
        self._tails = {
            region.end: (region.speech_end / SAMPLE_RATE + margin, region.end / SAMPLE_RATE)
            for region in self.speech
            if region.end / SAMPLE_RATE > region.speech_end / SAMPLE_RATE + margin
        }

    @property
    def finished(self) -> bool:
        """Every window done; the language known, or nothing to detect it on (no speech: it stays None)."""
        return (self.language is not None or not self.speech) and self.done_windows >= len(self.windows)

    @property
    def progress(self) -> float:
        """The share of windows done, 0-1; it never goes back when a window is split in two."""
        return self._progress if self.windows else 1.0

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def next_request(self) -> DetectRequest | WindowRequest | None:
        """The language detection first (when no language was given), then each window in turn; None when done."""
        if self.finished:
            return None
        if self.language is None:
            return DetectRequest(speech_sample(self.audio, self.speech))
        start, end = self.windows[self.done_windows]
        start = self._audio_start(start, end)
        return WindowRequest(
            index=self.done_windows,
            audio=self.audio[start:end],
            offset=start / SAMPLE_RATE,
            language=self.language,
            prompt=self._prompt(),
            decoding=self.decoding,
        )

    def detected(self, language: str, probability: float) -> None:
        """The answer to the DetectRequest."""
        self.language = language
        self.language_probability = probability

    def add(self, request: WindowRequest, words: list[Word]) -> None:
        """The words of `request`'s window (window seconds), or, when whisper skipped most of its speech, nothing:
        the window is split in two at its longest pause, and each half asked for in turn (`_split_sparse`).
        Raises ValueError for an answer to any window but the next."""
        if request.index != self.done_windows:
            raise ValueError(f"window {request.index} answered while window {self.done_windows} was expected")
        if self._split_sparse(request.index, words):
            return
        self._split_uncovered(request, words)
        end = self.windows[request.index][1] / SAMPLE_RATE
        onset = self._speech_onset(self._first_word[request.index])
        begin = min(max(self.words[-1].end if self.words else 0.0, onset), end)
        inside: list[Word] = []
        floor = begin
        for shifted in after_onset([word.shifted(request.offset) for word in words], onset):
            start = min(max(shifted.start, floor), end)
            inside.append(Word(shifted.text, start, min(max(shifted.end, start), end), shifted.probability))
            floor = start
        # Rising, none of zero length, each moved as little as it can: a run whisper collapsed onto one instant is
        # spread forwards from it (the streams' backwards spreading, made for runs stacked on a window's end,
        # moved a file's words collapsed onto a clip's start into the pause before it).
        # No word spans a pause either (a fresh tester: "... he is with us. Produced" placed over 3 s of silence),
        # and none lies inside one (whisper drifted "he is with us." wholly into it).
        # A pause the detector heard up to the window's last whole frame reaches its end: whisper stacked
        # "century may justly be considered as the invention of the art of printing." in the 30 ms after it (a
        # fresh tester's file, the pause at 47.26-48.22 s, the file ending at 48.25 s).
        nearby = [(a, end if b >= end - FRAME_SECONDS else b) for a, b in self._pauses if b > begin and a < end]
        tail = self._tails.get(self.windows[request.index][1])
        if tail is not None and not any(a < tail[1] and b > tail[0] for a, b in nearby):
            nearby.append(tail)
        placed = out_of_pauses(outside_pauses(inside, nearby), nearby, end)
        self.words.extend(pushed(onto_stretched(placed), begin, end))
        self.done_windows += 1
        self._progress = max(self._progress, self.done_windows / len(self.windows))

    def _audio_start(self, start: int, end: int) -> int:
        """Where the audio of the window [start, end) (samples) begins: `start`, or, when that lies in a pause,
        ONSET_LEAD_SECONDS before the onset of the speech after it, as a region's first window does. Whisper
        stretched the first word of a window that began 2.9 s before its speech over that silence, placed every
        later word up to 3 s late and stacked the last sentence on the window's end (five clips with 3 s of silence
        between them, tiny.en, file decoding)."""
        pause = self._pause_at(start / SAMPLE_RATE)
        if pause is None:
            return start
        # The speech after the pause begins where its level rises, as a region's onset, or at the pause's end.
        onset = min(
            round(pause[1] * SAMPLE_RATE), _onset(self._levels, round(pause[1] / FRAME_SECONDS)) * FRAME_SAMPLES
        )
        return min(max(start, onset - round(ONSET_LEAD_SECONDS * SAMPLE_RATE)), end)

    def _pause_at(self, seconds: float) -> tuple[float, float] | None:
        """The detector's pause (start, end in seconds) that holds `seconds`, or None."""
        return next(((a, b) for a, b in self._pauses if a <= seconds < b), None)

    def _speech_onset(self, first_word: float) -> float:
        """Where a window's speech begins, in seconds: `first_word` (its region's onset by level, or its start), or
        the end of the detector's pause that holds it. A region's onset by level can fall on the sound before the
        talker (a recording's own lead-in hiss after digital silence: 0.99 s, the talker at 1.41 s), and words
        clamped to it or pushed out of the pause after it were squeezed to 50 ms each ("Captain Freer says" at
        1.41-1.56 s; a fresh tester)."""
        pause = self._pause_at(first_word)
        return first_word if pause is None else pause[1]

    def _split_sparse(self, index: int, words: list[Word]) -> bool:
        """Whether window `index`, answered with `words`, was split: whisper gave fewer than
        SPARSE_WORDS_PER_SECOND words per second of its speech (the detector's speech frames; at least
        SPARSE_MIN_SPEECH_SECONDS of them), and it has a pause of `settings.pause_seconds` or more inside to split
        at (the middle of the longest). Whisper sometimes closes a window's text early with a timestamp at its end
        and stretches the few words it said over all of it (a fresh tester: "In the valley of the shadow of Death
        he is with us." then 3 s of silence and Batman's 20 s: 12 words over 29.8 s, Batman's speech never
        transcribed, "of the Shadow of Death" placed in it)."""
        start, end = self.windows[index]
        first, last = start // FRAME_SAMPLES, end // FRAME_SAMPLES
        speech_seconds = float(np.count_nonzero(self._speech_frames[first:last])) * FRAME_SECONDS
        if speech_seconds < SPARSE_MIN_SPEECH_SECONDS:
            return False
        if len(without_non_speech(words)) >= SPARSE_WORDS_PER_SECOND * speech_seconds:
            return False
        inside = [(a, b) for a, b in self._pauses if start / SAMPLE_RATE < a and b < end / SAMPLE_RATE]
        if not inside:
            return False
        a, b = max(inside, key=lambda pause: pause[1] - pause[0])
        self._split_at(index, round((a + b) / 2 * SAMPLE_RATE))
        return True

    def _split_uncovered(self, request: WindowRequest, words: list[Word]) -> None:
        """Cut `request`'s window, answered with `words` (window seconds), in the first pause after its last word's
        start that is followed, within the window, by at least UNCOVERED_MIN_SPEECH_SECONDS outside the detector's
        pauses, and add the rest as the next window: whisper ended the window's text early and skipped that speech.
        Its words stay.

        Whisper, decoding with beams, closes a window's text with a timestamp at times and whisper.cpp skips the
        rest (a fresh tester: base, three German sentences, the third, 3.4 s of speech after a pause, missing from
        the transcript; greedy kept it). Unlike `_split_sparse`, the window said much: only its tail is asked
        again, prompted with its text. A window with no words is `_split_sparse`'s."""
        spoken = without_non_speech(words)
        if not spoken:
            return
        index = request.index
        start, end = self.windows[index]
        covered = request.offset + max(w.start for w in spoken)
        stop = end / SAMPLE_RATE
        for a, b in self._pauses:
            if b <= covered or a * SAMPLE_RATE <= start or b >= stop:
                continue
            # Speech is what no pause holds: the detector was unsure of that sentence (probability above the pause
            # threshold, mostly under the speech threshold), and 0.67 s of its 3.4 s passed the speech threshold.
            paused = sum(min(y, stop) - max(x, b) for x, y in self._pauses if y > b and x < stop)
            if stop - b - paused >= UNCOVERED_MIN_SPEECH_SECONDS:
                self._split_at(index, round((max(a, covered) + b) / 2 * SAMPLE_RATE))
                return

    def _split_at(self, index: int, cut: int) -> None:
        """Window `index` becomes two at sample `cut` (in a pause); the second's words begin no earlier than it."""
        start, end = self.windows[index]
        self.windows[index : index + 1] = [(start, cut), (cut, end)]
        self._first_word[index + 1 : index + 1] = [cut / SAMPLE_RATE]

    def _prompt(self) -> str:
        text = join_text(self.words).strip()
        if not text:
            return self.initial_prompt
        tail = text[-PROMPT_CHARS:]
        return tail[tail.find(" ") + 1 :] if len(text) > PROMPT_CHARS and " " in tail else tail


def decode_window(
    engine: Engine, request: WindowRequest, abort: AbortCheck | None = None, budget: float | None = None
) -> list[Word]:
    """One window with its decoding, bounded by `budget` seconds (default `window_budget`); past it, again
    greedily without fallback.

    Raises EngineAborted when `abort` asks, or EngineError."""
    seconds = request.audio.size / SAMPLE_RATE
    if request.decoding.beam_size <= 1 and request.decoding.temperature_inc <= 0:
        return engine.transcribe(
            request.audio, language=request.language, prompt=request.prompt, abort=abort, decoding=request.decoding
        )
    deadline = time.monotonic() + (window_budget(seconds) if budget is None else budget)

    def over_budget() -> bool:
        return time.monotonic() > deadline or (abort is not None and abort())

    try:
        return engine.transcribe(
            request.audio,
            language=request.language,
            prompt=request.prompt,
            abort=over_budget,
            decoding=request.decoding,
        )
    except EngineAborted:
        if abort is not None and abort():
            raise
    return engine.transcribe(
        request.audio,
        language=request.language,
        prompt=request.prompt,
        abort=abort,
        decoding=greedy_of(request.decoding),
    )


def greedy_of(decoding: Decoding) -> Decoding:
    """The same task decoded greedily without fallback: about one pass, the bound of a window past its time."""
    return Decoding(translate=decoding.translate)


def run(engine: Engine, plan: FileTranscription) -> FileTranscription:
    """Drives `plan` to its end with `engine` directly (the CLI; the server drives plans through its workers).
    Raises EngineError."""
    while (request := plan.next_request()) is not None:
        if isinstance(request, DetectRequest):
            plan.detected(*engine.detect_language(request.audio))
        else:
            plan.add(request, decode_window(engine, request))
    return plan


def transcribe_file(
    engine: Engine,
    audio: Audio,
    *,
    language: str | None,
    decoding: Decoding,
    initial_prompt: str = "",
    settings: StreamSettings = _STREAMING,
) -> list[Word]:
    """Every word of `audio`, window by window (see the module docstring); the language detected on its speech when
    `language` is None. Raises EngineError."""
    return run(engine, FileTranscription(audio, language, decoding, initial_prompt, settings)).words


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    words: list[Word]


def segments(words: list[Word]) -> list[Segment]:
    """Words grouped into segments: a new one after a sentence end, a pause of SEGMENT_PAUSE_SECONDS, or
    SEGMENT_MAX_WORDS words."""
    out: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and (
            current[-1].ends_sentence
            or word.start - current[-1].end >= SEGMENT_PAUSE_SECONDS
            or len(current) >= SEGMENT_MAX_WORDS
        ):
            out.append(_segment(current))
            current = []
        current.append(word)
    if current:
        out.append(_segment(current))
    return out


def _segment(words: list[Word]) -> Segment:
    return Segment(join_text(words), words[0].start, words[-1].end, list(words))


def transcript_json(words: list[Word]) -> dict[str, Any]:
    """The original Melvin ASR's transcript: `text`, and `segments` of `text`, `start`, `end` and `words`
    (`text`, `start`, `end`, `probability`)."""
    return {
        "text": join_text(words),
        "segments": [
            {
                "text": s.text,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "words": [
                    {
                        "text": w.text,
                        "start": round(w.start, 3),
                        "end": round(w.end, 3),
                        "probability": round(w.probability, 4),
                    }
                    for w in s.words
                ],
            }
            for s in segments(words)
        ],
    }


def words_from_transcript(transcript: dict[str, Any]) -> list[Word]:
    return [
        Word(str(w["text"]), float(w["start"]), float(w["end"]), float(w["probability"]))
        for s in transcript.get("segments", [])
        for w in s.get("words", [])
    ]
