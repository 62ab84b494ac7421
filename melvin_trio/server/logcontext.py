"""Which stream and which client a log line is about, on every line logged while serving them.

Set once per connection (`set_client`, then `set_stream`) in a context variable: trio copies it into every task
the connection starts, and the engine worker runs each pass in its stream's context (EngineWorker.submit), so
whisper.cpp's own lines carry it too. `install()` (idempotent, done by the server) appends it to each record's
message: ` [stream <id>, client <address>]`, leaving out the id when the message already names it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

from trio_websocket import WebSocketRequest

_current: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "melvin_trio_log_context", default=(None, None)
)
_install_lock = threading.Lock()
_installed = False


def client_address(request: WebSocketRequest) -> str:
    """The peer's address and port, and the client a reverse proxy forwarded for (X-Forwarded-For), if any;
    "(gone)" when the peer reset the connection already (getpeername fails with ENOTCONN)."""
    try:
        remote = request.remote
    except OSError:
        remote = "(gone)"
    if isinstance(remote, str):
        peer = remote
    else:
        host = f"[{remote.address}]" if ":" in str(remote.address) else str(remote.address)
        peer = f"{host}:{remote.port}"
    for name, value in request.headers:
        if name.lower() == b"x-forwarded-for":
            forwarded = value.decode("latin-1").strip()[:200]
            return f"{peer} for {forwarded}"
    return peer


def set_client(address: str) -> None:
    _current.set((None, address))


def set_stream(stream_id: str) -> None:
    _current.set((stream_id, _current.get()[1]))


def install() -> None:
    """Add the current stream and client to every log record made from now on (once per process)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            stream_id, client = _current.get()
            if stream_id is None and client is None:
                return record
            try:
                message = record.getMessage()
            except Exception:  # a malformed call: let logging report it as usual
                return record
            parts = [f"stream {stream_id}"] if stream_id and stream_id not in message else []
            if client:
                parts.append(f"client {client}")
            if parts:
                record.msg = f"{message} [{', '.join(parts)}]"
                record.args = None
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
