"""Test fixtures in every format the file reader promises, made from a shared clip with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from melvin_trio.audiofile import read_audio

# name -> (file name, sample rate, channels, soundfile format, subtype)
FORMATS: dict[str, tuple[str, int, int, str, str]] = {
    "flac": ("clip.flac", 16000, 1, "FLAC", "PCM_16"),
    "opus": ("clip.ogg", 48000, 1, "OGG", "OPUS"),
    "mp3": ("clip.mp3", 16000, 1, "MP3", "MPEG_LAYER_III"),
    "wav-44k-stereo": ("clip-44k-stereo.wav", 44100, 2, "WAV", "PCM_16"),
    "wav-float": ("clip-float.wav", 16000, 1, "WAV", "FLOAT"),
    "wav-8k-24bit": ("clip-8k.wav", 8000, 1, "WAV", "PCM_24"),
}


def write_format(source: Path, kind: str, directory: Path) -> Path:
    """`source` (a shared 16 kHz WAV) written as `kind` into `directory`."""
    name, rate, channels, fmt, subtype = FORMATS[kind]
    audio, _ = read_audio(source)
    if rate != 16000:
        audio = soxr.resample(audio, 16000, rate).astype(np.float32)
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    path = directory / name
    soundfile.write(str(path), data, rate, format=fmt, subtype=subtype)
    return path
