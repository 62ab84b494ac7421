"""Reader for CTranslate2 model files (`model.bin`), the format faster-whisper models ship in.

The layout, as CTranslate2's `ModelSpec._serialize` writes it (format version 6), little-endian:

    u32 format version, string spec name, u32 spec revision,
    u32 variable count, then per variable:
        string name, u8 rank, u32 dims[rank], u8 dtype code, u32 byte count, raw bytes
    u32 alias count, then per alias: string alias, string target name

where a string is a u16 length (including a trailing NUL) and the bytes. A large model may be split into
`model.bin.part1`, `model.bin.part2`, ... whose concatenation is the file.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from melvin_trio.errors import MelvinError

# CTranslate2's DataType enum, as found in the files.
DTYPES: Final[Mapping[int, np.dtype[np.generic]]] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}
SUPPORTED_FORMAT_VERSIONS: Final = frozenset({5, 6})
_MAX_RANK: Final = 8


class CT2FormatError(MelvinError, ValueError):
    """The file is not a CTranslate2 model this reader understands (the message says where and why)."""


@dataclass(frozen=True)
class CT2Model:
    spec_name: str
    spec_revision: int
    format_version: int
    variables: Mapping[str, npt.NDArray[np.generic]]
    aliases: Mapping[str, str]

    def get(self, name: str) -> npt.NDArray[np.generic]:
        """The variable called `name`, following aliases; raises CT2FormatError if it is missing."""
        target = self.aliases.get(name, name)
        try:
            return self.variables[target]
        except KeyError:
            raise CT2FormatError(f"variable {name!r} is missing from the model") from None

    def scalar(self, name: str) -> int:
        value = self.get(name)
        if value.size != 1:
            raise CT2FormatError(f"variable {name!r} should be a scalar, has shape {value.shape}")
        return int(value.reshape(()))


def model_files(directory: Path) -> list[Path]:
    """The file or ordered parts holding the model in `directory`; raises CT2FormatError if there are none."""
    single = directory / "model.bin"
    if single.is_file():
        return [single]
    parts: list[Path] = []
    index = 1
    while (part := directory / f"model.bin.part{index}").is_file():
        parts.append(part)
        index += 1
    if not parts:
        raise CT2FormatError(f"{directory}: no model.bin nor model.bin.part1 found")
    return parts


class _ConcatenatedReader(io.RawIOBase):
    """Reads several files as one stream, so split models need no temporary copy."""

    def __init__(self, paths: list[Path]) -> None:
        self._files: Iterator[Path] = iter(paths)
        self._current: io.BufferedReader | None = None
        self._advance()

    def _advance(self) -> None:
        if self._current is not None:
            self._current.close()
        nxt = next(self._files, None)
        self._current = None if nxt is None else nxt.open("rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._current is not None:
            n = self._current.readinto(buffer)
            if n:
                return n
            self._advance()
        return 0

    def close(self) -> None:
        while self._current is not None:
            self._advance()
        super().close()


class _Cursor:
    def __init__(self, stream: BinaryIO, source: str) -> None:
        self._stream = stream
        self._source = source
        self.offset = 0

    def take(self, n: int, what: str) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise CT2FormatError(
                f"{self._source}: file ends at byte {self.offset + len(data)} while reading {what} "
                f"({n} bytes expected): truncated or not a CTranslate2 model"
            )
        self.offset += n
        return data

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", f"length of {what}")
        raw = self.take(length, what)
        if length == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self._source}: {what} at byte {self.offset - length} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CT2FormatError(f"{self._source}: {what} is not UTF-8") from exc

    def at_end(self) -> bool:
        return self._stream.read(1) == b""


def read_model(directory: Path) -> CT2Model:
    """Read every variable of the CTranslate2 model in `directory` (model.bin or its parts).

    Raises CT2FormatError with the position and reason on anything malformed or truncated.
    """
    paths = model_files(directory)
    source = str(paths[0]) if len(paths) == 1 else f"{directory}/model.bin.part*"
    with io.BufferedReader(_ConcatenatedReader(paths), buffer_size=1 << 20) as stream:
        return _parse(_Cursor(stream, source), source)


def _parse(cur: _Cursor, source: str) -> CT2Model:
    (version,) = cur.unpack("I", "format version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise CT2FormatError(
            f"{source}: format version {version} is not supported (expected one of "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}); is this a CTranslate2 model.bin?"
        )
    spec_name = cur.string("spec name")
    (revision,) = cur.unpack("I", "spec revision")
    (count,) = cur.unpack("I", "variable count")
    variables: dict[str, npt.NDArray[np.generic]] = {}
    for index in range(count):
        name = cur.string(f"name of variable {index}")
        (rank,) = cur.unpack("B", f"rank of {name}")
        if rank > _MAX_RANK:
            raise CT2FormatError(f"{source}: variable {name!r} has rank {rank}: corrupt file")
        dims = cur.unpack(f"{rank}I", f"dims of {name}") if rank else ()
        (code,) = cur.unpack("B", f"dtype of {name}")
        (nbytes,) = cur.unpack("I", f"byte count of {name}")
        dtype = DTYPES.get(code)
        if dtype is None:
            raise CT2FormatError(f"{source}: variable {name!r} has unknown dtype code {code}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise CT2FormatError(
                f"{source}: variable {name!r} of shape {dims} and {dtype} should hold {expected} bytes, "
                f"the file says {nbytes}"
            )
        data = cur.take(nbytes, f"data of {name}")
        variables[name] = np.frombuffer(data, dtype=dtype).reshape(dims)
    (n_aliases,) = cur.unpack("I", "alias count")
    aliases: dict[str, str] = {}
    for index in range(n_aliases):
        alias = cur.string(f"alias {index}")
        aliases[alias] = cur.string(f"target of alias {alias}")
    if not cur.at_end():
        raise CT2FormatError(f"{source}: unexpected bytes after the alias table at byte {cur.offset}")
    return CT2Model(spec_name, revision, version, variables, aliases)
