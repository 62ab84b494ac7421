"""Exports on disk: each stream's audio as it arrives, its finals as they are sent, renamed into place at the end.

Layout: `data_dir/spool/<node_id>/<id>.wav` (audio being received, with a placeholder header) and
`<id>.finals.jsonl` (finals sent so far) beside it: each node spools into its own folder, owned through its lock
(`server/lock.py`). Finished exports are `exports_dir/<id>.wav` and `<id>.json` (`exports_dir` defaults to
`data_dir`; several nodes share it). Finishing a stream patches the WAV header, writes the transcript under a
temporary name and renames it, then renames the audio into place (copied to a temporary name first when
exports_dir is another filesystem), so no half-written export is ever served. File operations are plain blocking
calls: appends of a few kilobytes to the page cache, cheaper than a thread hop per audio frame.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO, Final

from melvin_trio.audio import SAMPLE_RATE, SAMPLE_WIDTH

STREAM_ID: Final = re.compile(r"[0-9a-f]{32}")
_HEADER_BYTES: Final = 44
PART_MAX_AGE_S: Final = 3600.0  # a temporary file this old belongs to a process that died while writing it


def is_stream_id(value: str) -> bool:
    return STREAM_ID.fullmatch(value) is not None


def wav_header(data_bytes: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV file with `data_bytes` of samples at `sample_rate`."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * SAMPLE_WIDTH, SAMPLE_WIDTH, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class ExportStore:
    def __init__(self, data_dir: Path, *, exports_dir: Path | None = None, node_id: str | None = None) -> None:
        self.data_dir = data_dir
        self.exports_dir = data_dir if exports_dir is None else exports_dir
        self.node_id = node_id or socket.gethostname()
        self.spools_root = data_dir / "spool"
        self.spool_dir = self.spools_root / self.node_id

    def prepare(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.exports_dir.mkdir(parents=True, exist_ok=True)

    def audio_path(self, stream_id: str) -> Path | None:
        """The finished audio export, or None for an id that is malformed or unknown (never a path outside)."""
        return self._existing(stream_id, ".wav")

    def transcript_path(self, stream_id: str) -> Path | None:
        return self._existing(stream_id, ".json")

    def _existing(self, stream_id: str, suffix: str) -> Path | None:
        if not is_stream_id(stream_id):
            return None
        path = self.exports_dir / f"{stream_id}{suffix}"
        return path if path.is_file() else None

    def recover(self) -> list[str]:
        """Turn every spool of this node left by a crash (kill -9, power loss) into an export: the audio that
        reached the file and the finals that were sent. Spools of the single-node layout (directly in
        `data_dir/spool/`) are taken too. Call only while holding this node's lock. Returns the recovered ids."""
        return self._recover_dir(self.spool_dir, claims_older_than=0.0) + self._recover_dir(
            self.spools_root, claims_older_than=0.0
        )

    def recover_node(self, node_id: str) -> list[str]:
        """Turn another node's spools into exports. Call only while holding that node's lock."""
        return self._recover_dir(self.spools_root / node_id, claims_older_than=PART_MAX_AGE_S)

    def has_spools(self, node_id: str) -> bool:
        """Whether a node's spool folder holds any audio (a cheap look before taking its lock)."""
        try:
            return any(p.suffix == ".wav" for p in (self.spools_root / node_id).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _recover_dir(self, spool_dir: Path, *, claims_older_than: float) -> list[str]:
        """Export every spool in `spool_dir`. Each is first claimed by an atomic rename to a name of this
        process's: of two processes recovering one folder (possible only where the lock is not shared between
        hosts), one wins and the other skips it. A claim another recoverer left (it died mid-way) is taken when
        older than `claims_older_than` seconds: the node itself takes them all at its start, a survivor only old
        ones, so it never takes a claim a live survivor is working on."""
        recovered: list[str] = []
        if not spool_dir.is_dir():
            return recovered
        claim = f"claim-{_token()}"
        cutoff = time.time() - claims_older_than
        for audio in sorted(spool_dir.glob("*.wav")):
            stream_id = audio.name[:32]
            rest = audio.name[32:]
            if not is_stream_id(stream_id):
                continue
            if rest != ".wav":
                if not rest.startswith(".claim-"):
                    continue
                try:
                    if claims_older_than and audio.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
            claimed = spool_dir / f"{stream_id}.{claim}.wav"
            try:
                os.rename(audio, claimed)
            except FileNotFoundError:
                continue
            finals_path = spool_dir / f"{stream_id}.finals.jsonl"
            finals = _read_journal(finals_path)
            size = claimed.stat().st_size
            with claimed.open("r+b") as f:
                if size < _HEADER_BYTES:
                    f.truncate(0)
                    size = _HEADER_BYTES
                rate = _spool_sample_rate(f)
                f.seek(0)
                f.write(wav_header(size - _HEADER_BYTES, rate))
                f.flush()
                os.fsync(f.fileno())
            self._publish(stream_id, claimed, finals)
            finals_path.unlink(missing_ok=True)
            recovered.append(stream_id)
        return recovered

    def _publish(self, stream_id: str, audio: Path, finals: list[dict[str, Any]]) -> None:
        """Put a finished stream in exports_dir: the transcript first, then the audio, each complete before its
        final name exists."""
        _write_json_atomically(
            self.exports_dir / f".{stream_id}.{_token()}.json.part", self.exports_dir / f"{stream_id}.json", finals
        )
        _move_into(audio, self.exports_dir / f"{stream_id}.wav")

    def purge_older_than(self, hours: float, now: float | None = None) -> list[str]:
        """Delete exports older than `hours`; returns their ids. Spools of live streams are never touched. Safe
        on every node at once: a file another node deleted first is not an error."""
        cutoff = (time.time() if now is None else now) - hours * 3600
        purged = set()
        for path in list(self.exports_dir.glob("*.wav")) + list(self.exports_dir.glob("*.json")):
            if not is_stream_id(path.stem):
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    purged.add(path.stem)
            except FileNotFoundError:
                continue
        part_cutoff = (time.time() if now is None else now) - PART_MAX_AGE_S
        for path in self.exports_dir.glob(".*.part"):  # left by a process that died while writing
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < part_cutoff:
                    path.unlink()
        return sorted(purged)

    def open_recording(self, stream_id: str, sample_rate: int = SAMPLE_RATE) -> Recording:
        if not is_stream_id(stream_id):
            raise ValueError(f"not a stream id: {stream_id!r}")
        self.prepare()
        return Recording(self, stream_id, sample_rate)


def _spool_sample_rate(f: BinaryIO) -> int:
    """The rate a spool's header was written with when its stream began (the client's declared rate)."""
    f.seek(24)
    field = f.read(4)
    rate = struct.unpack("<I", field)[0] if len(field) == 4 else 0
    return rate if rate > 0 else SAMPLE_RATE


class Recording:
    """One stream's spool: audio appended as received (at the client's declared rate, which the WAV header
    carries from the start, so a recovered spool keeps it), finals appended as sent."""

    def __init__(self, store: ExportStore, stream_id: str, sample_rate: int = SAMPLE_RATE) -> None:
        self.store = store
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self._audio_path = store.spool_dir / f"{stream_id}.wav"
        self._finals_path = store.spool_dir / f"{stream_id}.finals.jsonl"
        self._audio = self._audio_path.open("wb")
        self._audio.write(wav_header(0, sample_rate))
        self._reader: BinaryIO | None = None  # opened when audio must be read back (see read_audio)
        self._finals = self._finals_path.open("w", encoding="utf-8")
        self._finals_list: list[dict[str, Any]] = []
        self.audio_bytes = 0
        self.closed = False

    def write_audio(self, pcm: bytes) -> None:
        """Append received bytes exactly as they came (an odd trailing byte included). Flushed at once, so a
        killed process loses nothing that reached this call. Raises OSError (a full disk, say)."""
        self._audio.write(pcm)
        self._audio.flush()
        self.audio_bytes += len(pcm)

    def add_final(self, payload: dict[str, Any]) -> None:
        self._finals_list.append(payload)
        self._finals.write(json.dumps(payload, ensure_ascii=False) + "\n")
        self._finals.flush()

    @property
    def finals(self) -> list[dict[str, Any]]:
        return list(self._finals_list)

    def read_audio(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes of the audio received so far, from byte `offset` of the stream (not of the file).
        Raises OSError."""
        if self._reader is None:
            self._reader = self._audio_path.open("rb")
        return os.pread(self._reader.fileno(), min(size, self.audio_bytes - offset), _HEADER_BYTES + offset)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def abandon(self) -> None:
        """Close the spool files without exporting; `ExportStore.recover` turns them into an export later."""
        self.closed = True
        self._close_reader()
        self._audio.close()
        self._finals.close()

    def finish(self) -> None:
        """Turn the spool into the export: patch the WAV header, write the transcript, rename both into place."""
        if self.closed:
            return
        self.closed = True
        self._close_reader()
        self._audio.flush()
        self._audio.seek(0)
        self._audio.write(wav_header(self.audio_bytes, self.sample_rate))
        self._audio.flush()
        os.fsync(self._audio.fileno())
        self._audio.close()
        self._finals.close()
        self.store._publish(self.stream_id, self._audio_path, self._finals_list)
        self._finals_path.unlink(missing_ok=True)


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The finals journal; a last line cut short by a crash is dropped."""
    finals: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return finals
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            finals.append(entry)
    return finals


def _write_json_atomically(tmp: Path, target: Path, value: object) -> None:
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(value, out, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def _move_into(source: Path, target: Path) -> None:
    """Rename `source` to `target`; across filesystems (a node-local data_dir, a shared exports_dir) copy it to a
    temporary name beside the target first, so the target is complete whenever it exists."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = target.with_name(f".{target.name}.{_token()}.part")
    with source.open("rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, target)
    source.unlink()


def _token() -> str:
    """Unique among processes and hosts sharing a folder."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
