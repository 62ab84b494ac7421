"""The audio window of a stream: the samples not yet cut away, with each 32 ms frame's level and speech
probability."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from melvin_trio.core.vad import FRAME_SAMPLES, FRAME_SECONDS, SpeechDetector, frame_energies_db

__all__ = ["AudioWindow"]

_BYTES_PER_SAMPLE: Final = 2
_DETECT_MAX_SECONDS: Final = 30.0  # whisper detects the language on at most 30 s: the speech kept for it
_QUIET_FRAMES: Final = 3  # about 100 ms


class AudioWindow:
    """Owns the audio not yet cut away: the s16le samples from `start` to `total` (absolute sample indices), and
    per 32 ms frame its level and the detector's speech probability. Also keeps up to 30 s of the stream's speech
    (the frames the detector does not call a pause) for language detection."""

    def __init__(self, detector: SpeechDetector, pause_threshold: float, speech_threshold: float) -> None:
        self._detector = detector
        self._pause_threshold = pause_threshold
        self._speech_threshold = speech_threshold
        self._pcm = bytearray()
        self.start = 0
        self.total = 0  # samples received
        self._odd = b""  # half a sample, completed by the next frame
        self._levels: list[float] = []  # dBFS per frame from _frames_start
        self._speech: list[float] = []  # speech probability per frame from _frames_start
        self._frames_start = 0  # absolute frame index of _levels[0]
        self._tail = np.zeros(0, dtype=np.float32)  # samples not yet making a whole frame
        self._speech_audio: list[npt.NDArray[np.float32]] = []
        self._speech_audio_frames = 0
        self._after_speech = 0  # frames left to keep after a speech frame (the decision lags the sound)
        self.keep_speech = True  # keep speech for language detection (until the language is sure)

    def feed(self, pcm: bytes) -> None:
        data = self._odd + pcm
        usable = len(data) - len(data) % _BYTES_PER_SAMPLE
        self._odd = data[usable:]
        if not usable:
            return
        chunk = data[:usable]
        self._pcm += chunk
        self.total += usable // _BYTES_PER_SAMPLE
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
        joined = np.concatenate([self._tail, samples])
        whole = joined.size - joined.size % FRAME_SAMPLES
        if whole:
            frames = joined[:whole].reshape(-1, FRAME_SAMPLES)
            speech = self._detector.probabilities(frames)
            self._levels.extend(frame_energies_db(frames).tolist())
            self._speech.extend(speech.tolist())
            if self.keep_speech:
                self._keep_speech(frames, speech)
        self._tail = joined[whole:]

    def _keep_speech(self, frames: npt.NDArray[np.float32], speech: npt.NDArray[np.float32]) -> None:
        limit = int(_DETECT_MAX_SECONDS / FRAME_SECONDS)
        for frame, probability in zip(frames, speech.tolist(), strict=True):
            if self._speech_audio_frames >= limit:
                return
            if probability >= self._pause_threshold:
                self._after_speech = 3
            elif self._after_speech:
                self._after_speech -= 1
            else:
                continue
            self._speech_audio.append(frame)
            self._speech_audio_frames += 1

    @property
    def speech_audio_seconds(self) -> float:
        return self._speech_audio_frames * FRAME_SECONDS

    def speech_audio(self) -> npt.NDArray[np.float32]:
        if not self._speech_audio:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._speech_audio).astype(np.float32)

    def audio(self, end: int) -> npt.NDArray[np.float32]:
        raw = self._pcm[: (end - self.start) * _BYTES_PER_SAMPLE]
        return np.frombuffer(bytes(raw), dtype="<i2").astype(np.float32) / 32768.0

    def _slice(self, values: list[float], begin: int, end: int) -> npt.NDArray[np.float64]:
        first = max(begin // FRAME_SAMPLES - self._frames_start, 0)
        last = max(end // FRAME_SAMPLES - self._frames_start, 0)
        return np.asarray(values[first:last], dtype=np.float64)

    def levels(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        return self._slice(self._levels, begin, end)

    def speech(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        return self._slice(self._speech, begin, end)

    def speech_level(self, begin: int | None = None, end: int | None = None) -> float | None:
        """The power-mean level (dBFS) of the frames the detector calls speech (all of them if none is) between
        absolute samples `begin` and `end` (default: the whole window), or None for no audio. By default the whole
        window, not a few words' times: whisper's times for an utterance's last word often reach into the pause
        after it (measured on en-long: 10 to 22 dB under the talker)."""
        begin = self.start if begin is None else max(begin, self.start)
        end = self.total if end is None else min(end, self.total)
        levels = self.levels(begin, end)
        if levels.size == 0:
            return None
        speech = self.speech(begin, end)[: levels.size] >= self._speech_threshold
        chosen = levels[speech] if speech.any() else levels
        return float(10.0 * np.log10(np.mean(10.0 ** (chosen / 10.0))))

    def cut(self, sample: int) -> None:
        """Drop the audio before absolute `sample`."""
        sample = min(max(sample, self.start), self.total)
        del self._pcm[: (sample - self.start) * _BYTES_PER_SAMPLE]
        self.start = sample
        keep_from = sample // FRAME_SAMPLES
        drop = max(keep_from - self._frames_start, 0)
        del self._levels[:drop]
        del self._speech[:drop]
        self._frames_start = max(self._frames_start, keep_from)

    def cut_in_pause(self, pause_start: int, pause_end: int) -> int:
        """Where to cut in a pause between absolute samples `pause_start` and `pause_end`: the quietest moment of its
        middle half (the detector's decision lags the sound by a frame or two; the level is exact)."""
        quarter = (pause_end - pause_start) // 4
        return self.quietest_sample(pause_start + quarter, pause_end - quarter)

    def quietest_sample(self, begin: int, end: int) -> int:
        """The middle of the quietest 100 ms between `begin` and `end` (absolute samples): the level is exact here,
        and a cut there most likely falls between two words."""
        begin = max(begin, self.start)
        levels = self.levels(begin, end)
        if levels.size < _QUIET_FRAMES:
            return end
        power = np.convolve(10.0 ** (levels / 10.0), np.ones(_QUIET_FRAMES), mode="valid")
        first = max(begin // FRAME_SAMPLES, self._frames_start)
        best = int(np.argmin(power[::-1]))  # the latest of equally quiet places: the longest window
        frame = first + power.size - 1 - best + _QUIET_FRAMES // 2
        return min(max(frame * FRAME_SAMPLES, begin), end)
