"""Nothing lost: a server killed with SIGKILL mid-stream gives the stream back as an export on its next start."""

from __future__ import annotations

import contextlib
import json
import signal
import urllib.request
import wave
from io import BytesIO
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.client import open_connection
from melvin_trio.evaluation import Clip
from tests.server_harness import API_KEY, start_server_process

BYTES_PER_SECOND = 32000


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": API_KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def _recovered_ids(tmp_path: Path) -> list[str]:
    log = "".join(p.read_text(encoding="utf-8") for p in tmp_path.glob("server-*.log"))
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
