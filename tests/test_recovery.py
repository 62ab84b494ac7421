"""Nothing lost: a server killed with SIGKILL mid-stream gives the stream back as an export on its next start; a
second server started by mistake on the same data_dir refuses at once and touches nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import wave
from io import BytesIO
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.client import open_connection
from melvin_trio.evaluation import Clip
from tests.server_harness import API_KEY, start_server_process, wait_for

BYTES_PER_SECOND = 32000


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": API_KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def _server_log(tmp_path: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob("server-*.log")))


def _files(data_dir: Path) -> list[tuple[str, int]]:
    """Every file and its size, except the finals journal (the running server may send a final meanwhile)."""
    return sorted((str(p), p.stat().st_size) for p in data_dir.rglob("*") if not p.name.endswith(".jsonl"))


def _recovered_ids(tmp_path: Path) -> list[str]:
    log = _server_log(tmp_path)
    return [line.split("stream ")[1].split()[0] for line in log.splitlines() if "recovered the interrupted" in line]


async def test_sigkill_mid_stream_loses_at_most_the_last_second(
    clips: list[Clip], tiny_en_path: Path, tmp_path: Path
) -> None:
    pcm = read_wav_pcm16(next(c for c in clips if c.path.name == "melvin_batman.wav").path)
    process, ws_port, _ = await trio.to_thread.run_sync(start_server_process, tmp_path)
    sent = 0
    finals = []
    try:
        with trio.fail_after(60):
            async with open_connection(f"ws://127.0.0.1:{ws_port}") as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))

                async def read() -> None:
                    with contextlib.suppress(ConnectionClosed):  # the server is killed under it
                        while True:
                            message = await ws.get_message()
                            if isinstance(message, str) and '"result"' in message:
                                finals.append(json.loads(message))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    for offset in range(0, 8 * BYTES_PER_SECOND, 3200):  # 8 s in 100 ms frames, in real time
                        await ws.send_message(pcm[offset : offset + 3200])
                        sent = offset + 3200
                        await trio.sleep(0.1)
                    process.send_signal(signal.SIGKILL)
                    await trio.to_thread.run_sync(process.wait)
                    nursery.cancel_scope.cancel()
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL

    restarted, _, rest_port = await trio.to_thread.run_sync(start_server_process, tmp_path)
    try:
        log = _server_log(tmp_path)
        assert f"took over the lock of node {socket.gethostname()} left by pid {process.pid} on host" in log
        ids = _recovered_ids(tmp_path)
        assert len(ids) == 1
        status, body = await trio.to_thread.run_sync(_get, f"http://127.0.0.1:{rest_port}/export/audio/{ids[0]}")
        assert status == 200
        with wave.open(BytesIO(body), "rb") as wav:
            recovered = wav.readframes(wav.getnframes())
        assert pcm[: len(recovered)] == recovered
        assert len(recovered) >= sent - BYTES_PER_SECOND
        status, body = await trio.to_thread.run_sync(_get, f"http://127.0.0.1:{rest_port}/export/transcript/{ids[0]}")
        assert json.loads(body) == finals  # the finals that were sent before the kill
    finally:
        restarted.terminate()
        restarted.wait()


async def test_a_second_server_on_the_same_data_dir_refuses_and_touches_nothing(
    clips: list[Clip], tiny_en_path: Path, tmp_path: Path
) -> None:
    """The failure of issue 8 item 5: a second `serve` on a running server's data_dir used to recover (steal) the
    live stream's spool before dying on the busy port. Now it stops at the lock with one line naming the data_dir
    and the owner, and the first server's stream is exported exactly as sent."""
    pcm = read_wav_pcm16(next(c for c in clips if c.path.name == "melvin_batman.wav").path)[: 6 * BYTES_PER_SECOND]
    process, ws_port, rest_port = await trio.to_thread.run_sync(start_server_process, tmp_path)
    try:
        with trio.fail_after(120):
            async with open_connection(f"ws://127.0.0.1:{ws_port}") as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                half = len(pcm) // 2
                for offset in range(0, half, 3200):
                    await ws.send_message(pcm[offset : min(offset + 3200, half)])
                spool = tmp_path / "data" / "spool" / socket.gethostname()
                await wait_for(lambda: sum(p.stat().st_size for p in spool.glob("*.wav")) >= 44 + half)
                before = _files(tmp_path / "data")
                second = await trio.to_thread.run_sync(
                    lambda: subprocess.run(
                        [sys.executable, "-m", "melvin_trio", "--config", str(tmp_path / "config.yml"), "serve"],
                        capture_output=True,
                        text=True,
                        timeout=60,
                        env={**os.environ, "MELVIN_API_KEYS": API_KEY},
                        check=False,
                    )
                )
                assert second.returncode == 1
                assert second.stderr.strip().splitlines() == [
                    f"error: data_dir {tmp_path / 'data'} is in use by pid {process.pid} on host "
                    f"{socket.gethostname()} (serving as node {socket.gethostname()!r}, lock "
                    f"{tmp_path / 'data' / 'nodes' / socket.gethostname()}.lock); stop it first, or give this "
                    "server another data_dir or node_id"
                ]
                assert _files(tmp_path / "data") == before
                for offset in range(half, len(pcm), 3200):
                    await ws.send_message(pcm[offset : offset + 3200])
                await ws.send_message("eof")
                messages = []
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        messages.append(await ws.get_message())
        stream_id = messages[-1]
        assert isinstance(stream_id, str)
        status, body = await trio.to_thread.run_sync(_get, f"http://127.0.0.1:{rest_port}/export/audio/{stream_id}")
        assert status == 200
        with wave.open(BytesIO(body), "rb") as wav:
            assert wav.readframes(wav.getnframes()) == pcm
    finally:
        process.terminate()
        process.wait()
