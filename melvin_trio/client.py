"""`melvin-trio stream`: a reference client. Streams a WAV file in real time (or faster) over the Melvin protocol,
shows partials and finals, sends eof, prints the id, and can download both exports."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import ssl
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
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

from melvin_trio.audio import SAMPLE_RATE, SAMPLE_WIDTH
from melvin_trio.core.protocol import WAITING_FOR_SEAT
from melvin_trio.errors import ClientError
from melvin_trio.server.exports import is_stream_id

# How long after its last audio the client waits for the stream's id: the server may first drain a backlog and
# report two engine calls past their 60 s limit (a fresh tester gave up at 120 s before the server's own message).
ID_TIMEOUT_S: Final = 300.0
CHUNK_MS: Final = (10, 10_000)  # audio per message, inclusive: from 10 ms up to 10 s (320 kB, under max_frame_bytes)
DEFAULT_CHUNK_MS: Final = 250
CLOSE_TIMEOUT_S: Final = 5.0


def client_ssl_context(*, ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The TLS context for wss:// URLs: the system's trusted CAs, or `ca_file` (e.g. a self-signed server's
    certificate), or with `insecure` no verification at all (testing only)."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@asynccontextmanager
async def open_connection(url: str, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client connection (ws:// or wss://) whose TCP stream this function owns and always closes.

    Raises ClientError if the server cannot be reached or refuses the WebSocket handshake.

    trio-websocket's `open_websocket_url` leaves the client's socket open when the server closes first (its reader
    stops at EOF without closing the stream, and `aclose()` returns early), which is how this server ends every
    stream; owning the stream closes that leak.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ClientError(f"{url}: not a WebSocket URL (expected ws://HOST:PORT or wss://HOST:PORT)")
    secure = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ClientError(f"{url}: {exc}") from None
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    stream: trio.abc.Stream
    try:
        if secure:
            context = ssl_context or client_ssl_context()
            ssl_stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context, https_compatible=True)
            await ssl_stream.do_handshake()
            stream = ssl_stream
        else:
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.BrokenResourceError) as exc:
        raise ClientError(f"cannot connect to {url}: {_reason(exc)}") from exc
    ws: WebSocketConnection | None = None
    try:
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"{host}:{port}", resource)
            try:
                yield ws
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps what the handshake or the caller's block raised (a fresh tester: a refused handshake
        # and "no stream id within 170 s" came out as tracebacks, past the CLI's one-line handler): a lone error is
        # raised as it is, a refused handshake (from here or trio-websocket's reader task) as a ClientError.
        lone = _lone(group)
        if lone is None:
            raise
        if isinstance(lone, HandshakeError) or (ws is None and isinstance(lone, ConnectionClosed)):
            raise ClientError(f"{url}: the WebSocket handshake failed ({_handshake_reason(lone)})") from None
        if isinstance(lone, ConnectionClosed):
            raise ClientError(f"{url}: the connection closed ({lone.reason})") from None
        raise lone from None


def _lone(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside `group` (and any groups nested in it), or None when it holds more."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


def _handshake_reason(exc: BaseException) -> str:
    """Why a handshake failed, in a line: a server that answers HTTP but not WebSocket (the REST port) gives its
    status, not its headers and page."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return f"the server answered HTTP {status}, not a WebSocket; is this the WebSocket port?"
    return str(exc)


def _reason(exc: BaseException) -> str:
    """The most telling message of a connection failure: trio wraps the per-address errors (refused, TLS
    verification) in a summary or a BrokenResourceError."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    if isinstance(cause, OSError):
        return cause.strerror or str(cause)
    if cause is not None:
        return str(cause)
    return str(exc)


@dataclass
class StreamResult:
    stream_id: str | None = None
    finals: list[dict[str, Any]] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    sent_bytes: int = 0  # audio sent before eof (all of it when `sent_eof`)
    sent_eof: bool = False  # False: the server ended the stream before the client had sent everything


async def stream_pcm(
    url: str,
    key: str,
    pcm: bytes,
    *,
    speed: float = 1.0,
    chunk_ms: int = DEFAULT_CHUNK_MS,
    language: str | None = None,
    on_message: Callable[[str, Any], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> StreamResult:
    """Send `pcm` (mono s16le at `sample_rate`, declared in the first message when not 16 kHz) paced at `speed`
    x real time (0: as fast as possible), then eof; collect what the server answers until it sends the id and
    closes. A server that closes early (a refused key or
    language) ends the sending quietly: the result then has no id, and its notices say why.
    Raises ClientError if the server cannot be reached or gives no id in time."""
    if not (math.isfinite(speed) and speed >= 0) or not CHUNK_MS[0] <= chunk_ms <= CHUNK_MS[1]:
        raise ValueError(f"speed must be finite and >= 0, chunk_ms from {CHUNK_MS[0]} to {CHUNK_MS[1]}")
    result = StreamResult()
    bytes_per_second = sample_rate * SAMPLE_WIDTH
    chunk = max(2, int(bytes_per_second * chunk_ms / 1000) // 2 * 2)
    first: dict[str, Any] = {"Authorization": key}
    if language:
        first["language"] = language
    if sample_rate != SAMPLE_RATE:
        first["config"] = {"sample_rate": str(sample_rate)}  # as BigBlueButton sends it

    def note(kind: str, value: Any) -> None:
        if on_message is not None:
            on_message(kind, value)

    async with open_connection(url, ssl_context) as ws:
        with contextlib.suppress(ConnectionClosed):
            await ws.send_message(json.dumps(first))

        async def send_audio() -> None:
            start = trio.current_time()
            with contextlib.suppress(ConnectionClosed):  # the server closed first: receive() says why
                for offset in range(0, len(pcm), chunk):
                    await ws.send_message(pcm[offset : offset + chunk])
                    result.sent_bytes = min(offset + chunk, len(pcm))
                    if speed > 0:
                        due = start + (offset + chunk) / bytes_per_second / speed
                        await trio.sleep_until(due)
                await ws.send_message(json.dumps({"eof": 1}))
                result.sent_eof = True

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
            sending = len(pcm) / bytes_per_second / speed if speed > 0 else 0.0
            limit = sending + ID_TIMEOUT_S
            with trio.move_on_after(limit) as waited:
                await receive()
            nursery.cancel_scope.cancel()
        if waited.cancelled_caught:
            raise ClientError(f"{url}: no stream id within {limit:.0f} s")
    return result


def download(
    rest_url: str, key: str, stream_id: str, directory: Path, ssl_context: ssl.SSLContext | None = None
) -> list[Path]:
    """Fetch `<id>.json` and `<id>.wav` from the REST exports into `directory`. Raises ClientError."""
    saved = []
    for kind, suffix in (("transcript", ".json"), ("audio", ".wav")):
        url = f"{rest_url.rstrip('/')}/export/{kind}/{stream_id}"
        request = urllib.request.Request(url, headers={"Authorization": key})
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(request, timeout=60, context=ssl_context) as response:
                path = directory / f"{stream_id}{suffix}"
                path.write_bytes(response.read())
                saved.append(path)
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise ClientError(f"{url}: {exc.reason}") from exc
        except http.client.HTTPException as exc:
            # A server stopping mid-download closes the body early (IncompleteRead) or sends no status line at all.
            raise ClientError(f"{url}: the connection broke off: {type(exc).__name__}") from exc
        except OSError as exc:
            raise ClientError(f"cannot save {kind} export: {exc}") from exc
    return saved


def default_rest_url(ws_url: str, rest_port: int) -> str:
    """The REST base URL beside a WebSocket URL: same host, `rest_port`, https when the WebSocket is wss."""
    parts = urllib.parse.urlsplit(ws_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{host}:{rest_port}"


def rest_url_beside(ws_url: str) -> str | None:
    """The REST base URL of the server at `ws_url`, where it can be known without asking: a URL on the default
    WebSocket port (8394) has its exports on the same host's default REST port (8393), over https for wss. None
    for any other port (another configuration, a reverse proxy): only the user knows where its REST port is."""
    from melvin_trio.config import Config

    defaults = Config()
    try:
        port = urllib.parse.urlsplit(ws_url).port
    except ValueError:
        return None
    if port != defaults.websocket_port:
        return None
    return default_rest_url(ws_url, defaults.rest_port)


class Printer:
    """Partials redrawn on one line, finals printed for good. A server notice (other than the seat wait, shown as it
    comes) is held until the stream goes on: a refusal or a failure ends the stream, and the command's one error
    line says it (a fresh tester saw a wrong key printed twice)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()
        self._held: str | None = None

    def flush(self) -> None:
        """Print the held notice, if any."""
        if self._held is not None:
            print(f"[server] {self._held}", file=sys.stderr, flush=True)
            self._held = None

    def drop(self) -> None:
        """Forget the held notice: the error line carries it."""
        self._held = None

    def __call__(self, kind: str, value: Any) -> None:
        if self.as_json:
            print(json.dumps({kind: value}, ensure_ascii=False), flush=True)
            return
        if kind == "id":
            return  # the command prints it, after deciding about the held notice
        self.flush()
        if kind == "notice" and value != WAITING_FOR_SEAT:
            self._held = value
        elif kind == "partial":
            if self.tty:
                print(f"\r\x1b[K… {value.strip()}", end="", flush=True)
        elif kind == "final":
            prefix = "\r\x1b[K" if self.tty else ""
            print(f"{prefix}{value['text'].strip()}", flush=True)
        elif kind == "notice":
            print(f"[server] {value}", file=sys.stderr, flush=True)
