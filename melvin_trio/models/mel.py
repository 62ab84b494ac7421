"""The mel filterbank whisper.cpp reads from a model file: Slaney-style, as librosa and OpenAI Whisper build it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(*, sample_rate: int = 16000, n_fft: int = 400, n_mels: int = 80) -> npt.NDArray[np.float32]:
    """Triangular filters, area-normalised ("slaney"), shape (n_mels, n_fft // 2 + 1), float32.

    Equal to `librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`, which is what OpenAI Whisper's
    `mel_filters.npz` holds.
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    spacing = np.diff(hz_points)
    ramps = np.subtract.outer(hz_points, fft_freqs)
    lower = -ramps[:-2] / spacing[:-1, None]
    upper = ramps[2:] / spacing[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)
