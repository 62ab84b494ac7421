"""Memory over a long stream, and words from audio without speech.

    .venv/bin/python -m bench.memory [--minutes 30] [--idle-seconds 60]

1. Starts `melvin-trio serve` (tiny.en, one seat), sends a warm-up stream of 2 minutes, then one stream of
   `--minutes` of English speech (the shared clips, looped, 1.5 s apart), each as fast as the server reads it:
   back-pressure (limits.max_backlog_seconds, 300 s of audio held at most) sets the pace, so 30 minutes of audio
   take a few minutes. The server's RSS is sampled every 2 s. The growth is the RSS after the long stream minus
   the RSS after the warm-up one, both taken when the stream has ended (same state: model loaded, backlog empty);
   RSS during a stream also holds up to 300 s of backlog (9.6 MB of PCM) and is reported as the maximum.
2. Streams `--idle-seconds` of digital silence, then of low background noise (white at -50 dBFS and a
   brown "room" rumble at -45 dBFS), in real time, and counts the words that come back: the target is zero.

Results: a table on stdout and bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import trio

from bench.common import clips, long_form, machine, save
from bench.stream import KEY, ServerProcess, start_server
from melvin_trio.audio import float_to_pcm16
from melvin_trio.client import open_connection, stream_pcm
from melvin_trio.server.exports import is_stream_id

BYTES_PER_SECOND = 32000


def rss_mb(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def long_stream(server: ServerProcess, pcm: bytes) -> dict[str, Any]:
    samples: list[tuple[float, float, float]] = []  # (wall s, audio s sent, RSS MB)
    sent = 0
    words = 0
    started = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - started, sent / BYTES_PER_SECOND, rss_mb(server)))
            await trio.sleep(2.0)

    async with open_connection(server.url) as ws:
        await ws.send_message(json.dumps({"Authorization": KEY}))

        async def send() -> None:
            nonlocal sent
            for offset in range(0, len(pcm), 8000):  # as fast as the server reads
                await ws.send_message(pcm[offset : offset + 8000])
                sent = offset + 8000
            await ws.send_message("eof")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            nursery.start_soon(send)
            while True:
                message = await ws.get_message()
                if isinstance(message, str) and is_stream_id(message):
                    break
                if isinstance(message, str) and '"result"' in message:
                    words += len(json.loads(message)["result"])
            nursery.cancel_scope.cancel()
    await trio.sleep(1.0)  # the session's last steps
    samples.append((time.monotonic() - started, len(pcm) / BYTES_PER_SECOND, rss_mb(server)))
    return {
        "audio_minutes": round(len(pcm) / BYTES_PER_SECOND / 60, 1),
        "wall_s": round(samples[-1][0], 1),
        "words": words,
        "rss_after_mb": round(samples[-1][2], 1),
        "rss_max_mb": round(max(s[2] for s in samples), 1),
        "samples": [[round(a, 1), round(b, 1), round(c, 1)] for a, b, c in samples],
    }


def idle_audio(seconds: float) -> dict[str, bytes]:
    rng = np.random.default_rng(11)
    n = int(seconds * 16000)
    white = rng.standard_normal(n) * 10 ** (-50 / 20)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(1601) / 1601, mode="same")  # no drift: a rumble, not a ramp
    brown *= 10 ** (-45 / 20) / np.sqrt(np.mean(brown**2))
    return {
        "silence": bytes(n * 2),
        "white noise -50 dBFS": float_to_pcm16(white.astype(np.float32)),
        "room rumble -45 dBFS": float_to_pcm16(brown.astype(np.float32)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    one_round = long_form(clips("en"))
    rounds = int(np.ceil(args.minutes * 60 / (one_round.size / 16000 + 1.5)))
    audio = long_form([c for _ in range(rounds) for c in clips("en")])[: int(args.minutes * 60 * 16000)]
    pcm = float_to_pcm16(audio)
    with tempfile.TemporaryDirectory(prefix="melvin-memory-") as tmp:
        server = start_server("tiny.en", 1, {"transcription_default.language": "en"}, Path(tmp))
        try:
            warm = trio.run(long_stream, server, pcm[: 120 * BYTES_PER_SECOND])
            long_result = trio.run(long_stream, server, pcm)
            long_result["rss_after_warmup_mb"] = warm["rss_after_mb"]
            long_result["growth_mb"] = round(long_result["rss_after_mb"] - warm["rss_after_mb"], 1)
            idle = {}
            for name, noise in idle_audio(args.idle_seconds).items():
                result = trio.run(partial(stream_pcm, server.url, KEY, noise, speed=1.0))
                idle[name] = sum(len(f["result"]) for f in result.finals)
                print(f"{name}: {idle[name]} words", file=sys.stderr)
        finally:
            server.stop()
    print(
        "| audio | wall s | words | RSS after a 2-min warm-up stream MB | after the long stream MB | max during MB "
        "| growth MB |"
    )
    print("|---|---|---|---|---|---|---|")
    r = long_result
    print(
        f"| {r['audio_minutes']} min | {r['wall_s']} | {r['words']} | {r['rss_after_warmup_mb']} | {r['rss_after_mb']} "
        f"| {r['rss_max_mb']} | {r['growth_mb']} |"
    )
    print("\n| idle audio | seconds | words |")
    print("|---|---|---|")
    for name, words in idle.items():
        print(f"| {name} | {args.idle_seconds:.0f} | {words} |")
    path = save("memory", {"machine": machine(), "long_stream": long_result, "idle_words": idle})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
