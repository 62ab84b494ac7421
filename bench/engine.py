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
import numpy.typing as npt

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
    cpu: dict[str, dict[str, list[float]]] = {fmt: {str(s): [] for s in WINDOWS} for fmt in formats}
    for seconds in WINDOWS:
        n = int(seconds * SAMPLE_RATE)
        for i in range(repeat):
            start = (i * n) % max(1, stream.size - n)
            for fmt, engine in engines.items():
                t0, c0 = time.perf_counter(), time.process_time()
                engine.transcribe(stream[start : start + n], language=language)
                times[fmt][str(seconds)].append(time.perf_counter() - t0)
                cpu[fmt][str(seconds)].append(time.process_time() - c0)
            last = ", ".join(
                f"{fmt} {times[fmt][str(seconds)][-1]:.2f} s ({cpu[fmt][str(seconds)][-1]:.2f} CPU s)"
                for fmt in formats
            )
            print(f"    {model} {seconds:.0f} s window {i + 1}/{repeat}: {last}", file=sys.stderr)
    return {
        fmt: {
            "wall": {s: round(statistics.median(values), 3) for s, values in times[fmt].items()},
            "cpu": {s: round(statistics.median(values), 3) for s, values in cpu[fmt].items()},
        }
        for fmt in formats
    }


def measure_workers(model: str, fmt: str, streams: int, seconds: float, repeat: int) -> dict[str, Any]:
    """One context with two threads against two contexts with one thread each, serving `streams` passes a cycle.

    A cycle gives each of `streams` streams one pass over its own `seconds` window: the 1x2 context runs them one
    after another, the 2x1 contexts two at a time (seats alternate between them, as the server assigns them). The
    two set-ups alternate cycle by cycle, so a busy machine slows both alike; reported: the medians of the cycle
    time (until every stream has had its pass) and of the time from a cycle's start to each pass's end.
    """
    import threading

    language = LANGUAGE.get(model, "en")
    stream = long_form(clips(language))
    n = int(seconds * SAMPLE_RATE)
    path = model_file(model, fmt)
    one = WhisperCppEngine(path, WhisperCppOptions(n_threads=2))
    two = [WhisperCppEngine(path, WhisperCppOptions(n_threads=1)) for _ in range(2)]
    for engine in (one, *two):
        engine.transcribe(stream[:SAMPLE_RATE], language=language)
    results: dict[str, dict[str, list[float]]] = {k: {"cycle": [], "pass": []} for k in ("1x2", "2x1")}
    for cycle in range(repeat):
        windows = [stream[((cycle * streams + i) * n) % (stream.size - n) :][:n] for i in range(streams)]
        t0 = time.perf_counter()
        for window in windows:
            one.transcribe(window, language=language)
            results["1x2"]["pass"].append(time.perf_counter() - t0)
        results["1x2"]["cycle"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ends: list[float] = []

        def serve(engine: WhisperCppEngine, mine: list[npt.NDArray[np.float32]], ends: list[float], t0: float) -> None:
            for window in mine:
                engine.transcribe(window, language=language)
                ends.append(time.perf_counter() - t0)

        threads = [
            threading.Thread(target=serve, args=(engine, windows[k :: len(two)], ends, t0))
            for k, engine in enumerate(two)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results["2x1"]["pass"] += ends
        results["2x1"]["cycle"].append(max(ends))
        print(
            f"    cycle {cycle + 1}/{repeat}: 1x2 {results['1x2']['cycle'][-1]:.2f} s, "
            f"2x1 {results['2x1']['cycle'][-1]:.2f} s",
            file=sys.stderr,
        )
    return {
        "model": model,
        "format": fmt,
        "streams": streams,
        "window_s": seconds,
        "cycles": repeat,
        **{setup: {k: round(statistics.median(v), 3) for k, v in values.items()} for setup, values in results.items()},
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


def measure_ctx(model: str, fmt: str, ctxs: list[int], threads: int, max_seconds: float | None) -> list[dict[str, Any]]:
    """For each window length and audio_ctx: WER, time per call, and the word times against the full context."""
    language = LANGUAGE.get(model, "en")
    selected, total = [], 0.0
    for clip in clips(language):
        if max_seconds is not None and total >= max_seconds:
            break
        selected.append(clip)
        total += clip.seconds + 1.5
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
            words, took, cpu = [], [], []
            for window in windows:
                t0, c0 = time.perf_counter(), time.process_time()
                words.append(engine.transcribe(window, language=language))
                took.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            engine.close()
            print(f"    {model} {fmt} {seconds:.0f} s windows, audio_ctx {ctx}: done", file=sys.stderr)
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
                    "cpu_s_per_call": round(statistics.median(cpu), 3),
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
        [sys.executable, "-m", "bench.engine", *args], cwd=REPO, stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.engine {' '.join(args)} failed (exit status {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wer-threads", type=int, help="threads for the WER and RSS runs (default: --threads)")
    parser.add_argument("--sweep-formats", nargs="+", default=["f16"], choices=FORMATS)
    parser.add_argument("--ctx", nargs="+", type=int, default=list(CTX_CANDIDATES))
    parser.add_argument("--sweep-seconds", type=float, help="sweep only the clips up to about this much audio")
    parser.add_argument("--no-formats", action="store_true", help="skip the format comparison")
    parser.add_argument(
        "--workers-check", type=int, metavar="STREAMS", help="compare 1 context x 2 threads with 2 x 1 for STREAMS"
    )
    parser.add_argument("--workers-window", type=float, default=5.0, help="seconds of audio per pass (workers check)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the audio_ctx sweep")
    parser.add_argument("--output", default="engine")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, model, *rest = args.child
        if kind == "format":
            print(json.dumps(measure_format(model, rest[0], args.wer_threads or args.threads)))
        elif kind == "workers":
            print(json.dumps(measure_workers(model, rest[0], args.workers_check, args.workers_window, args.repeat)))
        elif kind == "speed":
            print(json.dumps(measure_speed(model, rest, args.repeat, args.threads)))
        else:
            print(json.dumps(measure_ctx(model, rest[0], args.ctx, args.threads, args.sweep_seconds)))
        return 0
    common = ["--threads", str(args.threads), "--repeat", str(args.repeat), "--ctx", *map(str, args.ctx)]
    if args.workers_check:
        common += ["--workers-check", str(args.workers_check), "--workers-window", str(args.workers_window)]
    if args.wer_threads:
        common += ["--wer-threads", str(args.wer_threads)]
    if args.sweep_seconds:
        common += ["--sweep-seconds", str(args.sweep_seconds)]
    formats: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    for model in args.models:
        if args.workers_check:
            for fmt in args.sweep_formats:
                workers.append(_child(["--child", "workers", model, fmt, *common]))
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
                print(f"  {model} {fmt}: WER {row['wer']:.3f}, {speed[fmt]}", file=sys.stderr, flush=True)
        if not args.no_sweep:
            for fmt in args.sweep_formats:
                if model_file(model, fmt).is_file():
                    sweep += _child(["--child", "ctx", model, fmt, *common])
    if formats:
        print(
            "| model | format | file MB | wall s/call 5 / 10 / 15 s | CPU s/call 5 / 10 / 15 s | CPU vs f16 (mean) "
            "| WER | words | offline RTF | peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in formats:
            f16 = next((f for f in formats if f["model"] == r["model"] and f["format"] == "f16"), None)
            wall, cpu = r["s_per_call"]["wall"], r["s_per_call"]["cpu"]
            ratio = f"{statistics.mean(cpu[w] / f16['s_per_call']['cpu'][w] for w in cpu):.2f}" if f16 else "-"
            print(
                f"| {r['model']} | {r['format']} | {r['file_mb']} | {' / '.join(f'{wall[w]:.2f}' for w in wall)} "
                f"| {' / '.join(f'{cpu[w]:.2f}' for w in cpu)} | {ratio} | {r['wer']:.3f} | {r['wer_words']} "
                f"| {r['offline_rtf']:.3f} | {r['peak_rss_mb']:.0f} |"
            )
        print()
    if sweep:
        print(
            "| model | format | window s | audio_ctx | headroom s | WER | vs full | s/call | CPU s/call "
            "| end shift p50 / p90 s | collapsed | edge words dropped |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sweep:
            mark = " (rule)" if r["rule"] else ""
            print(
                f"| {r['model']} | {r['format']} | {r['window_s']:.0f} | {r['audio_ctx']}{mark} | {r['headroom_s']} "
                f"| {r['wer']:.3f} | {r['wer_ratio']} | {r['s_per_call']:.3f} | {r['cpu_s_per_call']:.3f} "
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
    if workers:
        print(
            "| model | format | streams | window s | cycles | cycle s 1x2 / 2x1 | ratio | pass end s 1x2 / 2x1 "
            + "| ratio |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in workers:
            a, b = r["1x2"], r["2x1"]
            print(
                f"| {r['model']} | {r['format']} | {r['streams']} | {r['window_s']:.0f} | {r['cycles']} "
                f"| {a['cycle']:.2f} / {b['cycle']:.2f} | {b['cycle'] / a['cycle']:.2f} "
                f"| {a['pass']:.2f} / {b['pass']:.2f} | {b['pass'] / a['pass']:.2f} |"
            )
    payload = {"machine": machine(), "args": vars(args), "formats": formats, "ctx_sweep": sweep, "workers": workers}
    path = save(args.output, payload)
    print(f"\nwritten to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
