from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from melvin_trio.audio import (
    AudioFormatError,
    float_to_pcm16,
    pcm16_to_float,
    read_wav,
    read_wav_pcm16,
    resample,
    wav_bytes,
)


def _write(path: Path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        if width == 2:
            wav.writeframes((samples * 32767).astype("<i2").tobytes())
        else:
            wav.writeframes(((samples * 127) + 128).astype(np.uint8).tobytes())


def test_resampling_keeps_a_tone_and_its_length() -> None:
    rate_in = 44100
    t = np.arange(rate_in * 2) / rate_in
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(tone, rate_in, 16000)
    assert out.size == 32000
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    np.testing.assert_allclose(out[100:-100], expected[100:-100], atol=5e-3)


def test_resampling_removes_what_the_new_rate_cannot_hold() -> None:
    rate_in = 48000
    t = np.arange(rate_in) / rate_in
    above_nyquist = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # 12 kHz > 8 kHz
    out = resample(above_nyquist, rate_in, 16000)
    assert np.abs(out[200:-200]).max() < 0.05


def test_read_wav_downmixes_and_resamples(tmp_path: Path) -> None:
    rate = 8000
    mono = 0.25 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)
    stereo = np.stack([mono, mono], axis=1).reshape(-1)
    _write(tmp_path / "s.wav", stereo, rate, channels=2)
    samples, info = read_wav(tmp_path / "s.wav")
    assert (info.channels, info.sample_rate) == (2, 8000)
    assert samples.size == 16000
    assert abs(np.abs(samples).max() - 0.25) < 0.01


def test_read_wav_rejects_non_wav(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"ID3 not a wav at all")
    with pytest.raises(AudioFormatError, match="not a PCM WAV"):
        read_wav(tmp_path / "x.wav")
    with pytest.raises(AudioFormatError, match="not found"):
        read_wav(tmp_path / "missing.wav")


def test_pcm_round_trip_and_wav_container(tmp_path: Path) -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], dtype="<i2").tobytes()
    assert float_to_pcm16(pcm16_to_float(pcm)) == pcm
    assert pcm16_to_float(pcm + b"\x01").size == 5  # the odd byte is not a sample
    path = tmp_path / "w.wav"
    path.write_bytes(wav_bytes(pcm))
    assert read_wav_pcm16(path) == pcm
