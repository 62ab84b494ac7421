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
        """Append received bytes exactly as they came (an odd trailing byte included)."""
        self._audio.write(pcm)
        self.audio_bytes += len(pcm)

    def add_final(self, payload: dict[str, Any]) -> None:
        self._finals_list.append(payload)
        self._finals.write(json.dumps(payload, ensure_ascii=False) + "\n")
        self._finals.flush()

    @property
    def finals(self) -> list[dict[str, Any]]:
        return list(self._finals_list)

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
        transcript_tmp = self.store.spool_dir / f"{self.stream_id}.json.part"
        with transcript_tmp.open("w", encoding="utf-8") as out:
            json.dump(self._finals_list, out, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(self._audio_path, self.store.data_dir / f"{self.stream_id}.wav")
        os.replace(transcript_tmp, self.store.data_dir / f"{self.stream_id}.json")
        self._finals_path.unlink(missing_ok=True)
