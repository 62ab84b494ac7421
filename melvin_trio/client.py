"""`melvin-trio stream`: a reference client. Streams a WAV file in real time (or faster) over the Melvin protocol,
shows partials and finals, sends eof, prints the id, and can download both exports."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from melvin_trio.audio import SAMPLE_RATE, SAMPLE_WIDTH
from melvin_trio.server.exports import is_stream_id

ID_TIMEOUT_S: Final = 120.0
CLOSE_TIMEOUT_S: Final = 5.0


@asynccontextmanager
async def open_connection(url: str) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client connection whose TCP stream this function owns and always closes.

    trio-websocket's `open_websocket_url` leaves the client's socket open when the server closes first (its reader
    stops at EOF without closing the stream, and `aclose()` returns early), which is how this server ends every
    stream; owning the stream closes that leak.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"{url}: only ws:// URLs are supported by this client")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    stream = await trio.open_tcp_stream(host, port)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, f"{host}:{port}", resource)
        try:
            yield ws
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()


@dataclass
class StreamResult:
    stream_id: str | None = None
    finals: list[dict[str, Any]] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


async def stream_pcm(
    url: str,
    key: str,
    pcm: bytes,
    *,
    speed: float = 1.0,
    chunk_ms: int = 250,
    language: str | None = None,
    on_message: Callable[[str, Any], None] | None = None,
) -> StreamResult:
    """Send `pcm` (16 kHz mono s16le) paced at `speed` x real time (0: as fast as possible), then eof; collect
    what the server answers until it sends the id and closes."""
    result = StreamResult()
    chunk = max(2, int(SAMPLE_RATE * SAMPLE_WIDTH * chunk_ms / 1000) // 2 * 2)
    first: dict[str, Any] = {"Authorization": key}
    if language:
        first["language"] = language

    def note(kind: str, value: Any) -> None:
        if on_message is not None:
            on_message(kind, value)

    async with open_connection(url) as ws:
        await ws.send_message(json.dumps(first))

        async def send_audio() -> None:
            start = trio.current_time()
            for offset in range(0, len(pcm), chunk):
                await ws.send_message(pcm[offset : offset + chunk])
                if speed > 0:
                    due = start + (offset + chunk) / (SAMPLE_RATE * SAMPLE_WIDTH) / speed
                    await trio.sleep_until(due)
            await ws.send_message(json.dumps({"eof": 1}))

        async def receive() -> None:
            while True:
                try:
                    message = await ws.get_message()
                except ConnectionClosed:
                    return
                if isinstance(message, bytes):
                    continue
                try:
                    data = json.loads(message)
                except json.JSONDecodeError:
                    data = None
                if isinstance(data, dict) and "partial" in data:
                    result.partials.append(data["partial"])
                    note("partial", data["partial"])
                elif isinstance(data, dict) and "result" in data:
                    result.finals.append(data)
                    note("final", data)
                elif is_stream_id(message):
                    result.stream_id = message
                    note("id", message)
                    return
                else:
                    result.notices.append(message)
                    note("notice", message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_audio)
            with trio.fail_after(len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH) / max(speed, 1e-9) + ID_TIMEOUT_S):
                await receive()
            nursery.cancel_scope.cancel()
    return result


def download(rest_url: str, key: str, stream_id: str, directory: Path) -> list[Path]:
    """Fetch `<id>.json` and `<id>.wav` from the REST exports into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = []
    for kind, suffix in (("transcript", ".json"), ("audio", ".wav")):
        request = urllib.request.Request(
            f"{rest_url.rstrip('/')}/export/{kind}/{stream_id}", headers={"Authorization": key}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            path = directory / f"{stream_id}{suffix}"
            path.write_bytes(response.read())
            saved.append(path)
    return saved


def default_rest_url(ws_url: str) -> str:
    parts = urllib.parse.urlsplit(ws_url)
    host = parts.hostname or "127.0.0.1"
    return f"http://{host}:8393"


class Printer:
    """Partials redrawn on one line, finals printed for good."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()

    def __call__(self, kind: str, value: Any) -> None:
        if self.as_json:
            print(json.dumps({kind: value}, ensure_ascii=False), flush=True)
        elif kind == "partial":
            if self.tty:
                print(f"\r\x1b[K… {value.strip()}", end="", flush=True)
        elif kind == "final":
            prefix = "\r\x1b[K" if self.tty else ""
            print(f"{prefix}{value['text'].strip()}", flush=True)
        elif kind == "notice":
            print(f"[server] {value}", file=sys.stderr, flush=True)
