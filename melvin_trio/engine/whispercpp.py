"""The whisper.cpp engine, through pywhispercpp's bindings.

Facts this module is built on (measured with pywhispercpp 1.5 / whisper.cpp 1.8):
- whisper.cpp does not fail cleanly on a bad model (a missing or garbage file still yields a context object that
  crashes later), so the file is checked by `inspect_model` before it is loaded;
- parameters persist between calls on one params object, so every call sets every parameter;
- one context used from two threads at once crashes the process: a lock refuses a second concurrent caller;
- token texts may hold part of a UTF-8 character (German umlauts), so words are assembled from token bytes;
- the temperature fallback made single calls take 10-30 s: it is off for streams (`GREEDY`), and the tokens per
  pass are capped in proportion to the audio; files ask for beam search and fallback through `Decoding`, and
  their caller bounds the time;
- a reduced `audio_ctx` halves encoder time for short windows; with flash attention only multiples of 256 give
  stable output, and too small a context makes tiny.en loop: ceil((seconds + 2) * 50 / 256) * 256, at most 1500.
  The text stays good, but the token timestamps do not: in streaming windows (leading silence, speech running into
  the edge) most words' times collapse onto the window's end. Streaming needs the times, so it uses the full
  context (`reduce_audio_ctx=False`); the reduced one serves offline-style calls that only need the text;
- with flash attention, whisper.cpp views the cross-attention keys and values padded to a multiple of 256 frames
  and attends to the padding unmasked (ggml-org/whisper.cpp#3941, open): the full context's 1500 frames read 36
  rows that only a call at a reduced context ever writes (each layer's rows start at layer * padded context). After
  one reduced call every full-context call on that whisper context reads its leftovers, so its text depends on the
  calls before it (tiny.en, JFK's first 4 s: "...asked" before any preview, "...ask" after one, and whole words lost
  in streams). Reduced contexts are multiples of 256 and read no padding, so they run on a second whisper context
  of their own, loaded at the first such call (+108 MB RSS for tiny.en, +192 MB for base); the first one only
  ever runs full-context calls. Without flash attention nothing is padded and one context serves both, but every
  pass costs about 30 % more (tiny.en, 2 threads: 0.64 against 0.82 s for 5 s of audio).
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import _pywhispercpp as pw
import numpy as np

from melvin_trio.engine.base import (
    GREEDY,
    SAMPLE_RATE,
    AbortCheck,
    Audio,
    Decoding,
    EngineAborted,
    EngineError,
    EngineInfo,
    UnsupportedLanguage,
    Word,
    check_language,
)
from melvin_trio.models.ggml import inspect_model

log = logging.getLogger(__name__)

FULL_AUDIO_CTX: Final = 1500
_AUDIO_CTX_STEP: Final = 256
_CTX_FRAMES_PER_SECOND: Final = 50
_AUDIO_CTX_MARGIN_S: Final = 2.0
# Longest audio for which a reduced context is used; whisper.cpp reads 30 s per pass.
_MAX_REDUCED_SECONDS: Final = 28.0
# Tokens per pass: generous for fast speech (about 5 text tokens a second) plus timestamp tokens.
_TOKENS_PER_SECOND: Final = 8
_TOKENS_BASE: Final = 16
_MAX_TOKENS: Final = 220  # whisper.cpp stops at n_text_ctx / 2 anyway
_CENTISECONDS: Final = 100.0
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Its "info" is a line per tensor: debug here.
_LOG_LEVELS: Final = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}


def reduced_audio_ctx(seconds: float) -> int:
    """Encoder context (in 20 ms frames) for `seconds` of audio: the safe rule measured on tiny.en and base."""
    frames = math.ceil((seconds + _AUDIO_CTX_MARGIN_S) * _CTX_FRAMES_PER_SECOND / _AUDIO_CTX_STEP)
    return min(frames * _AUDIO_CTX_STEP, FULL_AUDIO_CTX)


def token_limit(seconds: float) -> int:
    return min(math.ceil(_TOKENS_PER_SECOND * min(seconds, 30.0)) + _TOKENS_BASE, _MAX_TOKENS)


# Per thread: whether the call running in it was aborted on purpose (its client left, or it timed out).
_call_state = threading.local()


def _forward_log(level: int, text: str) -> None:
    message = text.rstrip()
    if not message:
        return
    python_level = _LOG_LEVELS.get(level, logging.DEBUG)
    if python_level >= logging.ERROR and getattr(_call_state, "aborted", False):
        # whisper_full reports an abort it was asked for as "failed to encode/decode": not an error here.
        log.debug("whisper.cpp (aborted pass): %s", message)
        return
    log.log(python_level, "whisper.cpp: %s", message)


_log_hook_lock = threading.Lock()
_log_hook_installed = False


def _install_log_hook() -> None:
    """Send whisper.cpp's chatter (it prints every loaded tensor) to the logging module instead of stderr.

    The hook is removed at exit: ggml logs while the interpreter finalizes, and a Python callback then aborts
    the process ("PyThreadState_Get: the function must be called with the GIL held").
    """
    global _log_hook_installed
    with _log_hook_lock:
        if not _log_hook_installed:
            pw.whisper_log_set(_forward_log)
            atexit.register(pw.whisper_log_set, None)
            _log_hook_installed = True


@dataclass(frozen=True)
class WhisperCppOptions:
    n_threads: int = 2
    use_gpu: bool = False
    gpu_device: int = 0
    flash_attn: bool = True
    reduce_audio_ctx: bool = False
    # DTW token times (whisper.cpp's alignment heads of the model; needs flash_attn off): measured by
    # bench/wordtimes.py against the token timestamps.
    dtw_token_timestamps: bool = False
    # A fixed encoder context in 20 ms frames for every call (benchmarks); 0: the full context, or the reduced rule.
    audio_ctx: int = 0


class WhisperCppEngine:
    """A loaded whisper.cpp model. Not thread-safe: callers funnel calls through one thread at a time."""

    def __init__(self, path: Path, options: WhisperCppOptions | None = None, *, name: str | None = None) -> None:
        """Check and load the model at `path`. Raises ModelFileError for a missing or malformed file."""
        self._options = options or WhisperCppOptions()
        self._model_info = inspect_model(path)
        _install_log_hook()
        cparams = pw.whisper_context_default_params()
        cparams.use_gpu = self._options.use_gpu
        cparams.gpu_device = self._options.gpu_device
        cparams.flash_attn = self._options.flash_attn
        if self._options.dtw_token_timestamps:
            cparams.flash_attn = False
            cparams.dtw_token_timestamps = True
            cparams.dtw_aheads_preset = _aheads_preset(
                self._model_info.hparams.n_text_layer, self._model_info.hparams.n_vocab
            )
        self._path = path
        self._cparams = cparams
        self._ctx: Any = self._load()
        # Calls at a reduced encoder context run here when flash attention is on (see the module's docstring).
        self._reduced_ctx: Any = None
        self._params: Any = pw.whisper_full_default_params(pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY)
        self._eot = pw.whisper_token_eot(self._ctx)
        self._info = EngineInfo(
            model_name=name or path.name,
            multilingual=bool(pw.whisper_is_multilingual(self._ctx)),
        )
        self._busy = threading.Lock()
        self.last_audio_ctx = FULL_AUDIO_CTX  # the encoder context (20 ms frames) of the latest call

    def _load(self) -> Any:
        ctx = pw.whisper_init_from_file_with_params(str(self._path), self._cparams)
        if pw.whisper_model_n_vocab(ctx) != self._model_info.hparams.n_vocab:
            raise EngineError(f"whisper.cpp could not load {self._path}")
        return ctx

    @property
    def info(self) -> EngineInfo:
        return self._info

    def close(self) -> None:
        with self._busy:
            for ctx in (self._ctx, self._reduced_ctx):
                if ctx is not None:
                    pw.whisper_free(ctx)
            self._ctx = self._reduced_ctx = None

    def _context_for(self, audio_ctx: int) -> Any:
        """The whisper context for a call at `audio_ctx` frames: the full-context calls never share one with the
        reduced ones under flash attention, whose unmasked padding would carry leftovers from one to the other."""
        if audio_ctx == FULL_AUDIO_CTX or not self._cparams.flash_attn:
            return self._ctx
        if self._reduced_ctx is None:
            log.debug("loading a second context of %s for reduced-context calls", self._path.name)
            self._reduced_ctx = self._load()
        return self._reduced_ctx

    def _set_params(self, seconds: float, language: str, prompt: str, decoding: Decoding) -> None:
        p = self._params
        p.n_threads = self._options.n_threads
        p.language = language
        p.detect_language = False
        p.translate = decoding.translate
        p.no_context = True
        p.no_timestamps = False
        p.single_segment = False
        p.print_special = False
        p.print_progress = False
        p.print_realtime = False
        p.print_timestamps = False
        p.token_timestamps = True
        p.thold_pt = 0.01
        p.thold_ptsum = 0.01
        p.max_len = 0
        p.split_on_word = False
        p.max_tokens = token_limit(seconds)
        use_reduced = (self._options.reduce_audio_ctx or decoding.reduced_context) and seconds <= _MAX_REDUCED_SECONDS
        p.audio_ctx = reduced_audio_ctx(seconds) if use_reduced else 0
        if self._options.audio_ctx:
            p.audio_ctx = min(self._options.audio_ctx, FULL_AUDIO_CTX)
        self.last_audio_ctx = p.audio_ctx or FULL_AUDIO_CTX
        p.tdrz_enable = False
        p.initial_prompt = prompt
        p.carry_initial_prompt = False
        _set_decoding(p, decoding)
        p.suppress_blank = True
        p.suppress_nst = True
        p.max_initial_ts = 1.0
        p.length_penalty = -1.0
        p.entropy_thold = 2.4
        p.logprob_thold = -1.0
        p.no_speech_thold = 0.6
        p.offset_ms = 0
        p.duration_ms = 0
        p.vad = False

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str = "",
        abort: AbortCheck | None = None,
        decoding: Decoding = GREEDY,
    ) -> list[Word]:
        check_transcribable(self._info, language)
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        seconds = samples.size / SAMPLE_RATE
        if not self._busy.acquire(blocking=False):
            raise EngineError("engine is already busy: calls must be funnelled through one thread")
        try:
            if self._ctx is None:
                raise EngineError("engine is closed")
            self._set_params(seconds, language, prompt, decoding)
            ctx = self._context_for(self.last_audio_ctx)
            _call_state.aborted = False

            def aborting() -> bool:
                if abort is not None and abort():
                    _call_state.aborted = True
                    return True
                return False

            pw.assign_abort_callback(self._params, aborting if abort is not None else None)
            try:
                status = pw.whisper_full(ctx, self._params, samples, samples.size)
            finally:
                pw.assign_abort_callback(self._params, None)
                aborted, _call_state.aborted = _call_state.aborted, False
            if aborted or (abort is not None and abort()):
                raise EngineAborted("transcription aborted")
            if status != 0:
                raise EngineError(f"whisper.cpp failed to transcribe (status {status})")
            return self._collect_words(ctx, seconds)
        finally:
            self._busy.release()

    def _collect_words(self, ctx: Any, seconds: float) -> list[Word]:
        """Group tokens into words: a token whose bytes start with a space starts a new word."""
        words: list[Word] = []
        pieces: list[bytes] = []
        probs: list[float] = []
        start = end = 0.0

        def flush() -> None:
            text = b"".join(pieces).decode("utf-8", errors="replace").strip()
            if text:
                words.append(Word(text=text, start=start, end=end, probability=float(np.mean(probs))))

        for segment in range(pw.whisper_full_n_segments(ctx)):
            for index in range(pw.whisper_full_n_tokens(ctx, segment)):
                data = pw.whisper_full_get_token_data(ctx, segment, index)
                if data.id >= self._eot:
                    continue  # special and timestamp tokens carry no text
                raw = pw.whisper_token_to_bytes(ctx, data.id)
                t0 = min(max(data.t0 / _CENTISECONDS, 0.0), seconds)
                t1 = min(max(data.t1 / _CENTISECONDS, t0), seconds)
                if self._options.dtw_token_timestamps and data.t_dtw >= 0:
                    t0 = t1 = min(max(data.t_dtw / _CENTISECONDS, 0.0), seconds)
                if raw.startswith(b" ") or not pieces:
                    if pieces:
                        flush()
                    pieces, probs, start = [], [], t0
                pieces.append(raw)
                probs.append(float(data.p))
                end = max(end, t1)
        if pieces:
            flush()
        return _monotonic(words)

    def detect_language(self, audio: Audio) -> tuple[str, float]:
        if not self._info.multilingual:
            return "en", 1.0
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if not self._busy.acquire(blocking=False):
            raise EngineError("engine is already busy: calls must be funnelled through one thread")
        try:
            if pw.whisper_pcm_to_mel(self._ctx, samples, samples.size, self._options.n_threads) != 0:
                raise EngineError("whisper.cpp could not compute the spectrogram")
            probs = np.zeros(pw.whisper_lang_max_id() + 1, dtype=np.float32)
            best = pw.whisper_lang_auto_detect(self._ctx, 0, self._options.n_threads, probs)
            if best < 0:
                raise EngineError("whisper.cpp could not detect the language")
            return str(pw.whisper_lang_str(best)), float(probs[best])
        finally:
            self._busy.release()


def _set_decoding(p: Any, decoding: Decoding) -> None:
    """Strategy, beam and temperatures (whisper.cpp falls back up to temperature 1.0)."""
    if decoding.beam_size > 1:
        p.strategy = pw.whisper_sampling_strategy.WHISPER_SAMPLING_BEAM_SEARCH
        p.beam_search = {"beam_size": decoding.beam_size, "patience": -1.0}
    else:
        p.strategy = pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY
    # best_of: candidates sampled at a temperature > 0 in a fallback (whisper's default 5); 1 when greedy.
    p.greedy = {"best_of": 5 if decoding.temperature_inc > 0 else 1}
    p.temperature = decoding.temperature
    p.temperature_inc = decoding.temperature_inc


def _aheads_preset(n_text_layer: int, n_vocab: int) -> Any:
    """whisper.cpp's alignment heads for the model size (by decoder depth; English-only models have 51864 tokens)."""
    english = n_vocab == 51864
    presets = {
        4: ("TINY_EN", "TINY"),
        6: ("BASE_EN", "BASE"),
        12: ("SMALL_EN", "SMALL"),
        24: ("MEDIUM_EN", "MEDIUM"),
    }
    names = presets.get(n_text_layer)
    if names is None:
        return pw.whisper_alignment_heads_preset.WHISPER_AHEADS_N_TOP_MOST
    return getattr(pw.whisper_alignment_heads_preset, f"WHISPER_AHEADS_{names[0] if english else names[1]}")


def _monotonic(words: list[Word]) -> list[Word]:
    """whisper.cpp's token times can step back across segments; clamp each word to start after the last began."""
    out: list[Word] = []
    floor = 0.0
    for word in words:
        start = max(word.start, floor)
        end = max(word.end, start)
        out.append(Word(word.text, start, end, word.probability))
        floor = start
    return out


_LANGUAGE_CODES: Final = frozenset(pw.whisper_lang_str(i) for i in range(pw.whisper_lang_max_id() + 1))


def is_known_language(code: str) -> bool:
    """Whether Whisper knows this ISO 639-1 code (asked without whisper_lang_id, which logs an error for a no)."""
    return code in _LANGUAGE_CODES


def check_transcribable(info: EngineInfo, language: str) -> None:
    """Raise UnsupportedLanguage unless the model can transcribe `language` (`check_language`) and Whisper knows
    it (whisper.cpp would only log an unknown code and go on in English)."""
    check_language(info, language)
    if not is_known_language(language):
        raise UnsupportedLanguage(f"language {language!r} is not one Whisper knows (use an ISO 639-1 code)")
