"""Engine benchmark: f16 against the quantized formats, and the encoder context (`audio_ctx`) per window length.

    .venv/bin/python -m bench.engine [--models tiny.en base] [--formats f16 q8_0 q5_1 q5_0] [--repeat 3]
                                     [--threads 2] [--sweep-formats f16] [--ctx 256 512 768 1024 1280 1500]
                                     [--no-formats] [--no-sweep] [--output engine]

Formats (`models/ggml-<model>[-<format>].bin`; `melvin-trio models install-default --quantize q8_0 q5_1 q5_0`):

- speed: seconds per `transcribe` call on 5, 10 and 15 s windows cut from the language's clips joined into one
  stream, at the full encoder context. All formats of a model are loaded in one child process and called in turn,
  window by window, so a busy machine slows them alike and the ratios to f16 hold;
- WER of each whole clip transcribed offline (tiny.en on the English clips, base on the German ones), the peak RSS
  of a process that loads only that format and transcribes the clips, and the file size.

Context sweep (`--sweep-formats`): the stream is cut into consecutive windows of 5, 10 and 15 s, each window is
transcribed at every `--ctx` (20 ms frames; 1500 = whisper's 30 s), and for each: the WER of the windows' joined
text against the reference, its ratio to the full context's, seconds per call, and what happens to the word times:
the median distance of each word's end from the full context's end for the same word (aligned by text), the share
of words whose end sits in the window's last 0.3 s although the full context put it earlier (collapsed), and the
words of the full context's last 1.5 s that the reduced one does not have (dropped at the edge).

Prints markdown tables and writes bench/results/<output>.json.
"""

from __future__ import annotations

import argparse
import difflib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.common import REPO, clips, long_form, machine, peak_rss_mb, save
from melvin_trio.engine.base import SAMPLE_RATE, Word
from melvin_trio.engine.whispercpp import FULL_AUDIO_CTX, WhisperCppEngine, WhisperCppOptions, reduced_audio_ctx
from melvin_trio.evaluation import ErrorCount, count_errors, normalise

WINDOWS: Final = (5.0, 10.0, 15.0)
LANGUAGE: Final = {"tiny.en": "en", "base": "de"}
FORMATS: Final = ("f16", "q8_0", "q5_1", "q5_0")
CTX_CANDIDATES: Final = (256, 512, 768, 1024, 1280, 1500)
WER_RATIO_LIMIT: Final = 1.10
COLLAPSE_S: Final = 0.3
EDGE_S: Final = 1.5


def model_file(model: str, fmt: str) -> Path:
    return REPO / "models" / (f"ggml-{model}.bin" if fmt == "f16" else f"ggml-{model}-{fmt}.bin")


def _text(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


def measure_format(model: str, fmt: str, threads: int) -> dict[str, Any]:
    """WER on the clips, offline RTF and the peak RSS of a process holding only this format."""
    language = LANGUAGE.get(model, "en")
    path = model_file(model, fmt)
    engine = WhisperCppEngine(path, WhisperCppOptions(n_threads=threads), name=f"{model}-{fmt}")
    total = ErrorCount(0, 0)
    t0 = time.perf_counter()
    audio_seconds = 0.0
    for clip in clips(language):
        total = total + count_errors(clip.text, _text(engine.transcribe(clip.audio(), language=language)), language)
        audio_seconds += clip.seconds
    return {
        "model": model,
        "format": fmt,
        "wer": round(total.wer, 4),
        "wer_words": total.reference_words,
        "offline_rtf": round((time.perf_counter() - t0) / audio_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "file_mb": round(path.stat().st_size / (1 << 20), 1),
    }


def measure_speed(model: str, formats: list[str], repeat: int, threads: int) -> dict[str, Any]:
    """Seconds per call per window length, all formats loaded at once and called in turn."""
    language = LANGUAGE.get(model, "en")
    stream = long_form(clips(language))
    engines = {fmt: WhisperCppEngine(model_file(model, fmt), WhisperCppOptions(n_threads=threads)) for fmt in formats}
    for engine in engines.values():
        engine.transcribe(stream[:SAMPLE_RATE], language=language)  # warm-up: the first call allocates
    times: dict[str, dict[str, list[float]]] = {fmt: {str(s): [] for s in WINDOWS} for fmt in formats}
    for seconds in WINDOWS:
        n = int(seconds * SAMPLE_RATE)
        for i in range(repeat):
            start = (i * n) % max(1, stream.size - n)
            for fmt, engine in engines.items():
                t0 = time.perf_counter()
                engine.transcribe(stream[start : start + n], language=language)
                times[fmt][str(seconds)].append(time.perf_counter() - t0)
    return {
        fmt: {s: round(statistics.median(values), 3) for s, values in per_window.items()}
        for fmt, per_window in times.items()
    }


def _aligned_ends(full: list[Word], other: list[Word], language: str) -> list[tuple[float, float]]:
    """(end in `full`, end in `other`) for each word the two transcripts share, aligned by normalised text."""
    a = [(token, w.end) for w in full for token in normalise(w.text, language)]
    b = [(token, w.end) for w in other for token in normalise(w.text, language)]
    matcher = difflib.SequenceMatcher(a=[t for t, _ in a], b=[t for t, _ in b], autojunk=False)
    return [
        (a[block.a + k][1], b[block.b + k][1]) for block in matcher.get_matching_blocks() for k in range(block.size)
    ]


def _edge_words(full: list[Word], other: list[Word], seconds: float, language: str) -> tuple[int, int]:
    """Words the full context ends in the window's last EDGE_S, and how many of them `other` lacks."""
    edge = [token for w in full if w.end >= seconds - EDGE_S for token in normalise(w.text, language)]
    if not edge:
        return 0, 0
    tail = [token for w in other for token in normalise(w.text, language)][-len(edge) - 3 :]
    matcher = difflib.SequenceMatcher(a=edge, b=tail, autojunk=False)
    found = sum(block.size for block in matcher.get_matching_blocks())
    return len(edge), len(edge) - found


def measure_ctx(model: str, fmt: str, ctxs: list[int], threads: int) -> list[dict[str, Any]]:
    """For each window length and audio_ctx: WER, time per call, and the word times against the full context."""
    language = LANGUAGE.get(model, "en")
    selected = clips(language)
    stream = long_form(selected)
    reference = " ".join(c.text for c in selected)
    rows: list[dict[str, Any]] = []
    for seconds in WINDOWS:
        n = int(seconds * SAMPLE_RATE)
        windows = [stream[i : i + n] for i in range(0, stream.size - n // 2, n)]
        full_words: list[list[Word]] = []
        for ctx in sorted(set(ctxs) | {FULL_AUDIO_CTX}, reverse=True):
            options = WhisperCppOptions(n_threads=threads, audio_ctx=0 if ctx >= FULL_AUDIO_CTX else ctx)
            engine = WhisperCppEngine(model_file(model, fmt), options)
            engine.transcribe(stream[:SAMPLE_RATE], language=language)  # warm-up: the first call allocates
            words, took = [], []
            for window in windows:
                t0 = time.perf_counter()
                words.append(engine.transcribe(window, language=language))
                took.append(time.perf_counter() - t0)
            engine.close()
            if ctx == FULL_AUDIO_CTX:
                full_words = words
            wer = count_errors(reference, " ".join(_text(w) for w in words), language).wer
            shifts, collapsed, edge, dropped = [], 0, 0, 0
            for window, full, other in zip(windows, full_words, words, strict=True):
                length = window.size / SAMPLE_RATE
                for full_end, end in _aligned_ends(full, other, language):
                    shifts.append(abs(end - full_end))
                    collapsed += end >= length - COLLAPSE_S and full_end < length - COLLAPSE_S - 0.5
                e, d = _edge_words(full, other, length, language)
                edge, dropped = edge + e, dropped + d
            rows.append(
                {
                    "model": model,
                    "format": fmt,
                    "window_s": seconds,
                    "audio_ctx": ctx,
                    "headroom_s": round(ctx * 0.02 - seconds, 2),
                    "rule": ctx == reduced_audio_ctx(seconds),
                    "windows": len(windows),
                    "wer": round(wer, 4),
                    "s_per_call": round(statistics.median(took), 3),
                    "end_shift_median_s": round(statistics.median(shifts), 3) if shifts else None,
                    "end_shift_p90_s": round(float(np.percentile(shifts, 90)), 3) if shifts else None,
                    "collapsed_share": round(collapsed / len(shifts), 3) if shifts else None,
                    "edge_words": edge,
                    "edge_dropped": dropped,
                }
            )
        full_wer = next(r["wer"] for r in rows if r["window_s"] == seconds and r["audio_ctx"] == FULL_AUDIO_CTX)
        for r in rows:
            if r["window_s"] == seconds:
                r["wer_ratio"] = round(r["wer"] / full_wer, 3) if full_wer else None
    return rows


def _child(args: list[str]) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.engine {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sweep-formats", nargs="+", default=["f16"], choices=FORMATS)
    parser.add_argument("--ctx", nargs="+", type=int, default=list(CTX_CANDIDATES))
    parser.add_argument("--no-formats", action="store_true", help="skip the format comparison")
    parser.add_argument("--no-sweep", action="store_true", help="skip the audio_ctx sweep")
    parser.add_argument("--output", default="engine")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, model, *rest = args.child
        if kind == "format":
            print(json.dumps(measure_format(model, rest[0], args.threads)))
        elif kind == "speed":
            print(json.dumps(measure_speed(model, rest, args.repeat, args.threads)))
        else:
            print(json.dumps(measure_ctx(model, rest[0], args.ctx, args.threads)))
        return 0
    common = ["--threads", str(args.threads), "--repeat", str(args.repeat), "--ctx", *map(str, args.ctx)]
    formats: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    for model in args.models:
        present = [fmt for fmt in args.formats if model_file(model, fmt).is_file()]
        missing = sorted(set(args.formats) - set(present))
        if missing:
            print(
                f"{model}: no file for {missing} (melvin-trio models install-default --quantize ...)", file=sys.stderr
            )
        if not args.no_formats and present:
            speed = _child(["--child", "speed", model, *present, *common])
            for fmt in present:
                row = _child(["--child", "format", model, fmt, *common])
                row["s_per_call"] = speed[fmt]
                formats.append(row)
                print(f"  {model} {fmt}: WER {row['wer']:.3f}, {speed[fmt]}", file=sys.stderr)
        if not args.no_sweep:
            for fmt in args.sweep_formats:
                if model_file(model, fmt).is_file():
                    sweep += _child(["--child", "ctx", model, fmt, *common])
    if formats:
        print(
            "| model | format | file MB | 5 s | 10 s | 15 s | vs f16 (15 s) | WER | words | offline RTF | peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in formats:
            base = next((f for f in formats if f["model"] == r["model"] and f["format"] == "f16"), None)
            s = r["s_per_call"]
            ratio = f"{s['15.0'] / base['s_per_call']['15.0']:.2f}" if base else "-"
            print(
                f"| {r['model']} | {r['format']} | {r['file_mb']} | {s['5.0']:.3f} | {s['10.0']:.3f} | {s['15.0']:.3f} "
                f"| {ratio} | {r['wer']:.3f} | {r['wer_words']} | {r['offline_rtf']:.3f} | {r['peak_rss_mb']:.0f} |"
            )
        print()
    if sweep:
        print(
            "| model | format | window s | audio_ctx | headroom s | WER | vs full | s/call | end shift p50 / p90 s "
            "| collapsed | edge words dropped |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sweep:
            mark = " (rule)" if r["rule"] else ""
            print(
                f"| {r['model']} | {r['format']} | {r['window_s']:.0f} | {r['audio_ctx']}{mark} | {r['headroom_s']} "
                f"| {r['wer']:.3f} | {r['wer_ratio']} | {r['s_per_call']:.3f} "
                f"| {r['end_shift_median_s']} / {r['end_shift_p90_s']} | {r['collapsed_share']} "
                f"| {r['edge_dropped']}/{r['edge_words']} |"
            )
        print()
        for model in sorted({r["model"] for r in sweep}):
            for fmt in sorted({r["format"] for r in sweep if r["model"] == model}):
                for seconds in WINDOWS:
                    ok = [
                        r["audio_ctx"]
                        for r in sweep
                        if (r["model"], r["format"], r["window_s"]) == (model, fmt, seconds)
                        and r["wer_ratio"] is not None
                        and r["wer_ratio"] <= WER_RATIO_LIMIT
                    ]
                    print(
                        f"{model} {fmt} {seconds:.0f} s: smallest audio_ctx within {WER_RATIO_LIMIT}x of full WER: "
                        f"{min(ok) if ok else '-'}"
                    )
    path = save(args.output, {"machine": machine(), "threads": args.threads, "formats": formats, "ctx_sweep": sweep})
    print(f"\nwritten to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
