"""The audio window of a stream: the samples not yet cut away, with each 32 ms frame's level and speech
probability."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.vad import FRAME_SAMPLES, FRAME_SECONDS, SpeechDetector, frame_energies_db, pause_runs

__all__ = ["AudioWindow"]

_BYTES_PER_SAMPLE: Final = 2
_DETECT_MAX_SECONDS: Final = 30.0  # whisper detects the language on at most 30 s: the speech kept for it
_QUIET_FRAMES: Final = 3  # about 100 ms
# The noise floor is the level this share of a window's frames is under. Measured on the shared clips, whole (their
# speech level over it): clean English 17.5-43.9 dB, clean German (Common Voice) 45.9-72.5, the noisy German
# LibriVox recordings 11.2-13.5; white noise at 5 / 10 / 20 dB SNR 7.2 / 11.6 / 21.3; pink, babble and music at
# 5 dB 10.0 / 10.8 / 10.2 (bench/vad.py's cells).
_NOISE_FLOOR_PERCENT: Final = 5.0


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

    # --- what the detector heard: speech frames (at least the speech threshold), pauses (under the pause threshold)

    def speech_seconds(self, begin: int, end: int) -> float:
        """Seconds of speech frames between absolute samples `begin` and `end`."""
        return float(np.count_nonzero(self.speech(begin, end) >= self._speech_threshold)) * FRAME_SECONDS

    def frame_masks(self, begin: int, end: int) -> tuple[int, list[bool], list[bool]]:
        """The first whole frame at or after absolute sample `begin`, and for each frame from there to `end`
        whether the detector calls it speech and whether it calls it a pause (frames in between are neither)."""
        first_frame = -(-begin // FRAME_SAMPLES)
        speech = self.speech(first_frame * FRAME_SAMPLES, end)
        return (
            first_frame,
            (speech >= self._speech_threshold).tolist(),
            (speech < self._pause_threshold).tolist(),
        )

    def pauses(self, begin: int, end: int, seconds: float) -> list[tuple[float, float]]:
        """The pauses of at least `seconds` between absolute samples `begin` and `end`: (start, end) in stream
        seconds, runs of pause frames."""
        first_frame = -(-begin // FRAME_SAMPLES)
        speech = self.speech(first_frame * FRAME_SAMPLES, end)
        runs = pause_runs(speech, self._pause_threshold, max(round(seconds / FRAME_SECONDS), 1))
        return [((first_frame + a) * FRAME_SECONDS, (first_frame + b) * FRAME_SECONDS) for a, b in runs]

    def has_pause(self, begin: float, end: float, seconds: float) -> bool:
        """Whether the detector heard a pause of at least `seconds` between two stream times."""
        speech = self.speech(int(begin * SAMPLE_RATE), int(end * SAMPLE_RATE))
        return bool(pause_runs(speech, self._pause_threshold, max(round(seconds / FRAME_SECONDS), 1)))

    def voiced_frames(self, begin: int, end: int) -> npt.NDArray[np.intp]:
        """Absolute indices of the frames between samples `begin` and `end` the detector does not call a pause."""
        begin = max(begin, self.start)
        return begin // FRAME_SAMPLES + np.flatnonzero(self.speech(begin, end) >= self._pause_threshold)

    def speech_start(self, begin: int, end: int, onset_seconds: float) -> float:
        """Stream time where the first frame that is not a pause begins, between absolute samples `begin` and
        `end`, less `onset_seconds` (a soft onset comes before the detector hears it), not before `begin`."""
        voiced = self.voiced_frames(begin, end)
        if voiced.size == 0:
            return begin / SAMPLE_RATE
        return max(int(voiced[0]) * FRAME_SAMPLES / SAMPLE_RATE - onset_seconds, begin / SAMPLE_RATE)

    def speech_end(self, end: int) -> float:
        """Stream time where the last frame of the window before absolute sample `end` that is not a pause ends
        (a frame later: the detector's decision lags the sound), or `end` if every frame is a pause."""
        voiced = self.voiced_frames(self.start, end)
        if voiced.size == 0:
            return end / SAMPLE_RATE
        return min((int(voiced[-1]) + 2) * FRAME_SAMPLES, end) / SAMPLE_RATE

    def utterance_after(
        self, begin: int, end: int, after: float, pause_seconds: float, min_speech_seconds: float
    ) -> tuple[int, int] | None:
        """The first utterance between absolute samples `begin` and `end` that starts after a pause of
        `pause_seconds`, later than stream time `after`, and holds `min_speech_seconds` of speech: (the pause's
        start, the utterance's start) as absolute samples, or None."""
        first_frame, is_speech, is_pause = self.frame_masks(begin, end)
        pause = round(pause_seconds / FRAME_SECONDS)
        needed = round(min_speech_seconds / FRAME_SECONDS)
        after_frame = after / FRAME_SECONDS - first_frame
        quiet = 0
        pause_start: int | None = None  # frame where the last long enough pause began
        start: int | None = None  # the frame where the utterance after it began
        count = 0
        for index, (voiced, paused) in enumerate(zip(is_speech, is_pause, strict=True)):
            if paused:
                quiet += 1
                if quiet >= pause:
                    pause_start, start, count = index + 1 - quiet, None, 0
                continue
            quiet = 0
            if pause_start is None or not voiced:
                continue
            if start is None:
                start = index
            count += 1
            if count >= needed and start > after_frame:
                return (first_frame + pause_start) * FRAME_SAMPLES, (first_frame + start) * FRAME_SAMPLES
        return None

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

    def loud_span(self, begin: int, end: int, level_dbfs: float) -> tuple[int, int] | None:
        """Where the first 100 ms between absolute samples `begin` and `end` that reach `level_dbfs` in every frame
        begin, and where the last such 100 ms end (absolute samples), or None if none do. 100 ms, not a frame: a
        frame of babble or a click may peak where the talker's syllables do, but a vowel holds its level."""
        begin = max(begin, self.start)
        levels = self.levels(begin, end)
        if levels.size < _QUIET_FRAMES:
            return None
        loud = levels >= level_dbfs
        held = np.flatnonzero(np.convolve(loud, np.ones(_QUIET_FRAMES, dtype=np.int64), mode="valid") == _QUIET_FRAMES)
        if held.size == 0:
            return None
        first = max(begin // FRAME_SAMPLES, self._frames_start)
        return (first + int(held[0])) * FRAME_SAMPLES, min((first + int(held[-1]) + _QUIET_FRAMES) * FRAME_SAMPLES, end)

    def noise_floor(self, begin: int, end: int, min_seconds: float) -> float | None:
        """The room's noise floor (dBFS) between absolute samples `begin` and `end`: the level that 5 % of the
        frames are under (a minimum-statistics estimate: speech leaves gaps between words even without a pause, and
        the detector calls steady noise a pause but babble speech). None for less than `min_seconds` of audio."""
        levels = self.levels(max(begin, self.start), min(end, self.total))
        if levels.size * FRAME_SECONDS < min_seconds:
            return None
        return float(np.percentile(levels, _NOISE_FLOOR_PERCENT))

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
