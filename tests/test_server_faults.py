"""Faults: an engine error ends only its stream; SIGTERM drains a running server process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import trio

from melvin_trio.audio import float_to_pcm16, read_wav_pcm16
from melvin_trio.client import StreamResult, open_connection, stream_pcm
from melvin_trio.engine.base import EngineError, Word
from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.exports import is_stream_id
from tests.conftest import REPO, Clip
from tests.server_harness import API_KEY, read_until_closed, running_server


def _loud(seconds: float, amplitude: float) -> bytes:
    """Bursts of noise (0.3 s on, 0.2 s off): to the VAD it is speech, unlike steady noise."""
    rng = np.random.default_rng(5)
    samples = (rng.uniform(-1, 1, int(seconds * 16000)) * amplitude).astype(np.float32)
    on = (np.arange(samples.size) % 8000) < 4800
    return float_to_pcm16(samples * on)


def _fragile(audio: np.ndarray, prompt: str) -> list[Word]:
    if np.abs(audio).max() > 0.8:
        raise EngineError("simulated engine failure")
    return [Word("fine.", 0.1, 0.4, 0.9)]


async def test_an_engine_error_ends_only_that_stream(tmp_path: Path) -> None:
    engine = FakeEngine([_fragile])
    with trio.fail_after(60):
        async with running_server(engine, tmp_path, seats=2) as running:
            results: dict[str, list[str | bytes]] = {}

            async def client(name: str, pcm: bytes) -> None:
                async with open_connection(running.ws_url) as ws:
                    await ws.send_message(json.dumps({"Authorization": API_KEY}))
                    for offset in range(0, len(pcm), 16000):
                        await ws.send_message(pcm[offset : offset + 16000])
                        await trio.sleep(0.05)
                    await ws.send_message("eof")
                    results[name] = await read_until_closed(ws)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client, "broken", _loud(4, 0.95))
                nursery.start_soon(client, "healthy", _loud(4, 0.3))
    broken, healthy = results["broken"], results["healthy"]
    assert "Transcription failed: simulated engine failure" in broken
    assert isinstance(broken[-1], str)
    assert is_stream_id(broken[-1])  # its export exists all the same
    assert any(isinstance(m, str) and '"fine."' in m for m in healthy)
    assert isinstance(healthy[-1], str)
    assert is_stream_id(healthy[-1])
    assert sorted(running.export_ids()) == sorted([broken[-1], healthy[-1]])
    assert running.server.seats.available == 2


def _start_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: 127.0.0.1\ndata_dir: {tmp_path / 'data'}\nmodels_dir: {REPO / 'models'}\napi_keys_file: null\n"
        "limits:\n  drain_seconds: 20\n",
        encoding="utf-8",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "melvin_trio",
                "--config",
                str(config),
                "serve",
                "--ws-port",
                "0",
                "--rest-port",
                "0",
            ],
            stderr=sink,
            env={**os.environ, "MELVIN_API_KEYS": API_KEY},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if match := re.search(r"WebSocket on ws://127\.0\.0\.1:(\d+)", log.read_text(encoding="utf-8")):
            return process, int(match.group(1))
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text(encoding='utf-8')}")


async def test_sigterm_drains_open_streams(clips: list[Clip], tiny_en_path: Path, tmp_path: Path) -> None:
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    pcm = read_wav_pcm16(jfk.path)
    process, port = await trio.to_thread.run_sync(_start_server, tmp_path)
    try:
        with trio.fail_after(90):
            result_box: list[StreamResult] = []
            async with trio.open_nursery() as nursery:

                async def client() -> None:
                    result_box.append(await stream_pcm(f"ws://127.0.0.1:{port}", API_KEY, pcm, speed=1.0))

                nursery.start_soon(client)
                await trio.sleep(5)  # mid-stream
                process.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(process.wait)
    finally:
        process.kill()
        process.wait()
    assert code == 0
    (result,) = result_box
    assert result.stream_id is not None
    words = " ".join(w["word"] for f in result.finals for w in f["result"])
    assert "fellow Americans" in words  # what was spoken before the signal went out in finals
    export = tmp_path / "data" / f"{result.stream_id}.wav"
    assert export.stat().st_size > 44 + 5 * 32000 * 0.8
