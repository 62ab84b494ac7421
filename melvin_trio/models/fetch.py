"""Download official whisper.cpp models, resumably and verified.

The URL is the one whisper.cpp's `models/download-ggml-model.sh` uses: `<base>/ggml-<name>.bin`, base
`https://huggingface.co/ggerganov/whisper.cpp/resolve/main`. The checksums are the SHA-1s published in
whisper.cpp's `models/README.md`.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from melvin_trio.config import model_path
from melvin_trio.errors import MelvinError
from melvin_trio.models.ggml import ModelFileError, inspect_model

OFFICIAL_BASE_URL: Final = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main"
BASE_URL_ENV: Final = "MELVIN_MODEL_BASE_URL"
OFFICIAL_SHA1: Final[Mapping[str, str]] = {
    "tiny": "bd577a113a864445d4c299885e0cb97d4ba92b5f",
    "tiny.en": "c78c86eb1a8faa21b369bcd33207cc90d64ae9df",
    "base": "465707469ff3a37a2b9b8d8f89f2f99de7299dac",
    "base.en": "137c40403d78fd54d454da0f9bd998f78703390c",
    "small": "55356645c2b361a969dfd0ef2c5a50d530afd8d5",
    "small.en": "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022",
    "small.en-tdrz": "b6c6e7e89af1a35c08e6de56b66ca6a02a2fdfa1",
    "medium": "fd9727b6e1217c2f614f9b698455c4ffd82463b4",
    "medium.en": "8c30f0e44ce9560643ebd10bbe50cd20eafd3723",
    "large-v1": "b1caaf735c4cc1429223d5a74f0f4d0b9b59a299",
    "large-v2": "0f4c8e34f21cf1a914c59d8b3ce882345ad349d6",
    "large-v2-q5_0": "00e39f2196344e901b3a2bd5814807a769bd1630",
    "large-v3": "ad82bf6a9043ceed055076d0fd39f5f186ff8062",
    "large-v3-q5_0": "e6e2ed78495d403bef4b7cff42ef4aaadcfea8de",
}
_CHUNK: Final = 1 << 20
_TIMEOUT_S: Final = 30.0

Progress = Callable[[int, int | None], None]


class FetchError(MelvinError, RuntimeError):
    """The download failed or did not match the official checksum; nothing was installed."""


def _partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.part")


def _hash_existing(path: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha1()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


def fetch_model(
    name: str,
    models_dir: Path,
    *,
    base_url: str = OFFICIAL_BASE_URL,
    sha1: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download `ggml-<name>.bin` into `models_dir` and return its path.

    A partial download left by an earlier attempt is resumed (HTTP Range). The file is checked against the official
    SHA-1 (or `sha1`) and renamed into place only if it matches; on a mismatch the partial file is deleted.
    Raises FetchError (unknown name without `sha1`, HTTP or network failure, checksum mismatch, bad model).
    """
    expected = (sha1 or OFFICIAL_SHA1.get(name, "")).lower()
    if not expected:
        raise FetchError(
            f"no official checksum is known for {name!r} (known: {', '.join(OFFICIAL_SHA1)}); pass --sha1 to fetch it"
        )
    target = model_path(models_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _partial_path(target)
    url = f"{base_url.rstrip('/')}/ggml-{name}.bin"
    digest, have = _hash_existing(part) if part.exists() else (hashlib.sha1(), 0)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            status = response.status
            if have and status != 206:
                digest, have = hashlib.sha1(), 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with part.open("ab" if have else "wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, total)
                out.flush()
                os.fsync(out.fileno())
            if total is not None and have < total:
                # http.client returns short reads, not an error, when the peer closes early.
                raise FetchError(
                    f"{url}: download interrupted at {have} of {total} bytes; run the command again to resume"
                )
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:  # 416: nothing left to fetch; the part may already be complete
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url}: download interrupted ({exc}); run the command again to resume") from exc
    actual = digest.hexdigest()
    if actual != expected:
        part.unlink(missing_ok=True)
        raise FetchError(f"{url}: SHA-1 {actual} does not match the official {expected}; the download was deleted")
    try:
        inspect_model(part)
    except ModelFileError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"{url}: the checksum matched but the file is not a usable model: {exc}") from exc
    part.replace(target)
    return target


def progress_bar(stream_write: Callable[[str], object], width: int = 40) -> Progress:
    """A text progress bar that redraws one line."""

    def show(done: int, total: int | None) -> None:
        mib = done / (1 << 20)
        if total:
            filled = int(width * done / total)
            stream_write(f"\r[{'#' * filled}{'.' * (width - filled)}] {mib:7.1f} / {total / (1 << 20):.1f} MiB")
        else:
            stream_write(f"\r{mib:7.1f} MiB")

    return show
