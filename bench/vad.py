"""The field-audio matrix: streamed vs offline WER on speech at many levels and under four kinds of noise, a lone
short word, a sentence said twice, and words emitted on non-speech.

    .venv/bin/python -m bench.vad [--model tiny.en] [--only SUBSTRING] [--pass-seconds 1.0] [--json] [--cost-only]

Every cell is generated here, in code, from the shared clips (`../shared/audio/`) or synthesised, so nothing but
this file defines the matrix. Each cell is streamed through the core with the real engine by the reference driver
(`melvin_trio.core.driver`: no sockets, stream time advances `--pass-seconds` per engine call) and transcribed
offline in one engine call over the whole cell (whisper.cpp reads it 30 s at a time; `melvin-trio transcribe`
instead sends only the detector's speech, window by window); both are scored against the clip's reference text. On a
non-speech cell the figure is the number of words emitted (0 is right). `tests/test_field_audio.py` runs a few
cells of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.common import REPO, SHARED_AUDIO
from melvin_trio.audio import read_wav
from melvin_trio.core import SAMPLE_RATE
from melvin_trio.core.driver import drive
from melvin_trio.core.stream import StreamCore, StreamSettings
from melvin_trio.core.vad import make_detector
from melvin_trio.core.window import AudioWindow
from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions
from melvin_trio.evaluation import count_errors, read_manifest

RATE = SAMPLE_RATE
Audio = npt.NDArray[np.float32]

SPEECH_CLIP = "en/librispeech_2412-153948-0000.wav"  # 11.7 s, the quiet-talker clip
REPEAT_CLIP = "en/librivox-sense-and-sensibility_0880.wav"  # "he was not an ill disposed young man"
BABBLE_CLIPS = (
    "en/librispeech_1988-24833-0001.wav",
    "en/librispeech_3752-4944-0000.wav",
    "en/ljspeech_LJ001-0001.wav",
    "en/librivox-sense-and-sensibility_0920.wav",
)
SHORT_WORD_CUT = ("en/melvin_jfk.wav", 3.25, 3.95)  # "Ask", between two pauses: a lone word from a shared clip
LEVELS_DBFS = (-25.0, -35.0, -45.0, -55.0, -60.0)
NOISES = ("white", "pink", "babble", "music")
SNRS_DB = (0.0, 5.0, 10.0, 20.0)
SPEECH_LEVEL_DBFS = -25.0  # the speech level in the noise cells
LEAD_S = 1.0
TAIL_S = 2.0
NON_SPEECH_S = 60.0


@dataclass(frozen=True)
class Cell:
    name: str
    audio: Audio
    reference: str | None  # None: non-speech, every word is wrong
    group: str


def load(relative: str) -> Audio:
    return read_wav(SHARED_AUDIO / relative)[0]


def reference_of(relative: str) -> str:
    for clip in read_manifest(SHARED_AUDIO):
        if clip.path == SHARED_AUDIO / relative:
            return clip.text
    raise KeyError(relative)


def rms_db(x: Audio) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def scaled(x: Audio, level_dbfs: float) -> Audio:
    return (x * 10 ** ((level_dbfs - rms_db(x)) / 20)).astype(np.float32)


def silence(seconds: float) -> Audio:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def padded(x: Audio, lead: float = LEAD_S, tail: float = TAIL_S) -> Audio:
    return np.concatenate([silence(lead), x, silence(tail)])


def white(n: int, seed: int = 1) -> Audio:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def pink(n: int, seed: int = 2) -> Audio:
    """1/f noise: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n).astype(np.float32)


def babble(n: int) -> Audio:
    """Four other talkers at once, looped to length."""
    out = np.zeros(n, dtype=np.float32)
    for i, name in enumerate(BABBLE_CLIPS):
        voice = scaled(load(name), -30.0)
        voice = np.roll(np.resize(voice, n), i * RATE // 3)
        out += voice
    return out


def music(n: int, seed: int = 3) -> Audio:
    """Synthetic instrumental music: chords of harmonic tones (decaying notes, four a second) over a bass line."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    out = np.zeros(n, dtype=np.float64)
    note = RATE // 4
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    for start in range(0, n, note):
        length = min(note * 2, n - start)
        tt = t[:length]
        envelope = np.minimum(tt / 0.01, 1.0) * np.exp(-tt * 4.0)
        for f0 in rng.choice(scale, size=3, replace=False):
            for h in range(1, 6):
                out[start : start + length] += envelope * np.sin(2 * np.pi * f0 * h * tt) / h
    bass = 0.5 * np.sin(2 * np.pi * 110.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    return (out + bass).astype(np.float32)


NOISE_MAKERS: dict[str, Callable[[int], Audio]] = {"white": white, "pink": pink, "babble": babble, "music": music}


def speech_in_noise(noise: str, snr_db: float, clip: str = SPEECH_CLIP) -> Audio:
    speech = padded(scaled(load(clip), SPEECH_LEVEL_DBFS))
    inside = slice(int(LEAD_S * RATE), speech.size - int(TAIL_S * RATE))
    noise_audio = NOISE_MAKERS[noise](speech.size)
    level = rms_db(speech[inside]) - snr_db
    return (speech + scaled(noise_audio, level)).astype(np.float32)


def short_word() -> tuple[Audio, str | None]:
    """A lone short word with no silence around it: espeak-ng's "Yes." (0.45 s) where it is installed, else "Ask"
    cut from JFK."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "yes.wav"
            subprocess.run(["espeak-ng", "-w", str(path), "Yes."], check=True, capture_output=True)
            from melvin_trio.audio import resample

            x, info = read_wav(path)
            x = resample(x, info.sample_rate, RATE)
            return scaled(x[: int(0.45 * RATE)], -25.0), "yes"
    return shortest_word_cut(), "ask"


def shortest_word_cut() -> Audio:
    name, begin, end = SHORT_WORD_CUT
    return load(name)[int(begin * RATE) : int(end * RATE)]


def repeated(pause_s: float) -> Audio:
    clip = load(REPEAT_CLIP)
    return padded(np.concatenate([clip, silence(pause_s), clip]))


def build_cells(only: str | None = None) -> list[Cell]:
    speech_ref = reference_of(SPEECH_CLIP)
    twice = f"{reference_of(REPEAT_CLIP)} {reference_of(REPEAT_CLIP)}"
    n = int(NON_SPEECH_S * RATE)
    makers: list[tuple[str, str, Callable[[], tuple[Audio, str | None]]]] = []

    def add(name: str, group: str, make: Callable[[], Audio], reference: str | None) -> None:
        makers.append((name, group, lambda: (make(), reference)))

    for level in LEVELS_DBFS:
        add(f"level {level:.0f} dBFS", "level", partial(level_cell, level), speech_ref)
    for noise in NOISES:
        for snr in SNRS_DB:
            add(f"{noise} {snr:.0f} dB SNR", "noise", partial(speech_in_noise, noise, snr), speech_ref)
    add("white 7 dB SNR", "noise", partial(speech_in_noise, "white", 7.0), speech_ref)
    makers.append(("lone short word", "word", short_word))
    for pause in (1.0, 3.0, 10.0):
        add(f"said twice, {pause:.0f} s pause", "repeat", partial(repeated, pause), twice)
    add("60 s silence", "non-speech", partial(silence, NON_SPEECH_S), None)
    add("60 s white noise -40 dBFS", "non-speech", lambda: scaled(white(n), -40.0), None)
    add("60 s pink noise -40 dBFS", "non-speech", lambda: scaled(pink(n), -40.0), None)
    add("60 s music -30 dBFS", "non-speech", lambda: scaled(music(n), -30.0), None)
    cells = []
    for name, group, make in makers:
        if only is None or only in name:
            audio, reference = make()
            cells.append(Cell(name, np.clip(audio, -1.0, 1.0), reference, group))
    return cells


def level_cell(level_dbfs: float) -> Audio:
    return padded(scaled(load(SPEECH_CLIP), level_dbfs))


def pcm16(x: Audio) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def streamed_words(engine: WhisperCppEngine, audio: Audio, pass_seconds: float, language: str = "en") -> list[str]:
    core = StreamCore(StreamSettings(), language)
    run = drive(core, pcm16(audio), engine, step_seconds=0.1, pass_seconds=pass_seconds)
    return [w.text for w in run.words]


def offline_words(engine: WhisperCppEngine, audio: Audio, language: str = "en") -> list[str]:
    return [w.text for w in engine.transcribe(audio, language=language)]


def score(reference: str | None, words: list[str]) -> float:
    if reference is None:
        return float(len(words))
    return count_errors(reference, " ".join(words), "en").wer


def detector_cost(seconds: float = 60.0) -> tuple[float, float]:
    """CPU seconds the speech detector and the audio window spend on `seconds` of speech fed in 0.25 s chunks, as
    a live stream is: (CPU seconds, percent of one core)."""
    clip = load(SPEECH_CLIP)
    audio = np.tile(clip, int(np.ceil(seconds * RATE / clip.size)))[: int(seconds * RATE)]
    pcm = pcm16(audio)
    settings = StreamSettings()
    window = AudioWindow(
        make_detector(settings.vad_detector), settings.vad_pause_threshold, settings.vad_speech_threshold
    )
    chunk = int(0.25 * RATE) * 2
    started = time.process_time()
    for i in range(0, len(pcm), chunk):
        window.feed(pcm[i : i + chunk])
    cpu = time.process_time() - started
    return cpu, 100.0 * cpu / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--only", default=None, help="only the cells whose name holds this")
    parser.add_argument("--pass-seconds", type=float, default=1.0, help="stream time one engine call takes")
    parser.add_argument("--json", action="store_true", help="one JSON object per cell as well")
    parser.add_argument("--verbose", action="store_true", help="print the words of every cell")
    parser.add_argument("--cost-only", action="store_true", help="only the speech detector's CPU cost per stream")
    args = parser.parse_args()
    cpu, percent = detector_cost()
    print(
        f"speech detector ({StreamSettings().vad_detector}) + audio window: {cpu:.2f} s CPU per 60 s of stream, "
        f"{percent:.2f} % of one core per live stream"
    )
    if args.cost_only:
        return 0
    engine = WhisperCppEngine(REPO / "models" / f"ggml-{args.model}.bin", WhisperCppOptions(n_threads=2))
    print(f"{'cell':<28} {'offline':>8} {'streamed':>9}  {'verdict'}")
    failures = 0
    started = time.perf_counter()
    for cell in build_cells(args.only):
        offline = offline_words(engine, cell.audio) if cell.reference is not None else []
        streamed = streamed_words(engine, cell.audio, args.pass_seconds)
        off, st = score(cell.reference, offline), score(cell.reference, streamed)
        if cell.reference is None:
            ok = st == 0
            print(f"{cell.name:<28} {'-':>8} {int(st):>6} w.  {'ok' if ok else 'WORDS ON NON-SPEECH'}")
        else:
            ok = st <= off + 0.05
            print(f"{cell.name:<28} {off:>8.2f} {st:>9.2f}  {'ok' if ok else 'WORSE'}")
        if args.verbose or (cell.reference is None and streamed):
            print(f"    streamed: {' '.join(streamed)!r}")
            if cell.reference is not None:
                print(f"    offline:  {' '.join(offline)!r}")
        if args.json:
            entry = {"cell": cell.name, "offline": off, "streamed": st, "words": streamed}
            print(json.dumps(entry, ensure_ascii=False))
        failures += not ok
        sys.stdout.flush()
    elapsed = time.perf_counter() - started
    print(f"{failures} cells worse than offline + 0.05 (or with words on non-speech); {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
