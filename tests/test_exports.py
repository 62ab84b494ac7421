"""Exports on disk: spooling, finishing, crash recovery, retention, and ids that cannot escape data_dir."""

from __future__ import annotations

import json
import os
import time
import wave
from pathlib import Path

from melvin_trio.server.exports import ExportStore, is_stream_id

SID = "0123456789abcdef0123456789abcdef"


def _pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.readframes(wav.getnframes())


def test_a_finished_recording_is_the_audio_as_received_and_the_finals_as_sent(tmp_path: Path) -> None:
    store = ExportStore(tmp_path)
    recording = store.open_recording(SID)
    chunks = [b"\x01\x02\x03", b"\x04", b"", b"\x05\x06" * 1000]
    for chunk in chunks:
        recording.write_audio(chunk)
    recording.add_final({"result": [], "text": " a"})
    recording.finish()
    assert store.audio_path(SID) == tmp_path / f"{SID}.wav"
    assert _pcm(tmp_path / f"{SID}.wav") == b"".join(chunks)
    assert json.loads((tmp_path / f"{SID}.json").read_text()) == [{"result": [], "text": " a"}]
    assert list(store.spool_dir.iterdir()) == []


def test_an_interrupted_spool_is_recovered(tmp_path: Path) -> None:
    store = ExportStore(tmp_path)
    recording = store.open_recording(SID)
    recording.write_audio(b"\x10\x20" * 4000)
    recording.add_final({"result": [{"word": "hi"}], "text": " hi"})
    recording.abandon()  # the process dies here: no finish(); a final was being written when it died
    with (store.spool_dir / f"{SID}.finals.jsonl").open("a") as journal:
        journal.write('{"result": [{"wo')
    assert store.audio_path(SID) is None
    assert ExportStore(tmp_path).recover() == [SID]
    assert _pcm(tmp_path / f"{SID}.wav") == b"\x10\x20" * 4000
    assert json.loads((tmp_path / f"{SID}.json").read_text()) == [{"result": [{"word": "hi"}], "text": " hi"}]
    assert ExportStore(tmp_path).recover() == []


def test_retention_deletes_only_old_exports(tmp_path: Path) -> None:
    store = ExportStore(tmp_path)
    old, new = "a" * 32, "b" * 32
    for sid in (old, new):
        store.open_recording(sid).finish()
    week_ago = time.time() - 7 * 24 * 3600
    for suffix in (".wav", ".json"):
        os.utime(tmp_path / f"{old}{suffix}", (week_ago, week_ago))
    (tmp_path / "notes.txt").write_text("not an export")
    os.utime(tmp_path / "notes.txt", (week_ago, week_ago))
    assert store.purge_older_than(72) == [old]
    assert store.audio_path(old) is None
    assert store.audio_path(new) is not None
    assert (tmp_path / "notes.txt").exists()


def test_ids_that_are_not_32_hex_characters_never_reach_the_file_system(tmp_path: Path) -> None:
    store = ExportStore(tmp_path / "data")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    for bad in ["..", "../secret", "/etc/passwd", "%2e%2e", "A" * 32, "0" * 31, "0" * 33, "g" * 32, "x" * 10_000, ""]:
        assert not is_stream_id(bad)
        assert store.audio_path(bad) is None
        assert store.transcript_path(bad) is None
