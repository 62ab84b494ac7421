"""Offline transcription of a whole file: 30 s windows, each conditioned on the text before it, as whisper does.

The audio is cut into windows of at most `WINDOW_SECONDS`, each cut at the quietest 100 ms of the window's last
`CUT_SEARCH_SECONDS` (a pause, so no word is split), and each window is decoded with the tail of the text so far as
its prompt. Cutting ahead of time rather than seeking by whisper's last timestamp (whisper's own loop, which
whisper.cpp's `whisper_full` also runs inside one call) makes every window a separate engine call: a file job
yields the engine to live streams between windows, and its progress is the share of windows done.

`FileTranscription` is the sans-IO plan (which window next, what prompt, the words so far); `transcribe_file`
drives it with an engine directly (the CLI), `server/jobs.py` drives it through the shared engine workers.

Time bound: a window decoded with beam search and temperature fallback gets `window_budget(seconds)`; past it the
call is aborted and the window decoded greedily without fallback, which costs about one pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from melvin_trio.core.settings import StreamSettings
from melvin_trio.core.vad import FRAME_SAMPLES, FRAME_SECONDS, make_detector
from melvin_trio.core.words import Word, join_text
from melvin_trio.engine.base import SAMPLE_RATE, AbortCheck, Audio, Decoding, Engine, EngineAborted

WINDOW_SECONDS: Final = 30.0
CUT_SEARCH_SECONDS: Final = 5.0
_CUT_FRAME: Final = 1600  # 100 ms
PROMPT_CHARS: Final = 200
# A window with a 100 ms stretch louder than this is decoded; a quieter one only if the speech detector hears speech
# in it (whisper invents words on silence and faint noise).
SILENCE_DBFS: Final = -50.0
_STREAMING: Final = StreamSettings()  # the speech detector's thresholds, as streams use them
# A beam + fallback decode may take this long per second of window, plus a constant, before it is redone greedily.
BUDGET_PER_SECOND: Final = 2.0
BUDGET_BASE_SECONDS: Final = 20.0
# Segments: a new one after a sentence end, a pause this long, or this many words.
SEGMENT_PAUSE_SECONDS: Final = 1.0
SEGMENT_MAX_WORDS: Final = 40


def window_budget(seconds: float) -> float:
    return BUDGET_BASE_SECONDS + BUDGET_PER_SECOND * seconds


def plan_windows(samples: int, audio: Audio | None = None) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering `samples`, each at most WINDOW_SECONDS; cut at the quietest 100 ms of
    each window's last CUT_SEARCH_SECONDS when `audio` is given, else at the window's end."""
    window = int(WINDOW_SECONDS * SAMPLE_RATE)
    search = int(CUT_SEARCH_SECONDS * SAMPLE_RATE)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < samples:
        end = min(start + window, samples)
        if end < samples and audio is not None:
            region = audio[end - search : end].astype(np.float64)
            n = region.size // _CUT_FRAME
            power = np.mean(region[: n * _CUT_FRAME].reshape(n, _CUT_FRAME) ** 2, axis=1)
            end = end - search + int(np.argmin(power)) * _CUT_FRAME + _CUT_FRAME // 2
        windows.append((start, end))
        start = end
    return windows


def has_speech(audio: Audio) -> bool:
    """Whether a window is worth decoding: sound louder than SILENCE_DBFS, or else speech the streams' trained
    detector hears (Silero behind its automatic gain: a talker at -60 dBFS RMS peaks under -50 dBFS, and a file of
    one came back empty while its stream was transcribed; a fresh tester). At least the streams'
    `vad_min_speech_seconds` of frames at `vad_speech_threshold`."""
    if has_sound(audio):
        return True
    n = audio.size // FRAME_SAMPLES
    if n == 0:
        return False
    probabilities = make_detector("silero").probabilities(audio[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES))
    heard = int(np.count_nonzero(probabilities >= _STREAMING.vad_speech_threshold)) * FRAME_SECONDS
    return heard >= _STREAMING.vad_min_speech_seconds


def has_sound(audio: Audio) -> bool:
    if audio.size == 0:
        return False
    n = max(audio.size // _CUT_FRAME, 1)
    frames = audio[: n * _CUT_FRAME].astype(np.float64)
    if frames.size < _CUT_FRAME:
        return bool(10 * np.log10(np.mean(frames**2) + 1e-10) > SILENCE_DBFS)
    power = np.mean(frames.reshape(n, _CUT_FRAME) ** 2, axis=1)
    return bool(10 * np.log10(np.max(power) + 1e-10) > SILENCE_DBFS)


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
    """The plan of one file's transcription; feed each window's words back with `add`."""

    audio: Audio
    language: str
    decoding: Decoding
    initial_prompt: str = ""
    words: list[Word] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(init=False)
    done_windows: int = 0

    def __post_init__(self) -> None:
        """Plans the windows and which hold speech (CPU-bound: about 0.01 s per second of quiet audio for the
        detector; the server builds the plan in a thread)."""
        self.windows = plan_windows(self.audio.size, self.audio)
        self._speech = [has_speech(self.audio[start:end]) for start, end in self.windows]

    @property
    def finished(self) -> bool:
        return self.done_windows >= len(self.windows)

    @property
    def progress(self) -> float:
        return self.done_windows / len(self.windows) if self.windows else 1.0

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def next_request(self) -> WindowRequest | None:
        """The next window with sound in it, or None when every window is done (silent ones are skipped)."""
        while not self.finished:
            start, end = self.windows[self.done_windows]
            chunk = self.audio[start:end]
            if self._speech[self.done_windows]:
                return WindowRequest(
                    index=self.done_windows,
                    audio=chunk,
                    offset=start / SAMPLE_RATE,
                    language=self.language,
                    prompt=self._prompt(),
                    decoding=self.decoding,
                )
            self.done_windows += 1
        return None

    def add(self, request: WindowRequest, words: list[Word]) -> None:
        if request.index != self.done_windows:
            raise ValueError(f"window {request.index} answered while window {self.done_windows} was expected")
        end = request.offset + request.audio.size / SAMPLE_RATE
        floor = self.words[-1].start if self.words else 0.0
        for word in words:
            shifted = word.shifted(request.offset)
            start = min(max(shifted.start, floor), end)
            self.words.append(Word(shifted.text, start, min(max(shifted.end, start), end), shifted.probability))
            floor = start
        self.done_windows += 1

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


def transcribe_file(
    engine: Engine, audio: Audio, *, language: str, decoding: Decoding, initial_prompt: str = ""
) -> list[Word]:
    """Every word of `audio`, window by window (see the module docstring). Raises EngineError."""
    plan = FileTranscription(audio, language, decoding, initial_prompt)
    while (request := plan.next_request()) is not None:
        plan.add(request, decode_window(engine, request))
    return plan.words


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
