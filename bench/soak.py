"""Soak benchmark: hundreds of connect, auth, stream, disconnect cycles against `melvin-trio serve`.

    .venv/bin/python -m bench.soak [--cycles 300] [--parallel 4] [--seats 1 2]

For each seat count, starts the server (tiny.en), runs a warm-up cycle, reads the server's threads, open files and
RSS from /proc, then runs the cycles: `--parallel` clients at a time, a mix of short speech, silence, clients that
leave without eof and clients that fail authentication. Afterwards it checks /health (every seat free, nobody
waiting), reads the figures again and prints them with their growth. Results: bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import trio

from bench.common import clips, machine, save
from bench.stream import KEY, ServerProcess, start_server
from melvin_trio.audio import float_to_pcm16
from melvin_trio.client import open_connection, stream_pcm


def server_figures(server: ServerProcess) -> dict[str, float]:
    pid = server.process.pid
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status}
    return {
        "threads": int(fields["Threads"][0]),
        "open_files": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "rss_mb": round(int(fields["VmRSS"][0]) / 1024, 1),
    }


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.rest_url + "/health", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


async def one_cycle(url: str, kind: str, speech: bytes, silence: bytes) -> None:
    if kind == "bad key":
        async with open_connection(url) as ws:
            await ws.send_message(json.dumps({"Authorization": "not-the-key"}))
            await ws.get_message()
        return
    if kind == "leave":
        async with open_connection(url) as ws:
            await ws.send_message(json.dumps({"Authorization": KEY}))
            await ws.send_message(speech)
        return
    result = await stream_pcm(url, KEY, speech if kind == "speech" else silence, speed=0)
    if result.stream_id is None:
        raise RuntimeError("a stream ended without its id")


async def run_cycles(url: str, cycles: int, parallel: int, speech: bytes, silence: bytes) -> int:
    kinds = ["speech", "silence", "leave", "speech", "bad key", "silence"]
    done = 0
    limiter = trio.CapacityLimiter(parallel)

    async def guarded(kind: str) -> None:
        nonlocal done
        async with limiter:
            await one_cycle(url, kind, speech, silence)
            done += 1

    async with trio.open_nursery() as nursery:
        for i in range(cycles):
            await limiter.acquire()  # start in order, at most `parallel` at a time
            limiter.release()
            nursery.start_soon(guarded, kinds[i % len(kinds)])
            await trio.sleep(0.01)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--seats", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    jfk = next(c for c in clips("en") if c.path.name == "melvin_jfk.wav")
    speech = float_to_pcm16(jfk.audio()[: 2 * 16000])
    silence = np.zeros(2 * 16000, dtype="<i2").tobytes()
    rows = []
    for seats in args.seats:
        with tempfile.TemporaryDirectory(prefix="melvin-soak-") as tmp:
            server = start_server("tiny.en", seats, {"limits.waiting_notice_seconds": 1.0}, Path(tmp))
            try:
                trio.run(one_cycle, server.url, "speech", speech, silence)
                time.sleep(1.0)
                before = server_figures(server)
                started = time.monotonic()
                done = trio.run(run_cycles, server.url, args.cycles, args.parallel, speech, silence)
                wall = time.monotonic() - started
                time.sleep(2.0)  # connections finish closing
                after = server_figures(server)
                seats_after = health(server)["seats"]
            finally:
                server.stop()
        row = {
            "seats": seats,
            "cycles": done,
            "parallel": args.parallel,
            "wall_s": round(wall, 1),
            "before": before,
            "after": after,
            "growth": {k: round(after[k] - before[k], 1) for k in before},
            "seats_after": seats_after,
        }
        rows.append(row)
        print(
            f"seats {seats}: {done} cycles in {wall:.0f} s; threads {before['threads']} -> {after['threads']}, "
            f"open files {before['open_files']} -> {after['open_files']}, RSS {before['rss_mb']} -> "
            f"{after['rss_mb']} MB; seats after: {seats_after}",
            file=sys.stderr,
        )
    print("| seats | cycles | parallel | wall s | threads | open files | RSS MB | seats free after |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        print(
            f"| {r['seats']} | {r['cycles']} | {r['parallel']} | {r['wall_s']} | {b['threads']} -> {a['threads']} "
            f"| {b['open_files']} -> {a['open_files']} | {b['rss_mb']} -> {a['rss_mb']} "
            f"| {r['seats_after']['free']}/{r['seats_after']['total']} (waiting {r['seats_after']['waiting']}) |"
        )
    path = save("soak", {"machine": machine(), "results": rows})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
