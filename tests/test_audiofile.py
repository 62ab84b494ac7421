"""The file reader: every promised format decodes to 16 kHz mono float32 close to the source; anything else is a
clear AudioFormatError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from melvin_trio.audio import AudioFormatError, float_to_pcm16, read_wav
from melvin_trio.audiofile import probe_audio, read_audio
from melvin_trio.evaluation import Clip
from tests.audio_formats import FORMATS, write_format


def _jfk(clips: list[Clip]) -> Clip:
    return next(c for c in clips if c.path.name == "melvin_jfk.wav")


def test_the_bundled_libsndfile_writes_and_reads_mp3() -> None:
    assert "MP3" in soundfile.available_formats()


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_format_reads_as_16k_mono_close_to_the_source(kind: str, clips: list[Clip], tmp_path: Path) -> None:
    source, _ = read_wav(_jfk(clips).path)
    path = write_format(_jfk(clips).path, kind, tmp_path)
    audio, info = read_audio(path)
    rate, channels = FORMATS[kind][1], FORMATS[kind][2]
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    # Lossy codecs add a little delay or padding (MP3: up to a frame and a half); the length stays within 0.1 s.
    assert abs(audio.size - source.size) <= 1600
    if kind in ("flac", "wav-float", "wav-44k-stereo"):  # lossless, or resampled twice: the same waveform
        n = min(audio.size, source.size)
        correlation = np.corrcoef(audio[:n], source[:n])[0, 1]
        assert correlation > 0.99
    else:  # lossy: same loudness
        assert np.sqrt(np.mean(audio**2)) == pytest.approx(np.sqrt(np.mean(source**2)), rel=0.2)


def test_pcm16_of_a_16k_wav_is_its_samples(clips: list[Clip]) -> None:
    source, _ = read_wav(_jfk(clips).path)
    pcm = float_to_pcm16(read_audio(_jfk(clips).path)[0])
    assert len(pcm) == 2 * source.size


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot decode"),
        (b"this is not audio at all" * 100, "cannot decode"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode"),  # a WAV header cut short
    ],
)
def test_what_cannot_be_decoded_is_a_clear_error(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "upload.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioFormatError, match=message) as info:
        read_audio(path, label="lecture.mp3")
    assert "lecture.mp3" in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match="file not found"):
        read_audio(tmp_path / "nothing.wav")


def test_float_samples_that_are_not_numbers_or_past_full_scale(clips: list[Clip], tmp_path: Path) -> None:
    """A fresh tester: JFK as a float WAV with 10 NaN and 2 infinite samples was transcribed as one "word" of 49
    "!"; the same at 1000 times full scale as nothing. Right: those samples are silence, and audio past full scale
    is scaled down to it (not clipped), so the speech reads as the source does."""
    source, _ = read_wav(_jfk(clips).path)
    broken = source.copy()
    broken[1000:1010] = np.nan
    broken[2000], broken[3000] = np.inf, -np.inf
    loud = source * 1000.0
    for name, samples in (("broken.wav", broken), ("loud.wav", loud)):
        soundfile.write(tmp_path / name, samples, 16000, subtype="FLOAT")
        audio, _ = read_audio(tmp_path / name)
        assert np.isfinite(audio).all()
        assert np.max(np.abs(audio)) <= 1.0
        assert np.corrcoef(audio, source)[0, 1] > 0.99


def test_a_rate_too_low_for_speech_is_a_clear_error(clips: list[Clip], tmp_path: Path) -> None:
    source, _ = read_wav(_jfk(clips).path)
    soundfile.write(tmp_path / "4k.wav", source[::4], 4000, subtype="PCM_16")
    with pytest.raises(AudioFormatError, match="sample rate 4000 Hz is too low for speech"):
        read_audio(tmp_path / "4k.wav")
    with pytest.raises(AudioFormatError, match="sample rate 4000 Hz is too low for speech"):
        probe_audio(tmp_path / "4k.wav")  # an upload: refused at once


@pytest.mark.parametrize("kind", ["wav-float", "wav-44k-stereo"])
def test_a_truncated_wav_is_read_and_said_to_be_cut_short(kind: str, clips: list[Clip], tmp_path: Path) -> None:
    """A fresh tester: a WAV whose header gives 11 s, cut to its first third, was transcribed with no word that
    most of it is missing (libsndfile reads what is there). Right: what it holds is read, and the file's info says
    how long the header promised, for one line of warning; a whole file, or one written with the unknown size of
    a streaming writer, promises nothing more."""
    path = write_format(_jfk(clips).path, kind, tmp_path)
    whole, info = read_audio(path)
    assert info.promised_seconds is None
    assert info.truncation("x.wav") is None
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 3])
    audio, cut_info = read_audio(cut)
    assert audio.size < whole.size / 2
    assert cut_info.promised_seconds == pytest.approx(info.seconds, abs=0.01)
    assert cut_info.truncation("cut.wav") == (
        f"cut.wav: the file ends after {cut_info.seconds:.1f} s of the {info.seconds:.1f} s its header gives"
        " (truncated?); transcribing what it holds"
    )
    streamed = bytearray(data)
    at = data.index(b"data") + 4
    streamed[at : at + 4] = b"\xff\xff\xff\xff"
    unknown = tmp_path / "unknown.wav"
    unknown.write_bytes(bytes(streamed[: len(data) // 3]))
    assert read_audio(unknown)[1].promised_seconds is None
