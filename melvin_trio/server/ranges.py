"""HTTP byte ranges (RFC 9110 section 14) for one file of known size: which part of it a `Range` header asks
for. Pure logic; the REST app sends the bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ByteRange:
    first: int
    last: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


@dataclass(frozen=True)
class Unsatisfiable:
    """No requested range overlaps the file: 416 with `Content-Range: bytes */size`."""

    def content_range(self, size: int) -> str:
        return f"bytes */{size}"


def requested_range(header: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """The part of a `size`-byte file that `header` asks for, clamped to the file; None means the whole file
    (no header, another unit, a malformed header, or several ranges, which RFC 9110 lets a server answer with
    the whole representation)."""
    if header is None:
        return None
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or not ranges.strip():
        return None
    specs = [s.strip() for s in ranges.split(",") if s.strip()]
    if len(specs) != 1:
        return None
    first_text, dash, last_text = specs[0].partition("-")
    if not dash or not _digits(first_text or "0") or not _digits(last_text or "0"):
        return None
    if not first_text:  # suffix: the last N bytes
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return Unsatisfiable()
        return ByteRange(max(0, size - suffix), size - 1)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # an invalid range: ignored, as RFC 9110 allows
    if first >= size:
        return Unsatisfiable()
    return ByteRange(first, min(int(last_text) if last_text else size - 1, size - 1))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()
