"""Voice activity: which 20 ms frames hold speech, from their energy against an adaptive noise floor.

Chosen over a neural VAD because it needs no model file (whisper.cpp's Silero VAD needs one we cannot ship
offline) and costs microseconds per second of audio. It answers "is there anything to transcribe?" (whisper, given
silence or steady noise, invents words: "Thank you.", "Untertitel im Auftrag des ZDF") and "where does the speaker
pause?" (the stream core ends utterances there). Speech is louder than the stream's own noise floor by a margin,
and louder than an absolute floor.

The noise floor is the quietest 100 ms of the last 30 s (minimum statistics). A percentile of all frames, tried
first, sat inside the speech at the start of a stream that opens talking over background sound (a film clip: the
floor rose to the speech level, and a quieter sentence was taken for silence and dropped).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FRAME_SAMPLES: Final = 320  # 20 ms at 16 kHz
FRAME_SECONDS: Final = 0.02
_HISTORY_FRAMES: Final = 1500  # 30 s of smoothed energies for the noise floor
# 100 ms: a floor from single frames would sit in the closures of stop consonants; a much longer one rises into
# the speech of a talker who never pauses that long (and speech under the floor is never transcribed).
_SMOOTH_FRAMES: Final = 5
_EPS: Final = 1e-10


@dataclass(frozen=True)
class VadSettings:
    absolute_floor_db: float = -50.0  # frames quieter than this are never speech
    margin_db: float = 12.0  # speech stands this far above the stream's noise floor
    # A pause (which ends an utterance) is quieter still: within this of the floor. Soft syllables between the two
    # margins neither count as speech to transcribe nor end an utterance.
    pause_margin_db: float = 6.0
    min_speech_seconds: float = 0.25  # a window needs this much speech to be transcribed


def frame_energies_db(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """RMS level (dBFS) of each whole 20 ms frame."""
    n = samples.size // FRAME_SAMPLES
    frames = samples[: n * FRAME_SAMPLES].astype(np.float64).reshape(n, FRAME_SAMPLES)
    power: npt.NDArray[np.float64] = np.mean(frames * frames, axis=1)
    return np.asarray(10.0 * np.log10(power + _EPS), dtype=np.float64)


class EnergyVad:
    """Tracks a stream's noise floor and classifies frames. Feed every frame once, in order."""

    def __init__(self, settings: VadSettings | None = None) -> None:
        self.settings = settings or VadSettings()
        self._history: deque[float] = deque(maxlen=_HISTORY_FRAMES)  # smoothed energies (dB)
        self._recent_power: deque[float] = deque(maxlen=_SMOOTH_FRAMES)
        self._floor: float | None = None

    def observe(self, energies: npt.NDArray[np.float64]) -> None:
        for energy in energies.tolist():
            self._recent_power.append(10.0 ** (energy / 10.0))
            self._history.append(10.0 * math.log10(sum(self._recent_power) / len(self._recent_power) + _EPS))
        self._floor = None

    def noise_floor_db(self) -> float:
        if not self._history:
            return self.settings.absolute_floor_db
        if self._floor is None:
            self._floor = min(self._history)
        return self._floor

    def speech_mask(self, energies: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        threshold = max(self.settings.absolute_floor_db, self.noise_floor_db() + self.settings.margin_db)
        return energies > threshold

    def pause_mask(self, energies: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        threshold = max(self.settings.absolute_floor_db, self.noise_floor_db() + self.settings.pause_margin_db)
        return energies <= threshold

    def speech_seconds(self, energies: npt.NDArray[np.float64]) -> float:
        return float(np.count_nonzero(self.speech_mask(energies))) * FRAME_SECONDS

    def has_speech(self, energies: npt.NDArray[np.float64]) -> bool:
        return self.speech_seconds(energies) >= self.settings.min_speech_seconds
