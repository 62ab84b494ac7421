"""Byte ranges on /export/audio (RFC 9110 section 14) over a real socket, and the caching of keyed exports."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import pytest
import trio

from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.ranges import ByteRange, Unsatisfiable, requested_range
from tests.server_harness import API_KEY, Running, running_server

SIZE = 96 * 1024 + 44  # a 3 s export: 96 KB of audio behind its header
STREAM_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=-100", ByteRange(SIZE - 100, SIZE - 1)),
        (f"bytes=-{SIZE + 5}", ByteRange(0, SIZE - 1)),
        ("bytes=1000-", ByteRange(1000, SIZE - 1)),
        ("bytes=0-1048575", ByteRange(0, SIZE - 1)),
        (f"bytes={SIZE - 1}-{SIZE - 1}", ByteRange(SIZE - 1, SIZE - 1)),
        ("BYTES = 5-9", ByteRange(5, 9)),
        (f"bytes={SIZE}-", Unsatisfiable()),
        (f"bytes={SIZE}-{SIZE + 10}", Unsatisfiable()),
        ("bytes=-0", Unsatisfiable()),
        ("bytes=0-9,20-29", None),  # several ranges: the whole file, as RFC 9110 allows
        ("bytes=9-0", None),  # invalid: ignored
        ("bytes=a-b", None),
        ("bytes=-", None),
        ("items=0-9", None),
        ("bytes=", None),
    ],
)
def test_requested_range(header: str | None, expected: ByteRange | Unsatisfiable | None) -> None:
    assert requested_range(header, SIZE) == expected


def test_nothing_of_an_empty_file_can_be_served() -> None:
    assert requested_range("bytes=-10", 0) == Unsatisfiable()
    assert requested_range("bytes=0-", 0) == Unsatisfiable()


def _request(running: Running, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", running.addresses.rest[1], timeout=30)
    try:
        connection.request(method, path, headers={"Authorization": API_KEY, **headers})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def test_byte_ranges_over_a_socket(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    (tmp_path / f"{STREAM_ID}.wav").write_bytes(data)
    (tmp_path / f"{STREAM_ID}.json").write_text("[]", encoding="utf-8")
    url = f"/export/audio/{STREAM_ID}"
    cases = [
        ("bytes=44-143", 206, 44, 143),
        ("bytes=-100", 206, SIZE - 100, SIZE - 1),
        ("bytes=1000-", 206, 1000, SIZE - 1),
        ("bytes=0-1048575", 206, 0, SIZE - 1),  # the field report: clamped, and exactly that many bytes sent
        (f"bytes=-{SIZE * 2}", 206, 0, SIZE - 1),
        ("bytes=0-9,20-29", 200, 0, SIZE - 1),
    ]
    with trio.fail_after(60):
        async with running_server(FakeEngine(), tmp_path) as running:

            async def fetch(method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
                return await trio.to_thread.run_sync(lambda: _request(running, method, url, headers))

            for header, status, first, last in cases:
                got_status, headers, body = await fetch("GET", {"Range": header})
                assert got_status == status, header
                assert body == data[first : last + 1], header
                assert headers["content-length"] == str(last - first + 1), header
                assert headers["accept-ranges"] == "bytes"
                assert headers["cache-control"] == "private, no-store"
                assert "expires" not in headers
                if status == 206:
                    assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}", header
                else:
                    assert "content-range" not in headers

            for header in (f"bytes={SIZE}-", "bytes=-0", f"bytes={SIZE + 100}-{SIZE + 200}"):
                status, headers, body = await fetch("GET", {"Range": header})
                assert status == 416, header
                assert headers["content-range"] == f"bytes */{SIZE}"

            status, headers, body = await fetch("GET", {})
            assert (status, body, headers["accept-ranges"]) == (200, data, "bytes")
            etag = headers["etag"]
            status, headers, body = await fetch("GET", {"Range": "bytes=0-9", "If-Range": etag})
            assert (status, body) == (206, data[:10])
            status, headers, body = await fetch("GET", {"Range": "bytes=0-9", "If-Range": '"stale"'})
            assert (status, body) == (200, data)

            status, headers, body = await fetch("HEAD", {})
            assert (status, body) == (200, b"")
            assert headers["content-length"] == str(SIZE)
            assert headers["accept-ranges"] == "bytes"
            assert headers["cache-control"] == "private, no-store"
            status, headers, body = await fetch("HEAD", {"Range": "bytes=-100"})
            assert (status, headers["content-length"], headers["content-range"]) == (
                206,
                "100",
                f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}",
            )

            status, headers, _ = await trio.to_thread.run_sync(
                lambda: _request(running, "GET", f"/export/transcript/{STREAM_ID}", {})
            )
            assert (status, headers["cache-control"]) == (200, "private, no-store")
