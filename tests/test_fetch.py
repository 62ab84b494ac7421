"""`models fetch` against a local HTTP server: full download, resume, checksum mismatch, interruption."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from melvin_trio.models.convert import convert_ct2
from melvin_trio.models.fetch import FetchError, fetch_model
from tests.ct2_builder import tiny_whisper_variables, write_model_dir


@dataclass
class Served:
    files: dict[str, bytes]
    honour_range: bool = True
    cut_after: int | None = None  # close the connection after this many body bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        served = self.server.served  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        served.requests.append((self.path, rng))
        body = served.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and served.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if served.cut_after is not None:
            payload = payload[: served.cut_after]
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served(files={})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/repo/resolve/main", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("fetch-model")
    write_model_dir(tmp / "ct2", tiny_whisper_variables())
    return convert_ct2(tmp / "ct2", tmp / "ggml-small-test.bin").path.read_bytes()


def test_full_download_is_verified_and_renamed_into_place(
    server: tuple[str, Served], model_bytes: bytes, tmp_path: Path
) -> None:
    url, served = server
    served.files["ggml-test.bin"] = model_bytes
    progress: list[tuple[int, int | None]] = []
    path = fetch_model(
        "test",
        tmp_path,
        base_url=url,
        sha1=hashlib.sha1(model_bytes).hexdigest(),
        progress=lambda d, t: progress.append((d, t)),
    )
    assert path == tmp_path / "ggml-test.bin"
    assert path.read_bytes() == model_bytes
    assert served.requests == [("/repo/resolve/main/ggml-test.bin", None)]
    assert progress[-1] == (len(model_bytes), len(model_bytes))
    assert [p.name for p in tmp_path.iterdir()] == ["ggml-test.bin"]


def test_an_interrupted_download_resumes_where_it_stopped(
    server: tuple[str, Served], model_bytes: bytes, tmp_path: Path
) -> None:
    url, served = server
    served.files["ggml-test.bin"] = model_bytes
    sha1 = hashlib.sha1(model_bytes).hexdigest()
    served.cut_after = 100_000
    with pytest.raises(FetchError, match="interrupted"):
        fetch_model("test", tmp_path, base_url=url, sha1=sha1)
    part = tmp_path / ".ggml-test.bin.part"
    assert part.stat().st_size == 100_000
    assert not (tmp_path / "ggml-test.bin").exists()

    served.cut_after = None
    path = fetch_model("test", tmp_path, base_url=url, sha1=sha1)
    assert served.requests[-1][1] == "bytes=100000-"
    assert path.read_bytes() == model_bytes
    assert not part.exists()


def test_resume_starts_over_when_the_server_ignores_ranges(
    server: tuple[str, Served], model_bytes: bytes, tmp_path: Path
) -> None:
    url, served = server
    served.files["ggml-test.bin"] = model_bytes
    served.honour_range = False
    (tmp_path / ".ggml-test.bin.part").write_bytes(b"stale bytes from another file")
    path = fetch_model("test", tmp_path, base_url=url, sha1=hashlib.sha1(model_bytes).hexdigest())
    assert path.read_bytes() == model_bytes


def test_a_checksum_mismatch_leaves_nothing_behind(
    server: tuple[str, Served], model_bytes: bytes, tmp_path: Path
) -> None:
    url, served = server
    served.files["ggml-tiny.en.bin"] = model_bytes  # not the official tiny.en: its SHA-1 differs
    with pytest.raises(FetchError, match="does not match the official c78c86eb"):
        fetch_model("tiny.en", tmp_path, base_url=url)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_model_needs_a_checksum(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no official checksum"):
        fetch_model("tiny-q9", tmp_path, base_url="http://127.0.0.1:9")


def test_http_errors_are_reported(server: tuple[str, Served], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_model("base", tmp_path, base_url=url)
    assert list(tmp_path.iterdir()) == []
