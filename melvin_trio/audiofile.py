"""Audio files of any common format to 16 kHz mono float32: libsndfile (through soundfile) decodes, soxr resamples.

libsndfile reads WAV of every kind (8-32 bit integer, float, any rate and channel count), FLAC, OGG (Vorbis and
Opus) and MP3 (libsndfile >= 1.1, as bundled in the soundfile wheel). A file it cannot decode raises
`AudioFormatError` (the package's audio error, from `melvin_trio.audio`) naming the file and the problem.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from melvin_trio.audio import SAMPLE_RATE, AudioFormatError
from melvin_trio.core.protocol import MIN_SAMPLE_RATE  # the streams' floor: below it, too little of speech is left

# Read in blocks so a long file is down-mixed as it is read (a stereo hour at 48 kHz is 1.4 GB as float32).
_BLOCK_FRAMES: Final = 1 << 20

__all__ = ["AudioFileInfo", "AudioFormatError", "probe_audio", "read_audio"]


class AudioFileInfo:
    """What the file was before it was converted."""

    __slots__ = ("channels", "format", "frames", "promised_seconds", "sample_rate", "subtype")

    def __init__(self, sample_rate: int, channels: int, frames: int, format: str, subtype: str) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = frames
        self.format = format
        self.subtype = subtype
        # Seconds the header promises where the file holds less (a truncated WAV: libsndfile reads what is there
        # and says nothing); None otherwise.
        self.promised_seconds: float | None = None

    def truncation(self, name: str) -> str | None:
        """One line saying that the file named `name` is cut short, or None if it is not."""
        if self.promised_seconds is None:
            return None
        return (
            f"{name}: the file ends after {self.seconds:.1f} s of the {self.promised_seconds:.1f} s its header gives"
            " (truncated?); transcribing what it holds"
        )

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_audio(path: Path, *, label: str | None = None) -> tuple[npt.NDArray[np.float32], AudioFileInfo]:
    """The file at `path` as 16 kHz mono float32 (channels averaged, resampled with soxr's high quality), and
    its original format. `label` names the file in messages (an upload's name rather than its temporary path).

    Raises AudioFormatError for a missing file, an undecodable one, or one without audio.
    """
    name = label or str(path)
    with _decoding(path, name) as f:
        info = AudioFileInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)
        # The header is judged before the file is decoded (an hour at a rate refused need not be read first).
        if info.sample_rate <= 0 or info.channels <= 0:
            raise AudioFormatError(f"{name}: invalid header (rate {info.sample_rate}, {info.channels} channels)")
        _check_rate(info, name)
        blocks = [
            _mono(block)
            for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True, fill_value=None)
        ]
    mono = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if mono.size == 0:
        raise AudioFormatError(f"{name}: the file holds no audio")
    if info.format == "WAV" and (share := _wav_data_held(path)) is not None:
        info.promised_seconds = info.seconds / share
    return resample_to_16k(_within_full_scale(mono), info.sample_rate), info


_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)  # what writers that stream put in a WAV header before they know the size


def _wav_data_held(path: Path) -> float | None:
    """The share of its `data` chunk's declared size that a WAV file holds, when it holds less (cut short: a copy
    or an upload that stopped), else None. A fresh tester: a WAV whose header said 11 s, cut to 3.7 s, was
    transcribed with no word of it."""
    try:
        with path.open("rb") as f:
            riff = f.read(12)
            if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            offset = 12
            size = path.stat().st_size
            while offset + 8 <= size:
                f.seek(offset)
                chunk, declared_size = struct.unpack("<4sI", f.read(8))
                declared = int(declared_size)
                if chunk == b"data":
                    held = size - offset - 8
                    if declared in _UNKNOWN_SIZES or held >= declared or held <= 0:
                        return None
                    return held / declared
                offset += 8 + declared + (declared & 1)
    except OSError:
        return None
    return None


def _within_full_scale(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Float files may hold what integers cannot: samples that are not numbers (NaN, infinite) become silence, and
    audio louder than full scale is scaled down to it, not clipped. A fresh tester: a float WAV of JFK with 12 such
    samples gave one "word" of 49 "!"; the same at 1000 times full scale gave no text."""
    finite = np.isfinite(samples)
    if not finite.all():
        samples = np.where(finite, samples, np.float32(0.0))
    peak = float(np.max(np.abs(samples)))
    if peak > 1.0:
        samples = samples / np.float32(peak)
    return samples


def probe_audio(path: Path, *, label: str | None = None) -> AudioFileInfo:
    """The file's format, after decoding its first second (cheap, for checking an upload at once).

    Raises AudioFormatError as `read_audio` does."""
    name = label or str(path)
    with _decoding(path, name) as f:
        info = AudioFileInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)
        first = f.read(max(f.samplerate, 1), dtype="float32", always_2d=True)
    if info.sample_rate <= 0 or info.channels <= 0 or first.size == 0:
        raise AudioFormatError(f"{name}: the file holds no audio")
    _check_rate(info, name)
    return info


def _check_rate(info: AudioFileInfo, name: str) -> None:
    if info.sample_rate < MIN_SAMPLE_RATE:
        raise AudioFormatError(
            f"{name}: sample rate {info.sample_rate} Hz is too low for speech (at least {MIN_SAMPLE_RATE} Hz)"
        )


@contextmanager
def _decoding(path: Path, name: str) -> Iterator[soundfile.SoundFile]:
    """The file open for decoding; libsndfile's errors, on opening or while reading, become AudioFormatError
    naming `name`."""
    _check_readable(path, name)
    try:
        with soundfile.SoundFile(str(path)) as f:
            yield f
    except FileNotFoundError:  # removed between the check and the open
        raise AudioFormatError(f"{name}: file not found") from None
    except AudioFormatError:
        raise  # the caller's own verdict on the open file (a ValueError too): as it is
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFormatError(_cannot_decode(name, exc)) from None


def _check_readable(path: Path, name: str) -> None:
    """Raises AudioFormatError saying why `path` cannot be read as a file: missing, a directory, not a regular
    file (a device, a pipe), or not readable (permissions)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioFormatError(f"{name}: file not found") from None
    except OSError as exc:
        raise AudioFormatError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise AudioFormatError(f"{name}: is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioFormatError(f"{name}: not a regular file (a device or a pipe), not an audio file")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise AudioFormatError(f"{name}: cannot read: {exc.strerror or exc}") from None


def resample_to_16k(samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    out: npt.NDArray[np.float32] = np.ascontiguousarray(
        soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32
    )
    return out


def _mono(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    mixed: npt.NDArray[np.float32] = block.mean(axis=1, dtype=np.float32)
    return mixed


def _cannot_decode(name: str, exc: Exception) -> str:
    return (
        f"{name}: cannot decode: not a supported audio format, or damaged data (libsndfile: {_reason(exc)}); "
        "supported: WAV, FLAC, OGG (Vorbis, Opus), MP3"
    )


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    # libsndfile's messages start with the path (a temporary name for uploads): keep only what follows it.
    if "Error opening" in text and ": " in text:
        text = text.rsplit(": ", 1)[-1]
    if "does not exist or is not a regular file" in text:
        # What libsndfile says of a file it opened but cannot recognise (the file was checked to be there).
        text = "format not recognised"
    return text or type(exc).__name__
