"""Start a real server (real engine, real sockets on 127.0.0.1 port 0) inside a test's nursery."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from melvin_trio.config import Config, parse_config
from melvin_trio.engine.base import Engine
from melvin_trio.engine.whispercpp import is_known_language
from melvin_trio.server.app import EngineSection, MelvinServer, ServerAddresses
from melvin_trio.server.workers import EngineWorker
from tests.conftest import REPO

API_KEY = "test-key-0123456789"


@dataclass
class Running:
    server: MelvinServer
    addresses: ServerAddresses
    data_dir: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.addresses.websocket[1]}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.addresses.rest[1]}"

    def get(
        self, path: str, key: str | None = API_KEY, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.rest_url + path, headers=dict(headers or {}))
        if key is not None:
            request.add_header("Authorization", key)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    async def aget(
        self, path: str, key: str | None = API_KEY, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return await trio.to_thread.run_sync(lambda: self.get(path, key, headers))

    def transcript(self, stream_id: str) -> list[dict[str, Any]]:
        """The exported transcript, as the file in data_dir holds it (REST is tested on its own)."""
        result: list[dict[str, Any]] = json.loads((self.data_dir / f"{stream_id}.json").read_text(encoding="utf-8"))
        return result

    def export_ids(self) -> list[str]:
        """Ids of the finished exports in data_dir."""
        return sorted(p.stem for p in self.data_dir.glob("*.json"))

    def exported_pcm(self, stream_id: str) -> bytes:
        path = self.data_dir / f"{stream_id}.wav"
        with wave.open(str(path), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
            return wav.readframes(wav.getnframes())


async def wait_for(predicate: Callable[[], bool], interval: float = 0.05) -> None:
    """Poll a condition the server has no event for (a test-only convenience; callers bound it with fail_after)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(interval)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked WebSocket frame, as a client must send it (for clients written below the WebSocket library)."""
    mask = b"\x01\x02\x03\x04"
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 1 << 16:
        header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()
    return header + mask + masked


async def open_raw_session(running: Running) -> trio.SocketStream:
    """A TCP connection that did the WebSocket handshake and sent the key by hand, and from then on does only
    what the test makes it do: no reading, no answers to pings."""
    stream = await trio.open_tcp_stream("127.0.0.1", running.addresses.websocket[1])
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some(4096)
    assert response.startswith(b"HTTP/1.1 101")
    await stream.send_all(client_frame(0x1, json.dumps({"Authorization": API_KEY}).encode()))
    return stream


async def read_until_closed(ws: WebSocketConnection) -> list[str | bytes]:
    """Every message the server sends until it closes the connection."""
    messages: list[str | bytes] = []
    while True:
        try:
            messages.append(await ws.get_message())
        except ConnectionClosed:
            return messages


def spawn_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`melvin-trio --config CONFIG serve` on free ports as a child process, its log (stderr) in `log`."""
    argv = [sys.executable, "-m", "melvin_trio", "--config", str(config), "serve", "--ws-port", "0", "--rest-port", "0"]
    with log.open("wb") as sink:
        return subprocess.Popen(
            argv,
            stderr=sink,
            env={**os.environ, "MELVIN_API_KEYS": API_KEY},
        )


def start_server_process(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """`melvin-trio serve` as a child process on free ports, data in tmp_path/data; returns it and its ports."""
    config = tmp_path / "config.yml"
    config.write_text(
        f"host: 127.0.0.1\ndata_dir: {tmp_path / 'data'}\nmodels_dir: {REPO / 'models'}\napi_keys_file: null\n"
        "limits:\n  drain_seconds: 20\n",
        encoding="utf-8",
    )
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    process = spawn_serve(config, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text(encoding="utf-8")
        if match := re.search(r"WebSocket on ws://127\.0\.0\.1:(\d+), REST on http://127\.0\.0\.1:(\d+)", text):
            return process, int(match.group(1)), int(match.group(2))
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text(encoding='utf-8')}")


def make_config(data_dir: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {"data_dir": str(data_dir), "host": "127.0.0.1", "api_keys_file": str(data_dir / "none")}
    data.update(overrides)
    return parse_config(data, data_dir)


@asynccontextmanager
async def running_server(engine: Engine, data_dir: Path, *, seats: int = 1, **overrides: Any) -> AsyncIterator[Running]:
    config = make_config(data_dir, **overrides)
    section = EngineSection("cpu", [EngineWorker(engine, "cpu-0")], seats)
    server = MelvinServer(config, [section], known_language=is_known_language, environ={"MELVIN_API_KEYS": API_KEY})
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(
            lambda task_status: server.serve(websocket_port=0, rest_port=0, task_status=task_status)
        )
        try:
            yield Running(server, addresses, data_dir)
        finally:
            server.request_stop()
