"""Voice activity: which 20 ms frames hold speech, from their energy against an adaptive noise floor.

Chosen over a neural VAD because it needs no model file (whisper.cpp's Silero VAD needs one we cannot ship
offline) and costs microseconds per second of audio. It only has to answer "is there anything to transcribe?":
Whisper, given silence or steady noise, invents words ("Thank you.", "Untertitel im Auftrag des ZDF"); a window
without speech frames is never sent to it. Speech is louder than the stream's own noise floor by a margin, and louder
than an absolute floor, for a minimum duration.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FRAME_SAMPLES: Final = 320  # 20 ms at 16 kHz
FRAME_SECONDS: Final = 0.02
_HISTORY_FRAMES: Final = 1500  # 30 s of frame energies for the noise floor
_FLOOR_PERCENTILE: Final = 10.0
_EPS: Final = 1e-10


@dataclass(frozen=True)
class VadSettings:
    absolute_floor_db: float = -50.0  # frames quieter than this are never speech
    margin_db: float = 12.0  # speech stands this far above the stream's noise floor
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
        self._history: deque[float] = deque(maxlen=_HISTORY_FRAMES)

    def observe(self, energies: npt.NDArray[np.float64]) -> None:
        self._history.extend(float(e) for e in energies)

    def noise_floor_db(self) -> float:
        if not self._history:
            return self.settings.absolute_floor_db
        return float(np.percentile(np.fromiter(self._history, dtype=np.float64), _FLOOR_PERCENTILE))

    def speech_mask(self, energies: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        threshold = max(self.settings.absolute_floor_db, self.noise_floor_db() + self.settings.margin_db)
        return energies > threshold

    def speech_seconds(self, energies: npt.NDArray[np.float64]) -> float:
        return float(np.count_nonzero(self.speech_mask(energies))) * FRAME_SECONDS

    def has_speech(self, energies: npt.NDArray[np.float64]) -> bool:
        return self.speech_seconds(energies) >= self.settings.min_speech_seconds
