"""Audio in and out: WAV files, PCM conversion and resampling to 16 kHz mono (soxr). No I/O framework."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

from melvin_trio.core import SAMPLE_RATE as SAMPLE_RATE
from melvin_trio.errors import MelvinError

SAMPLE_WIDTH: Final = 2  # bytes, s16le on the wire and in exports


class AudioFormatError(MelvinError, ValueError):
    """The file is not audio this program can read (the message says why)."""


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def pcm16_to_float(pcm: bytes | bytearray | memoryview) -> npt.NDArray[np.float32]:
    """s16le mono PCM to float32 in [-1, 1). An odd trailing byte is ignored (callers keep it for later)."""
    usable = len(pcm) - len(pcm) % 2
    samples = np.frombuffer(pcm, dtype="<i2", count=usable // 2)
    return samples.astype(np.float32) / 32768.0


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> bytes:
    clipped = np.clip(np.asarray(samples, dtype=np.float64) * 32768.0, -32768, 32767)
    return np.round(clipped).astype("<i2").tobytes()


def _decode_frames(raw: bytes, width: int, channels: int) -> npt.NDArray[np.float32]:
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        data = ints.astype(np.float32) / 8388608.0
    elif width == 4:
        data = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise AudioFormatError(f"unsupported sample width of {width} bytes")
    return data.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else data


def _read_wav_file(path: Path) -> tuple[bytes, WavInfo]:
    """The raw frames and format of a WAV file. Raises AudioFormatError for anything that is not integer PCM WAV."""
    try:
        with wave.open(str(path), "rb") as wav:
            info = WavInfo(wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes())
            raw = wav.readframes(info.frames)
    except FileNotFoundError:
        raise AudioFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise AudioFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path}: not a PCM WAV file ({exc}); convert it, e.g. with sox or ffmpeg") from exc
    if info.sample_rate <= 0 or info.channels <= 0:
        raise AudioFormatError(f"{path}: invalid WAV header")
    return raw, info


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], WavInfo]:
    """The file as 16 kHz mono float32 (down-mixed and resampled if needed), with its original format.

    Raises AudioFormatError for anything that is not an integer PCM WAV file.
    """
    raw, info = _read_wav_file(path)
    mono = _decode_frames(raw, info.sample_width, info.channels)
    return resample(mono, info.sample_rate, SAMPLE_RATE), info


def read_wav_pcm16(path: Path) -> bytes:
    """The file as 16 kHz mono s16le bytes: unchanged if it already is, converted otherwise.

    Raises AudioFormatError for anything that is not an integer PCM WAV file."""
    raw, info = _read_wav_file(path)
    if (info.sample_rate, info.channels, info.sample_width) == (SAMPLE_RATE, 1, SAMPLE_WIDTH):
        return raw
    mono = _decode_frames(raw, info.sample_width, info.channels)
    return float_to_pcm16(resample(mono, info.sample_rate, SAMPLE_RATE))


def wav_bytes(pcm: bytes) -> bytes:
    """A complete 16 kHz mono 16-bit WAV file holding `pcm`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)
    return buffer.getvalue()


def resample(samples: npt.NDArray[np.float32], rate_in: int, rate_out: int) -> npt.NDArray[np.float32]:
    """Band-limited resampling of a whole signal with soxr (its "HQ" quality: linear phase, no aliasing)."""
    if rate_in == rate_out or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    out: npt.NDArray[np.float32] = soxr.resample(samples.astype(np.float32, copy=False), rate_in, rate_out, "HQ")
    return out


class StreamResampler:
    """s16le mono PCM at `rate_in` in, 16 kHz s16le out, in pieces of any length: soxr keeps the filter state
    between pieces, so the result equals resampling the whole stream at once. An odd trailing byte waits for the
    next piece. Call `flush()` once at the end for the samples the filter still holds."""

    def __init__(self, rate_in: int) -> None:
        self.rate_in = rate_in
        self._soxr = soxr.ResampleStream(rate_in, SAMPLE_RATE, 1, dtype="int16", quality="HQ")
        self._odd = b""

    def feed(self, pcm: bytes) -> bytes:
        data = self._odd + pcm if self._odd else pcm
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        if not usable:
            return b""
        out: npt.NDArray[np.int16] = self._soxr.resample_chunk(np.frombuffer(data, dtype="<i2", count=usable // 2))
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        out: npt.NDArray[np.int16] = self._soxr.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        return out.astype("<i2", copy=False).tobytes()
