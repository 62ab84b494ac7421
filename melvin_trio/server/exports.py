"""Exports on disk: each stream's audio as it arrives, its finals as they are sent, renamed into place at the end.

Layout under `data_dir`: `<id>.wav` and `<id>.json` (finished exports), `spool/<id>.wav` (audio being received,
with a placeholder header) and `spool/<id>.finals.jsonl` (finals sent so far). Finishing a stream patches the WAV
header and renames; nothing is rewritten. File operations are plain blocking calls: appends of a few kilobytes to
the page cache, cheaper than a thread hop per audio frame.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any, Final

from melvin_trio.audio import SAMPLE_RATE, SAMPLE_WIDTH

STREAM_ID: Final = re.compile(r"[0-9a-f]{32}")
_HEADER_BYTES: Final = 44


def is_stream_id(value: str) -> bool:
    return STREAM_ID.fullmatch(value) is not None


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte header of a 16 kHz mono 16-bit PCM WAV file with `data_bytes` of samples."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * SAMPLE_WIDTH, SAMPLE_WIDTH, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class ExportStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.spool_dir = data_dir / "spool"

    def prepare(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    def audio_path(self, stream_id: str) -> Path | None:
        """The finished audio export, or None for an id that is malformed or unknown (never a path outside)."""
        return self._existing(stream_id, ".wav")

    def transcript_path(self, stream_id: str) -> Path | None:
        return self._existing(stream_id, ".json")

    def _existing(self, stream_id: str, suffix: str) -> Path | None:
        if not is_stream_id(stream_id):
            return None
        path = self.data_dir / f"{stream_id}{suffix}"
        return path if path.is_file() else None

    def recover(self) -> list[str]:
        """Turn every spool left by a crash (kill -9, power loss) into an export: the audio that reached the file
        and the finals that were sent. Returns the recovered ids."""
        recovered: list[str] = []
        if not self.spool_dir.is_dir():
            return recovered
        for audio in sorted(self.spool_dir.glob("*.wav")):
            stream_id = audio.stem
            if not is_stream_id(stream_id):
                continue
            finals_path = self.spool_dir / f"{stream_id}.finals.jsonl"
            finals = _read_journal(finals_path)
            size = audio.stat().st_size
            with audio.open("r+b") as f:
                if size < _HEADER_BYTES:
                    f.truncate(0)
                    size = _HEADER_BYTES
                f.seek(0)
                f.write(wav_header(size - _HEADER_BYTES))
                f.flush()
                os.fsync(f.fileno())
            _write_json_atomically(
                self.spool_dir / f"{stream_id}.json.part", self.data_dir / f"{stream_id}.json", finals
            )
            os.replace(audio, self.data_dir / f"{stream_id}.wav")
            finals_path.unlink(missing_ok=True)
            recovered.append(stream_id)
        return recovered

    def purge_older_than(self, hours: float, now: float | None = None) -> list[str]:
        """Delete exports older than `hours`; returns their ids. Spools of live streams are never touched."""
        cutoff = (time.time() if now is None else now) - hours * 3600
        purged = set()
        for path in list(self.data_dir.glob("*.wav")) + list(self.data_dir.glob("*.json")):
            if is_stream_id(path.stem) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                purged.add(path.stem)
        return sorted(purged)

    def open_recording(self, stream_id: str) -> Recording:
        if not is_stream_id(stream_id):
            raise ValueError(f"not a stream id: {stream_id!r}")
        self.prepare()
        return Recording(self, stream_id)


class Recording:
    """One stream's spool: audio appended as received, finals appended as sent."""

    def __init__(self, store: ExportStore, stream_id: str) -> None:
        self.store = store
        self.stream_id = stream_id
        self._audio_path = store.spool_dir / f"{stream_id}.wav"
        self._finals_path = store.spool_dir / f"{stream_id}.finals.jsonl"
        self._audio = self._audio_path.open("wb")
        self._audio.write(wav_header(0))
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

    def abandon(self) -> None:
        """Close the spool files without exporting; `ExportStore.recover` turns them into an export later."""
        self.closed = True
        self._audio.close()
        self._finals.close()

    def finish(self) -> None:
        """Turn the spool into the export: patch the WAV header, write the transcript, rename both into place."""
        if self.closed:
            return
        self.closed = True
        self._audio.flush()
        self._audio.seek(0)
        self._audio.write(wav_header(self.audio_bytes))
        self._audio.flush()
        os.fsync(self._audio.fileno())
        self._audio.close()
        self._finals.close()
        _write_json_atomically(
            self.store.spool_dir / f"{self.stream_id}.json.part",
            self.store.data_dir / f"{self.stream_id}.json",
            self._finals_list,
        )
        os.replace(self._audio_path, self.store.data_dir / f"{self.stream_id}.wav")
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
