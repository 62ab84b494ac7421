"""The whisper.cpp engine on real speech, and the scripted fake beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melvin_trio.audio import read_wav
from melvin_trio.engine.base import PREVIEW, Engine, EngineError, UnsupportedLanguage, Word
from melvin_trio.engine.fake import FakeEngine
from melvin_trio.engine.whispercpp import (
    FULL_AUDIO_CTX,
    WhisperCppEngine,
    WhisperCppOptions,
    reduced_audio_ctx,
    token_limit,
)
from melvin_trio.evaluation import Clip, ErrorCount, count_errors


def _check_times(words: list[Word], seconds: float) -> None:
    assert words, "no words"
    starts = [w.start for w in words]
    assert starts == sorted(starts), "word starts must rise"
    for w in words:
        assert 0.0 <= w.start <= w.end <= seconds + 1e-6, w
        assert 0.0 <= w.probability <= 1.0


def _transcribe_all(engine: Engine, clips: list[Clip], lang: str) -> ErrorCount:
    total = ErrorCount(0, 0)
    for clip in (c for c in clips if c.lang == lang):
        audio, _ = read_wav(clip.path)
        words = engine.transcribe(audio, language=lang)
        _check_times(words, audio.size / 16000)
        total = total + count_errors(clip.text, " ".join(w.text for w in words), lang)
    return total


def test_tiny_en_transcribes_jfk_exactly(tiny_en_engine: Engine, clips: list[Clip]) -> None:
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    audio, _ = read_wav(jfk.path)
    words = tiny_en_engine.transcribe(audio, language="en")
    assert count_errors(jfk.text, " ".join(w.text for w in words), "en").wer == 0.0
    _check_times(words, jfk.seconds)


def test_tiny_en_on_all_english_clips(tiny_en_engine: Engine, clips: list[Clip]) -> None:
    total = _transcribe_all(tiny_en_engine, clips, "en")
    assert total.reference_words > 400
    assert total.wer <= 0.06, total


def test_base_on_all_german_clips(base_engine: Engine, clips: list[Clip]) -> None:
    total = _transcribe_all(base_engine, clips, "de")
    assert total.reference_words > 150
    assert total.wer <= 0.22, total


def test_umlauts_split_across_tokens_come_out_whole(base_engine: Engine, clips: list[Clip]) -> None:
    clip = next(c for c in clips if c.path.name == "commonvoice_de_17516889.wav")  # "... verstärkt ... straßen..."
    audio, _ = read_wav(clip.path)
    text = " ".join(w.text for w in base_engine.transcribe(audio, language="de"))
    assert "verstärkt" in text
    assert "\ufffd" not in text


def test_base_detects_german(base_engine: Engine, clips: list[Clip]) -> None:
    clip = next(c for c in clips if c.path.name == "librivox-simplicissimus_D.wav")
    audio, _ = read_wav(clip.path)
    language, probability = base_engine.detect_language(audio)
    assert language == "de"
    assert probability > 0.5


def test_english_only_model_refuses_another_language(tiny_en_engine: Engine) -> None:
    with pytest.raises(UnsupportedLanguage, match="English-only"):
        tiny_en_engine.transcribe(np.zeros(16000, np.float32), language="de")


def test_engine_is_reusable_after_an_abort(tiny_en_engine: Engine, clips: list[Clip]) -> None:
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    audio, _ = read_wav(jfk.path)
    with pytest.raises(EngineError, match="aborted"):
        tiny_en_engine.transcribe(audio, language="en", abort=lambda: True)
    assert tiny_en_engine.transcribe(audio, language="en")


def test_a_preview_at_the_reduced_context_hears_the_same_words(tiny_en_engine: Engine, clips: list[Clip]) -> None:
    """PREVIEW encodes only the window's length: the text of a short window is (nearly) the full context's."""
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    audio, _ = read_wav(jfk.path)
    # "And so my fellow Americans, ask not" and 0.7 s of the pause after it: a cut through a word ("ask not" at 4 s)
    # is where any two decodings may differ ("ask" or "asked").
    window = audio[: 5 * 16000]
    assert isinstance(tiny_en_engine, WhisperCppEngine)
    full = tiny_en_engine.transcribe(window, language="en")
    assert tiny_en_engine.last_audio_ctx == FULL_AUDIO_CTX
    preview = tiny_en_engine.transcribe(window, language="en", decoding=PREVIEW)
    assert tiny_en_engine.last_audio_ctx == reduced_audio_ctx(5.0) < FULL_AUDIO_CTX
    texts = [" ".join(w.text for w in words) for words in (full, preview)]
    # At most one word apart: tiny.en hears "ask" at the full context and "asked" at the reduced one.
    assert count_errors(texts[0], texts[1], "en").errors <= 1, texts
    assert "fellow americans" in texts[1].lower(), texts
    assert texts[1].lower().endswith("not"), texts


def test_a_full_context_pass_does_not_depend_on_the_reduced_calls_before_it(
    tiny_en_path: Path, clips: list[Clip]
) -> None:
    """whisper.cpp's flash attention reads the padding of the cross-attention cache unmasked, and only a call at a
    reduced context writes there: a full-context pass after a preview heard the same audio differently (tiny.en,
    JFK's first 4 s: "asked" on a fresh engine, "ask" after a preview). The same audio gives the same words, to the
    last digit of every probability, however many reduced calls ran in between."""
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    audio, _ = read_wav(jfk.path)
    engine = WhisperCppEngine(tiny_en_path, WhisperCppOptions(n_threads=2), name="tiny.en")
    try:
        windows = [audio[: int(seconds * 16000)] for seconds in (4.0, 11.0)]
        before = [engine.transcribe(window, language="en") for window in windows]
        for seconds in (4.0, 8.0, 12.0):  # encoder contexts of 512, 768 and 1024 frames
            engine.transcribe(audio[: int(seconds * 16000)], language="en", decoding=PREVIEW)
            assert engine.last_audio_ctx < FULL_AUDIO_CTX
        after = [engine.transcribe(window, language="en") for window in windows]
        assert after == before
        # and the reduced calls answer alike whatever ran before them
        assert engine.transcribe(windows[0], language="en", decoding=PREVIEW) == engine.transcribe(
            windows[0], language="en", decoding=PREVIEW
        )
    finally:
        engine.close()


def test_reduced_audio_ctx_rule() -> None:
    assert reduced_audio_ctx(1.0) == 256
    assert reduced_audio_ctx(3.12) == 256
    assert reduced_audio_ctx(3.2) == 512
    assert reduced_audio_ctx(15.0) == 1024
    assert reduced_audio_ctx(40.0) == 1500
    # multiples of 256 (stable with flash attention) or the full context
    assert all(reduced_audio_ctx(s / 10) % 256 == 0 or reduced_audio_ctx(s / 10) == 1500 for s in range(1, 400))


def test_token_limit_grows_with_the_audio_and_is_capped() -> None:
    assert token_limit(1.0) < token_limit(5.0) < token_limit(15.0)
    assert token_limit(600.0) == token_limit(30.0) <= 220


# --- the fake -----------------------------------------------------------------------------------------------


def test_fake_engine_follows_its_script() -> None:
    hello = [Word("hello", 0.0, 0.5, 0.9)]
    fake = FakeEngine([hello, EngineError("boom"), lambda audio, prompt: [Word(prompt, 0, 0, 1)]])
    audio = np.zeros(8000, np.float32)
    assert fake.transcribe(audio, language="en") == hello
    with pytest.raises(EngineError, match="boom"):
        fake.transcribe(audio, language="en")
    assert fake.transcribe(audio, language="en", prompt="p") == [Word("p", 0, 0, 1)]
    assert [c.seconds for c in fake.calls] == [0.5, 0.5, 0.5]


def test_fake_engine_enforces_english_only_like_the_real_one() -> None:
    fake = FakeEngine(multilingual=False)
    with pytest.raises(UnsupportedLanguage):
        fake.transcribe(np.zeros(10, np.float32), language="de")
