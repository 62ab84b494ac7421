"""A file job beside a live stream: the stream's final latency alone and with a 2-minute job queued.

    .venv/bin/python -m bench.jobs [--seconds 60] [--job-seconds 120] [--repeat 2]

Starts `melvin-trio serve` (tiny.en, one CPU seat, defaults otherwise). Each round streams the same English
long-form set in real time twice, in turn: alone, and with a file job of `--job-seconds` of other English speech
posted to /transcriptions just before (the job is running a window when the stream connects, so the stream's
first request preempts it). Prints the final latency (p50/p90, per word, as bench.stream measures it) and WER of
both, their ratio, and when the job finished; writes bench/results/jobs.json (`--server-log FILE` keeps the
server's log).

What bounds the difference: a job's window runs only while no stream holds or waits for a seat, so it can delay a
stream only when the stream arrives during a window; the stream's first request then aborts the window, and
whisper.cpp stops at its next abort check, after the window's encoder pass or after one decoder step (one token of
each beam). So a live pass waits at most about one encoder pass of a 30 s window, what one of its own passes costs
at the full context, once per stream start.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import tempfile
import time
import urllib.request
import uuid
import wave
from pathlib import Path
from typing import Any

import trio

from bench.common import REPO, clips, long_form, machine, save
from bench.stream import KEY, build_set, client_metrics, percentile, run_client, start_server, transcribe_offline
from melvin_trio.audio import float_to_pcm16


def job_wav(seconds: float, skip: set[str]) -> bytes:
    """English clips not in the stream, one after another, up to `seconds`, as a WAV file."""
    chosen, total = [], 0.0
    for clip in clips("en")[::-1]:
        if clip.path.name in skip:
            continue
        chosen.append(clip)
        total += clip.seconds + 1.5
        if total >= seconds:
            break
    while total < seconds:  # the set is short: repeat it
        chosen += chosen
        total *= 2
    audio = long_form(chosen)[: int(seconds * 16000)]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(float_to_pcm16(audio))
    return buffer.getvalue()


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers={"Authorization": KEY})
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def post_job(rest_url: str, wav: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="job.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + wav
        + f"\r\n--{boundary}--\r\n".encode()
    )
    job = http("POST", rest_url + "/transcriptions", body, f"multipart/form-data; boundary={boundary}")
    return str(job["transcription_id"])


def wait_running(rest_url: str, job_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http("GET", f"{rest_url}/transcriptions/{job_id}")["status"] != "in_query":
            time.sleep(1.0)  # well inside its first window
            return
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the live stream")
    parser.add_argument("--job-seconds", type=float, default=120.0, help="length of the file job")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--server-log", type=Path, help="copy the server's log here at the end")
    args = parser.parse_args()
    stream = build_set("en-long", args.seconds)
    offline = transcribe_offline(stream)
    in_stream = {c.path.name for c in clips("en") if c.text in stream.reference}
    wav = job_wav(args.job_seconds, in_stream)
    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "with job": []}
    jobs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="melvin-bench-") as tmp:
        server = start_server(stream.model, 1, {"transcription_default.language": "en"}, Path(tmp))
        try:
            for _ in range(args.repeat):
                for mode in ("alone", "with job"):
                    job_id = None
                    if mode == "with job":
                        job_id = post_job(server.rest_url, wav)
                        wait_running(server.rest_url, job_id)
                    started = time.monotonic()
                    record = trio.run(run_client, server.url, KEY, stream.pcm, stream.language)
                    stream_done = time.monotonic()
                    metrics = client_metrics(record, stream, offline)
                    runs[mode].append(metrics)
                    if job_id is not None:
                        while (job := http("GET", f"{server.rest_url}/transcriptions/{job_id}"))["status"] not in (
                            "finished",
                            "error",
                        ):
                            time.sleep(0.5)
                        jobs.append(
                            {
                                "status": job["status"],
                                "job_seconds": args.job_seconds,
                                "finished_after_stream_s": round(time.monotonic() - stream_done, 1),
                                "stream_s": round(stream_done - started, 1),
                            }
                        )
        finally:
            server.stop()
            if args.server_log:
                shutil.copy(server.log, args.server_log)
    rows: list[dict[str, Any]] = []
    for mode, results in runs.items():
        latencies = [x for m in results for x in m["latencies"]]
        rows.append(
            {
                "mode": mode,
                "latency_p50_s": round(percentile(latencies, 50), 3),
                "latency_p90_s": round(percentile(latencies, 90), 3),
                "latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else float("nan"),
                "wer": round(statistics.fmean(m["wer"] for m in results), 4),
                "timed_words": len(latencies),
            }
        )
    alone, shared = rows
    print(f"stream: {stream.seconds:.0f} s of English (tiny.en, one seat); job: {args.job_seconds:.0f} s file")
    print("| stream | final latency p50 | p90 | mean | WER |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['latency_p50_s']:.2f} s | {row['latency_p90_s']:.2f} s "
            f"| {row['latency_mean_s']:.2f} s | {row['wer']:.3f} |"
        )
    ratio = shared["latency_p50_s"] / alone["latency_p50_s"]
    print(f"\np50 with the job / alone: {ratio:.3f}; p90: {shared['latency_p90_s'] / alone['latency_p90_s']:.3f}")
    for job in jobs:
        print(f"job: {job['status']}, finished {job['finished_after_stream_s']} s after the stream's eof")
    path = save("jobs", {"machine": machine(), "rows": rows, "jobs": jobs, "p50_ratio": round(ratio, 3)})
    print(f"\nwritten to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
