"""What README says of a refused request's body, on a real server (Hypercorn, Quart-Trio): up to DISCARD_LIMIT_BYTES
it is read and dropped and the kept-alive connection answers the next request; a larger one is not read: the answer
says `Connection: close` (or, when the client is still sending, the connection is reset first), and the next
request needs a new connection, which is served as usual."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.filerest import DISCARD_LIMIT_BYTES
from tests.server_harness import API_KEY, Running, running_server

BOUNDARY = "melvinboundary"


def _upload(size: int, key: str = "wrong-key") -> bytes:
    """An upload: a multipart form of `size` bytes of audio, with a wrong key (401) unless `key` is given."""
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body = part + b"\0" * size + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (
        f"POST /transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {key}\r\n"
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


def _refused_then_health(running: Running, size: int, key: str = "wrong-key") -> tuple[str, dict[str, str], str]:
    """Send the refused upload, read its answer, then ask /health on the same connection if the server allows it,
    else on a new one. Returns the answer's status line and headers, and where /health was answered."""
    port = running.addresses.rest[1]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(_upload(size, key))
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


async def test_an_upload_past_max_upload_bytes_but_within_the_discard_limit_keeps_the_connection(
    tmp_path: Path,
) -> None:
    """413 is a refusal like 401: with `limits.max_upload_bytes` at 1 MiB, a 2 MiB upload is refused and read, and
    the next request on the same connection is answered (Quart's own body limit used to cut such a body off)."""
    with trio.fail_after(120):
        async with running_server(FakeEngine(), tmp_path, limits={"max_upload_bytes": 1 << 20}) as running:
            refused = await trio.to_thread.run_sync(_refused_then_health, running, 2 << 20, API_KEY)
    assert refused[0].startswith("HTTP/1.1 413")
    assert refused[2] == "same connection"


def _chunked_upload_status(running: Running, size: int) -> str:
    """A chunked upload (no Content-Length) of `size` bytes of audio with the right key: the answer's status line."""
    body = _upload(size, API_KEY).partition(b"\r\n\r\n")[2]
    head = (
        f"POST /transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {API_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for piece in (body[i : i + (64 << 10)] for i in range(0, len(body), 64 << 10))
    )
    with socket.create_connection(("127.0.0.1", running.addresses.rest[1]), timeout=30) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        return _response(sock)[0]


@pytest.mark.parametrize("size", [2 << 20, DISCARD_LIMIT_BYTES + (2 << 20)])
async def test_a_chunked_upload_past_max_upload_bytes_is_refused(tmp_path: Path, size: int) -> None:
    """No Content-Length to refuse it by: the bytes received decide (413), and nothing is kept."""
    with trio.fail_after(120):
        async with running_server(FakeEngine(), tmp_path, limits={"max_upload_bytes": 1 << 20}) as running:
            status = await trio.to_thread.run_sync(_chunked_upload_status, running, size)
    assert status.startswith("HTTP/1.1 413")
    kept = await trio.to_thread.run_sync(lambda: [p for p in tmp_path.rglob("*") if p.stat().st_size > 1 << 20])
    assert not kept
