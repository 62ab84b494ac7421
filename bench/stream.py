"""Streaming benchmark: WER against offline, final latency, partial cadence, capacity, CPU and memory.

    .venv/bin/python -m bench.stream [--sets en-long de-long] [--clients 1 2 3 4] [--speed 1 2 4] [--cpu-hog]
                                     [--seconds S] [--clip batman] [--stagger 2] [--rounds 3]
                                     [--variant NAME KEY=VALUE ...] [--set-config streaming.final_after_words=4]
                                     [--url ws://HOST:PORT --key K]

Unless --url is given, each run starts `melvin-trio serve` on free ports with a config made for the run (the set's
model, as many CPU seats as clients, one shared whisper context, then --set-config, then the variant's settings),
so CPU time and peak RSS are the server's own. Clients send the audio at --speed times real time (100 ms chunks)
and time every message. A run is one (variant, clients, speed, hog) combination; with --cpu-hog every run is
repeated with `stress-ng --cpu 1` (a busy loop if stress-ng is missing) beside the server. --rounds repeats all
runs in turn (round 1 of every run, then round 2, ...), so that on a shared machine every configuration meets the
same load, and prints the medians over the rounds. Results: markdown tables on stdout, JSON in
bench/results/<output>.json, PNG plots in bench/results/ (latency per run, capacity curve).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio
import yaml

from bench.common import REPO, RESULTS, clips, long_form, machine, save
from melvin_trio.audio import float_to_pcm16
from melvin_trio.client import open_connection
from melvin_trio.core.vad import frame_energies_db
from melvin_trio.evaluation import count_errors, normalise
from melvin_trio.server.exports import is_stream_id

CHUNK_SECONDS: Final = 0.1
BYTES_PER_SECOND: Final = 32000
KEY: Final = "bench-key"
SETS: Final = {"en-long": ("en", "tiny.en"), "de-long": ("de", "base")}
LATENCY_P90_LIMIT_S: Final = 4.0
WER_RATIO_LIMIT: Final = 1.15
ONSET_BELOW_PEAK_DB: Final = 35.0  # clean read speech: its onset is the first frame this close to its loudest


@dataclass
class StreamSet:
    name: str
    language: str
    model: str
    pcm: bytes
    reference: str
    speech_starts: list[float]  # stream seconds where each clip's speech begins (`speech_onset`)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND


def build_set(name: str, max_seconds: float | None, only: str | None = None) -> StreamSet:
    """The set's clips in manifest order (`only`: those whose file name holds one of these comma-separated parts)."""
    language, model = SETS[name]
    chosen, total = [], 0.0
    for clip in clips(language):
        if only is not None and not any(part in clip.path.name for part in only.split(",")):
            continue
        if max_seconds is not None and total >= max_seconds:
            break
        chosen.append(clip)
        total += clip.seconds + 1.5
    audio = long_form(chosen)
    starts, t = [], 0.0
    for clip in chosen:
        starts.append(t + speech_onset(clip.audio()))
        t += clip.seconds + 1.5
    return StreamSet(name, language, model, float_to_pcm16(audio), " ".join(c.text for c in chosen), starts)


def speech_onset(audio: npt.NDArray[np.float32]) -> float:
    """Seconds from a clip's start to its speech: the first 10 ms frame within `ONSET_BELOW_PEAK_DB` of the clip's
    loudest frame. The shared clips open with 0-0.6 s of room silence (median 0.3 s on en-long), which a first
    partial timed from the clip's start would count as latency."""
    frame = 160
    frames = audio[: audio.size // frame * frame].reshape(-1, frame)
    if frames.size == 0:
        return 0.0
    levels = frame_energies_db(frames)
    return float(np.argmax(levels >= levels.max() - ONSET_BELOW_PEAK_DB)) * frame / 16000


@dataclass
class ClientRecord:
    send_times: list[float] = field(default_factory=list)  # when chunk i had been sent (monotonic clock)
    finals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    partials: list[tuple[float, str]] = field(default_factory=list)
    stream_id: str | None = None
    eof_at: float | None = None
    id_at: float | None = None

    def sent_at(self, stream_seconds: float) -> float:
        index = min(int(stream_seconds / CHUNK_SECONDS), len(self.send_times) - 1)
        return self.send_times[max(index, 0)]


async def run_client(url: str, key: str, pcm: bytes, language: str | None, speed: float = 1.0) -> ClientRecord:
    record = ClientRecord()
    chunk = int(CHUNK_SECONDS * BYTES_PER_SECOND)
    async with open_connection(url) as ws:
        first: dict[str, str] = {"Authorization": key}
        if language:
            first["language"] = language
        await ws.send_message(json.dumps(first))

        async def send() -> None:
            start = time.monotonic()
            for i, offset in enumerate(range(0, len(pcm), chunk)):
                await ws.send_message(pcm[offset : offset + chunk])
                record.send_times.append(time.monotonic())
                await trio.sleep(max(0.0, start + (i + 1) * CHUNK_SECONDS / speed - time.monotonic()))
            await ws.send_message('{"eof": 1}')
            record.eof_at = time.monotonic()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while True:
                message = await ws.get_message()
                now = time.monotonic()
                if isinstance(message, bytes):
                    continue
                if is_stream_id(message):
                    record.stream_id = message
                    record.id_at = now
                    break
                try:
                    data = json.loads(message)
                except json.JSONDecodeError:
                    continue
                if "partial" in data:
                    record.partials.append((now, data["partial"]))
                elif "result" in data:
                    record.finals.append((now, data))
    return record


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass(frozen=True)
class Offline:
    """`melvin-trio transcribe` on the whole stream: the WER baseline, and the clock for final latency."""

    wer: float
    words: list[tuple[str, float]]  # normalised word, end in stream seconds


def normalised_words(words: list[tuple[str, float]], language: str) -> list[tuple[str, float]]:
    """Each (text, time) as the normalised tokens it yields, each keeping the time."""
    return [(token, t) for text, t in words for token in normalise(text, language)]


def client_metrics(record: ClientRecord, stream: StreamSet, offline: Offline) -> dict[str, Any]:
    final_words = [(word["word"], arrival) for arrival, final in record.finals for word in final["result"]]
    hypothesis = " ".join(text for text, _ in final_words)
    errors = count_errors(stream.reference, hypothesis, stream.language)
    # A word's latency is the arrival of its final minus the moment its end was sent. Where the word ends is taken
    # from the offline transcription (aligned by text), not from the server's own word times: a server placing its
    # words late would otherwise look fast.
    streamed = normalised_words(final_words, stream.language)
    matcher = difflib.SequenceMatcher(a=[w for w, _ in offline.words], b=[w for w, _ in streamed], autojunk=False)
    latencies = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            end = offline.words[block.a + k][1]
            latencies.append(streamed[block.b + k][1] - record.sent_at(end))
    first_partials = []
    for start in stream.speech_starts:
        sent = record.sent_at(start)
        later = [t for t, text in record.partials if t >= sent and text.strip()]
        if later:
            first_partials.append(later[0] - sent)
    arrivals = [t for t, _ in record.partials]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    id_after_eof = record.id_at - record.eof_at if record.id_at is not None and record.eof_at is not None else None
    return {
        "wer": errors.wer,
        "errors": errors.errors,
        "words": errors.reference_words,
        "latencies": latencies,
        "timed_words": len(latencies),
        "first_partial_s": statistics.median(first_partials) if first_partials else float("nan"),
        "partial_gap_s": statistics.median(gaps) if gaps else float("nan"),
        "id_after_eof_s": float("nan") if id_after_eof is None else id_after_eof,
        "hypothesis": hypothesis,
    }


def transcribe_offline(stream: StreamSet) -> Offline:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(16000)
            wav.writeframes(stream.pcm)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "melvin_trio",
                "transcribe",
                str(path),
                "--model",
                stream.model,
                "--language",
                stream.language,
                "--json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(done.stdout)
    words = normalised_words([(w["word"], float(w["end"])) for w in result["words"]], stream.language)
    return Offline(count_errors(stream.reference, result["text"], stream.language).wer, words)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    rest_url: str

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> dict[str, float]:
        self.process.terminate()
        self.process.wait(timeout=120)
        text = self.log.read_text(encoding="utf-8")
        busy = sum(float(m) for m in re.findall(r"busy ([0-9.]+) s", text))
        calls = sum(int(m) for m in re.findall(r": (\d+) calls", text))
        return {"engine_busy_s": busy, "engine_calls": calls}


def start_server(model: str, seats: int, overrides: dict[str, Any], workdir: Path) -> ServerProcess:
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "data_dir": str(workdir / "data"),
        "models_dir": str(REPO / "models"),
        "api_keys_file": None,
        "websocket_stream": {"cpu": {"model": model, "worker_seats": seats}},
        "transcription_default": {"language": None},
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = workdir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "melvin_trio", "--config", str(path), "serve", "--ws-port", "0", "--rest-port", "0"],
            stderr=sink,
            env={**os.environ, "MELVIN_API_KEYS": KEY},
            cwd=REPO,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8")
        if match := re.search(r"WebSocket on ws://127\.0\.0\.1:(\d+), REST on (http://127\.0\.0\.1:\d+)", text):
            return ServerProcess(process, f"ws://127.0.0.1:{match.group(1)}", log, match.group(2))
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text(encoding='utf-8')}")


@dataclass(frozen=True)
class Run:
    """One configuration to measure: server settings (a named variant), clients, their speed, a CPU hog or not."""

    variant: str
    overrides: dict[str, Any]
    clients: int
    speed: float
    hog: bool

    @property
    def label(self) -> str:
        parts = [f"N={self.clients}"]
        if self.speed != 1:
            parts.append(f"{self.speed:g}x")
        if self.hog:
            parts.append("hog")
        if self.variant != "default":
            parts.append(self.variant)
        return " ".join(parts)


@contextlib.contextmanager
def cpu_hog(active: bool) -> Iterator[None]:
    """A process keeping one core busy (`stress-ng --cpu 1`, else a Python busy loop) while the block runs."""
    if not active:
        yield
        return
    command = (
        ["stress-ng", "--cpu", "1", "--cpu-load", "100", "--quiet"]
        if shutil.which("stress-ng")
        else [sys.executable, "-c", "while True: pass"]
    )
    hog = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(0.5)  # let it start spinning before the server is measured
        yield
    finally:
        os.killpg(hog.pid, signal.SIGTERM)  # stress-ng's workers are its children: end the group it leads
        try:
            hog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(hog.pid, signal.SIGKILL)
            hog.wait()


async def run_clients(
    url: str, key: str, stream: StreamSet, n: int, stagger: float, speed: float
) -> list[ClientRecord]:
    records: list[ClientRecord] = [ClientRecord() for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for i in range(n):

            async def one(i: int = i) -> None:
                records[i] = await run_client(url, key, stream.pcm, stream.language, speed)

            nursery.start_soon(one)
            await trio.sleep(stagger / speed)
    return records


def measure(stream: StreamSet, offline: Offline, run: Run, args: argparse.Namespace) -> dict[str, Any]:
    server = None
    with tempfile.TemporaryDirectory(prefix="melvin-bench-") as tmp, cpu_hog(run.hog):
        if args.url:
            url, key = args.url, args.key
        else:
            server = start_server(stream.model, run.clients, run.overrides, Path(tmp))
            url, key = server.url, KEY
        cpu_before = server.cpu_seconds() if server else 0.0
        t0 = time.monotonic()
        records = trio.run(run_clients, url, key, stream, run.clients, args.stagger, run.speed)
        wall = time.monotonic() - t0
        result: dict[str, Any] = {
            "set": stream.name,
            "model": run.overrides.get("websocket_stream.cpu.model", stream.model),
            "variant": run.variant,
            "overrides": run.overrides,
            "clients": run.clients,
            "speed": run.speed,
            "hog": run.hog,
            "label": run.label,
            "wall_s": round(wall, 1),
        }
        if server:
            result["server_cpu_s"] = round(server.cpu_seconds() - cpu_before, 1)
            result["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
            engine = server.stop()
            result["engine_busy_per_audio_s"] = round(engine["engine_busy_s"] / (stream.seconds * run.clients), 3)
            result["engine_calls"] = engine["engine_calls"]
    per_client = [client_metrics(r, stream, offline) for r in records]
    latencies = [x for m in per_client for x in m["latencies"]]
    result.update(
        {
            "wer": round(float(np.mean([m["wer"] for m in per_client])), 4),
            "latency_p50_s": round(percentile(latencies, 50), 2),
            "latency_p90_s": round(percentile(latencies, 90), 2),
            "latency_max_s": round(max(latencies) if latencies else float("nan"), 2),
            "first_partial_s": round(float(np.nanmedian([m["first_partial_s"] for m in per_client])), 2),
            "partial_gap_s": round(float(np.nanmedian([m["partial_gap_s"] for m in per_client])), 2),
            # the slowest client's: every stream must get its id soon after its eof
            "id_after_eof_s": round(float(np.max([m["id_after_eof_s"] for m in per_client])), 2),
            "latencies": [round(x, 3) for x in latencies],
            "timed_words": sum(m["timed_words"] for m in per_client),
            # the first client's finals, to see which words a change lost or won
            "hypothesis": per_client[0]["hypothesis"] if per_client else "",
        }
    )
    return result


METRICS: Final = (
    "wer",
    "wer_ratio",
    "latency_p50_s",
    "latency_p90_s",
    "latency_max_s",
    "first_partial_s",
    "id_after_eof_s",
    "partial_gap_s",
    "server_cpu_s",
    "peak_rss_mb",
    "engine_busy_per_audio_s",
)


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (set, run) with the median of each metric over the rounds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["set"], r["label"]), []).append(r)
    rows = []
    for group in groups.values():
        row = {k: v for k, v in group[0].items() if k not in METRICS}
        row["rounds"] = len(group)
        for metric in METRICS:
            values = [r[metric] for r in group if isinstance(r.get(metric), int | float)]
            row[metric] = round(float(np.nanmedian(values)), 3) if values else "-"
        row["latencies"] = [x for r in group for x in r["latencies"]]
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| set | model | run | streams | WER | offline WER | ratio | final p50 s | p90 s | max s | first partial s "
        "| id after eof s | partial gap s | server CPU s | peak RSS MB | engine busy / audio s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['model']} | {r['label']} | {r['clients']} | {r['wer']:.3f} | {r['offline_wer']:.3f} "
            f"| {r['wer_ratio']} | {r['latency_p50_s']} | {r['latency_p90_s']} | {r['latency_max_s']} "
            f"| {r['first_partial_s']} | {r['id_after_eof_s']} | {r['partial_gap_s']} | {r.get('server_cpu_s', '-')} "
            f"| {r.get('peak_rss_mb', '-')} | {r.get('engine_busy_per_audio_s', '-')} |"
        )


def plot(results: list[dict[str, Any]], output: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: pip install 'melvin-trio[bench]' for plots)", file=sys.stderr)
        return []
    suffix = "" if output == "stream" else f"-{output.removeprefix('stream-')}"
    paths = []
    for name in sorted({r["set"] for r in results}):
        rows = [r for r in results if r["set"] == name]
        fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(rows)), 4))
        ax.boxplot([r["latencies"] or [np.nan] for r in rows], tick_labels=[r["label"] for r in rows])
        ax.axhline(LATENCY_P90_LIMIT_S, color="red", linestyle="--", label="p90 limit for capacity")
        ax.set_xlabel("run (concurrent streams, speed, CPU hog, variant)")
        ax.set_ylabel("final latency per word (s)")
        ax.set_title(f"{name} ({rows[0]['model']}): final latency")
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend()
        path = RESULTS / f"stream-latency-{name}{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
        plain = sorted(
            (r for r in rows if r["speed"] == 1 and not r["hog"] and r["variant"] == "default"),
            key=lambda r: r["clients"],
        )
        if len(plain) < 2:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        ns = [r["clients"] for r in plain]
        ax.plot(ns, [r["latency_p90_s"] for r in plain], marker="o", label="p90 final latency (s)")
        ax.plot(ns, [r["wer_ratio"] for r in plain], marker="s", label="WER / offline WER")
        ax.axhline(LATENCY_P90_LIMIT_S, color="red", linestyle="--", linewidth=0.8)
        ax.axhline(WER_RATIO_LIMIT, color="orange", linestyle="--", linewidth=0.8)
        ax.set_xlabel("concurrent streams")
        ax.set_title(f"{name} ({plain[0]['model']}): capacity")
        ax.legend()
        path = RESULTS / f"stream-capacity-{name}{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def parse_variants(items: list[list[str]], common: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """`--variant NAME KEY=VALUE ...` (YAML values) into (name, overrides); none given: one called default."""
    if not items:
        return [("default", dict(common))]
    variants = []
    for name, *settings in items:
        overrides = dict(common)
        overrides.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in settings)})
        variants.append((name, overrides))
    return variants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--clients", nargs="+", type=int, default=[1], help="concurrent streams, one run each")
    parser.add_argument("--speed", nargs="+", type=float, default=[1.0], help="x real time the clients send at")
    parser.add_argument("--cpu-hog", action="store_true", help="also run each with one core kept busy beside it")
    parser.add_argument("--seconds", type=float, help="cut each long-form stream after the clip passing this")
    parser.add_argument("--clip", help="only the clips whose file name holds one of these (comma-separated)")
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds of audio between client starts")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run this often, interleaved")
    parser.add_argument("--url", help="benchmark a running server instead of starting one")
    parser.add_argument("--key", default=KEY)
    parser.add_argument(
        "--set-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value for the started server (YAML value), e.g. streaming.final_after_words=4",
    )
    parser.add_argument(
        "--variant",
        action="append",
        nargs="+",
        default=[],
        metavar="NAME KEY=VALUE",
        help="a named server configuration to compare (repeatable), e.g. --variant 2x1 "
        "websocket_stream.cpu.workers=2 websocket_stream.cpu.cpu_threads=1",
    )
    parser.add_argument("--output", default="stream", help="results file name under bench/results/")
    args = parser.parse_args()
    common = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set_config)}
    runs = [
        Run(name, overrides, n, speed, hog)
        for name, overrides in parse_variants(args.variant, common)
        for n in args.clients
        for speed in args.speed
        for hog in ([False, True] if args.cpu_hog else [False])
    ]
    streams = []
    for name in args.sets:
        stream = build_set(name, args.seconds, args.clip)
        offline = transcribe_offline(stream)
        streams.append((stream, offline))
        print(f"{name}: {stream.seconds:.0f} s of audio, offline WER {offline.wer:.3f}", file=sys.stderr)
    results = []
    for round_index in range(args.rounds):
        for stream, offline in streams:
            for run in runs:
                row = measure(stream, offline, run, args)
                row["round"] = round_index + 1
                row["offline_wer"] = round(offline.wer, 4)
                row["wer_ratio"] = round(row["wer"] / offline.wer, 2) if offline.wer else float("nan")
                row["audio_s"] = round(stream.seconds, 1)
                results.append(row)
                print(
                    f"  round {round_index + 1} {stream.name} {run.label}: WER {row['wer']:.3f}, "
                    f"p50 {row['latency_p50_s']} s, p90 {row['latency_p90_s']} s, "
                    f"id after eof {row['id_after_eof_s']} s",
                    file=sys.stderr,
                )
    print_table(results)
    table = results
    if args.rounds > 1:
        table = medians(results)
        print(f"\nmedians over {args.rounds} rounds:\n")
        print_table(table)
    for name in sorted({r["set"] for r in table}):
        plain = [r for r in table if r["set"] == name and r["speed"] == 1 and not r["hog"]]
        for variant in dict.fromkeys(r["variant"] for r in plain):
            mine = [r for r in plain if r["variant"] == variant]
            ok = [
                r["clients"]
                for r in mine
                if r["latency_p90_s"] <= LATENCY_P90_LIMIT_S and r["wer_ratio"] <= WER_RATIO_LIMIT
            ]
            print(
                f"\ncapacity {name} ({variant}): {max(ok) if ok else 0} stream(s) (p90 <= {LATENCY_P90_LIMIT_S} s, "
                f"WER <= {WER_RATIO_LIMIT} x offline) among N = {[r['clients'] for r in mine]}"
            )
    path = save(args.output, {"machine": machine(), "args": vars(args), "results": results, "medians": table})
    for png in plot(table, args.output):
        print(f"plot: {png.relative_to(REPO)}")
    print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
