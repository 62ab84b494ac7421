"""Bad model files give clear errors, never a crash of the process that uses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from melvin_trio.engine.whispercpp import WhisperCppEngine
from melvin_trio.models.ggml import ModelFileError, inspect_model
from melvin_trio.models.probe import probe_model


def test_garbage_file_is_rejected_before_whisper_cpp_sees_it(tmp_path: Path) -> None:
    garbage = tmp_path / "ggml-garbage.bin"
    garbage.write_bytes(os.urandom(1 << 20))
    with pytest.raises(ModelFileError, match=r"not a whisper\.cpp model"):
        WhisperCppEngine(garbage)


def test_garbage_with_a_valid_magic_is_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "ggml-garbage.bin"
    garbage.write_bytes(b"lmgg" + os.urandom(1 << 16))
    with pytest.raises(ModelFileError, match="corrupt"):
        inspect_model(garbage)


def test_truncated_model_is_rejected(tmp_path: Path, tiny_en_path: Path) -> None:
    truncated = tmp_path / "ggml-truncated.bin"
    data = tiny_en_path.read_bytes()
    truncated.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ModelFileError, match="truncated"):
        WhisperCppEngine(truncated)


def test_model_missing_its_last_tensors_is_rejected(tmp_path: Path, tiny_en_path: Path) -> None:
    data = tiny_en_path.read_bytes()
    # cut exactly after a tensor boundary: the last tensor is decoder.ln.bias, 384 f32 values behind its header
    cut = tmp_path / "ggml-cut.bin"
    header = 12 + 4 + len(b"decoder.ln.bias")
    cut.write_bytes(data[: len(data) - 384 * 4 - header])
    with pytest.raises(ModelFileError, match="1 of 167 tensors missing"):
        inspect_model(cut)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        WhisperCppEngine(tmp_path / "ggml-nothing.bin")


def test_probe_reports_a_bad_file_without_crashing(tmp_path: Path) -> None:
    garbage = tmp_path / "ggml-garbage.bin"
    garbage.write_bytes(os.urandom(4096))
    result = probe_model(garbage)
    assert not result.ok
    assert "not a whisper.cpp model" in result.message


def test_probe_accepts_the_real_model(tiny_en_path: Path) -> None:
    result = probe_model(tiny_en_path)
    assert result.ok, result.message
    assert result.multilingual is False


def test_a_load_past_the_check_limit_names_the_limit(tiny_en_path: Path) -> None:
    """A fresh tester's busy box: base took longer than the check allows, and `serve` said only that it does not
    load. Right: the message says how long it waited and which setting allows more."""
    result = probe_model(tiny_en_path, timeout=0.01)
    assert not result.ok
    assert result.message == "loading took longer than 0.01 s (a busy machine? raise limits.model_check_seconds)"
