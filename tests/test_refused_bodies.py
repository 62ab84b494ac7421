"""What README says of a refused request's body, on a real server (Hypercorn, Quart-Trio): up to DISCARD_LIMIT_BYTES
it is read and dropped and the kept-alive connection answers the next request; a larger one is not read: the answer
says `Connection: close` (or, when the client is still sending, the connection is reset first), and the next
request needs a new connection, which is served as usual."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.filerest import DISCARD_LIMIT_BYTES
from tests.server_harness import Running, running_server

BOUNDARY = "melvinboundary"


def _upload(size: int) -> bytes:
    """A refused upload: a multipart form of `size` bytes of audio with a wrong key (401)."""
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body = part + b"\0" * size + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (
        "POST /transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: wrong-key\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0], headers, body


def _refused_then_health(running: Running, size: int) -> tuple[str, dict[str, str], str]:
    """Send the refused upload, read its answer, then ask /health on the same connection if the server allows it,
    else on a new one. Returns the answer's status line and headers, and where /health was answered."""
    port = running.addresses.rest[1]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(_upload(size))
            status, headers, _ = _response(sock)
        except (BrokenPipeError, ConnectionResetError):
            status, headers = "reset while sending", {"connection": "close"}
        if headers.get("connection", "").lower() != "close":
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _response(sock)[0].startswith("HTTP/1.1 200")
            return status, headers, "same connection"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert _response(sock)[0].startswith("HTTP/1.1 200")
    return status, headers, "new connection"


async def test_a_refused_body_up_to_the_limit_keeps_the_connection_a_larger_one_closes_it(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_server(FakeEngine(), tmp_path) as running:
            small = await trio.to_thread.run_sync(_refused_then_health, running, 1 << 20)
            large = await trio.to_thread.run_sync(_refused_then_health, running, DISCARD_LIMIT_BYTES + (2 << 20))
    assert small[0].startswith("HTTP/1.1 401")
    assert small[2] == "same connection"
    assert large[0].startswith("HTTP/1.1 401") or large[0] == "reset while sending"
    assert large[1]["connection"] == "close"
    assert large[2] == "new connection"
