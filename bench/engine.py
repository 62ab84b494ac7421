"""Engine benchmark: whisper.cpp speed per window size, at full and reduced audio_ctx, WER and peak RSS.

    .venv/bin/python -m bench.engine [--models tiny.en base] [--repeat 3] [--threads 2]

Each model runs in its own child process so that its peak RSS is its own. Prints a markdown table and writes
bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from typing import Any

from bench.common import REPO, clips, long_form, machine, peak_rss_mb, save, time_windows
from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions, reduced_audio_ctx
from melvin_trio.evaluation import ErrorCount, count_errors

WINDOWS = (5.0, 10.0, 15.0)
LANGUAGE = {"tiny.en": "en", "base": "de"}


def measure(model: str, repeat: int, threads: int) -> dict[str, Any]:
    language = LANGUAGE.get(model, "en")
    path = REPO / "models" / f"ggml-{model}.bin"
    stream = long_form(clips(language))
    result: dict[str, Any] = {"model": model, "language": language, "threads": threads, "windows": []}
    for reduce in (False, True):
        engine = WhisperCppEngine(path, WhisperCppOptions(n_threads=threads, reduce_audio_ctx=reduce), name=model)
        engine.transcribe(stream[:16000], language=language)  # warm-up: first call allocates
        for seconds in WINDOWS:
            median = time_windows(partial(engine.transcribe, language=language), stream, seconds, repeat)
            result["windows"].append(
                {
                    "seconds": seconds,
                    "audio_ctx": reduced_audio_ctx(seconds) if reduce else 1500,
                    "median_s": round(median, 3),
                    "rtf": round(median / seconds, 3),
                }
            )
        engine.close()
    engine = WhisperCppEngine(path, WhisperCppOptions(n_threads=threads, reduce_audio_ctx=False), name=model)
    total = ErrorCount(0, 0)
    t0 = time.perf_counter()
    audio_seconds = 0.0
    for clip in clips(language):
        words = engine.transcribe(clip.audio(), language=language)
        total = total + count_errors(clip.text, " ".join(w.text for w in words), language)
        audio_seconds += clip.seconds
    result["wer"] = round(total.wer, 4)
    result["wer_words"] = total.reference_words
    result["offline_rtf"] = round((time.perf_counter() - t0) / audio_seconds, 3)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeat, args.threads)))
        return 0
    results = []
    for model in args.models:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.engine",
                "--child",
                model,
                "--repeat",
                str(args.repeat),
                "--threads",
                str(args.threads),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| model | window | audio_ctx | s/call | RTF |")
    print("|---|---|---|---|---|")
    for r in results:
        for w in r["windows"]:
            print(f"| {r['model']} | {w['seconds']:.0f} s | {w['audio_ctx']} | {w['median_s']:.3f} | {w['rtf']:.3f} |")
    print()
    print("| model | language | offline WER | words | offline RTF | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['language']} | {r['wer']:.3f} | {r['wer_words']} | {r['offline_rtf']:.3f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    path = save("engine", {"machine": machine(), "results": results})
    print(f"\nwritten to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
