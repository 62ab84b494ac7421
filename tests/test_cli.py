"""The command line as a user runs it: a child process, real files, real models."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from melvin_trio.audio import read_wav
from melvin_trio.evaluation import Clip, count_errors
from melvin_trio.models.catalog import OFFLINE_DEFAULTS, _package_dir
from tests.conftest import REPO


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "melvin_trio", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _jfk(clips: list[Clip]) -> Clip:
    return next(c for c in clips if c.path.name == "melvin_jfk.wav")


def test_transcribe_prints_the_text(clips: list[Clip], tiny_en_path: Path) -> None:
    jfk = _jfk(clips)
    done = run("transcribe", str(jfk.path))
    assert done.returncode == 0, done.stderr
    assert count_errors(jfk.text, done.stdout, "en").wer == 0.0


def test_transcribe_json_gives_words_with_times(clips: list[Clip], tiny_en_path: Path) -> None:
    jfk = _jfk(clips)
    done = run("transcribe", str(jfk.path), "--json", "--model", "tiny.en", "--language", "en")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["language"] == "en"
    # Lower case: whisper.cpp's beam search draws its candidates at random, and on a fresh context jfk comes out as
    # "and so my ..." without capitals or punctuation (bench/README.md, "Engines side by side").
    assert [w["word"].lower() for w in result["words"]][:3] == ["and", "so", "my"]
    assert set(result["words"][0]) == {"word", "start", "end", "conf"}
    assert result["text"] == " ".join(w["word"] for w in result["words"])


def test_transcribe_resamples_and_downmixes(clips: list[Clip], tiny_en_path: Path, tmp_path: Path) -> None:
    jfk = _jfk(clips)
    audio, _ = read_wav(jfk.path)
    from melvin_trio.audio import resample

    upsampled = resample(audio, 16000, 44100)
    stereo = np.stack([upsampled, upsampled], axis=1)
    path = tmp_path / "jfk-44k-stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes((np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes())
    done = run("transcribe", str(path))
    assert done.returncode == 0, done.stderr
    assert count_errors(jfk.text, done.stdout, "en").wer == 0.0


def test_transcribe_detects_the_language_when_asked(clips: list[Clip], base_path: Path) -> None:
    clip = next(c for c in clips if c.path.name == "librivox-simplicissimus_E.wav")
    done = run("transcribe", str(clip.path), "--model", "base", "--json", "--language", "auto")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["language"] == "de"


def test_a_language_the_model_cannot_do_is_a_clear_error_whatever_the_file_holds(
    clips: list[Clip], tiny_en_path: Path, base_path: Path, tmp_path: Path
) -> None:
    """Checked before any audio is decoded: a silent file once passed (exit 0) where a speech file failed."""
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(3200))
    for path in (_jfk(clips).path, silent):
        for options, expected in (
            (("--language", "de"), "English-only"),
            (("--model", "base", "--language", "xx"), "'xx'"),
        ):
            done = run("transcribe", str(path), *options)
            assert done.returncode == 1, (path, options)
            assert expected in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = run("transcribe", str(silent), "--model", "base", "--language", "auto", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["language"] is None  # no speech: nothing to detect the language on


def test_models_list_shows_size_language_and_load_state(tiny_en_path: Path, base_path: Path) -> None:
    done = run("models", "list")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "tiny, English-only" in lines["tiny.en"]
    assert lines["tiny.en"].endswith("loads")
    assert "base, multilingual" in lines["base"]
    assert lines["base"].endswith("loads")


def test_models_list_flags_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "ggml-broken.bin").write_bytes(b"\0" * 100)
    done = run("models", "--models-dir", str(tmp_path), "list")
    assert "BROKEN" in done.stdout


def test_import_ct2_reproduces_the_default_model_byte_for_byte(tiny_en_path: Path, tmp_path: Path) -> None:
    module, sub = OFFLINE_DEFAULTS["tiny.en"][0]
    done = run("models", "--models-dir", str(tmp_path), "import-ct2", str(_package_dir(module) / sub))
    assert done.returncode == 0, done.stderr
    assert "167 tensors (tiny, English-only)" in done.stdout
    assert (tmp_path / "ggml-tiny.en.bin").read_bytes() == tiny_en_path.read_bytes()


def test_a_bad_config_stops_with_one_message(tmp_path: Path, clips: list[Clip]) -> None:
    config = tmp_path / "config.yml"
    config.write_text("websocket_stream:\n  cpu:\n    modle: tiny.en\n", encoding="utf-8")
    done = run("--config", str(config), "transcribe", str(_jfk(clips).path))
    assert done.returncode == 1
    known = "known here: active, model, cpu_threads, worker_seats, workers, reduce_audio_ctx"
    assert done.stderr.strip() == f"error: {config}: websocket_stream.cpu.modle: unknown key ({known})"


def test_transcribe_writes_subtitles_and_json_to_a_file(clips: list[Clip], tiny_en_path: Path, tmp_path: Path) -> None:
    """An MP3 through `transcribe --format srt|vtt|json --output`: parsed with real parsers, the words complete."""
    import srt
    import webvtt

    from tests.audio_formats import write_format

    jfk = _jfk(clips)
    mp3 = write_format(jfk.path, "mp3", tmp_path)
    done = run("transcribe", str(mp3), "--format", "srt", "--output", str(tmp_path / "out.srt"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    cues = list(srt.parse((tmp_path / "out.srt").read_text(encoding="utf-8")))
    assert count_errors(jfk.text, " ".join(c.content for c in cues), "en").wer == 0.0
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    done = run("transcribe", str(mp3), "--format", "vtt", "--greedy")
    assert done.returncode == 0, done.stderr
    import io

    captions = webvtt.from_buffer(io.StringIO(done.stdout)).captions
    assert count_errors(jfk.text, " ".join(c.text for c in captions), "en").wer == 0.0
    done = run("transcribe", str(mp3), "--format", "json", "--beam-size", "2")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert count_errors(jfk.text, result["text"], "en").wer == 0.0
    assert result["segments"]
    assert result["segments"][-1]["end"] <= result["duration"]


def test_transcribe_of_a_file_that_is_not_audio_is_one_line(tmp_path: Path) -> None:
    """Only our line: the MP3 decoder's own notes on a long text file named .mp3 ("Note: Illegal Audio-MPEG-Header",
    three lines from a fresh tester's README.mp3) are dropped, and libsndfile's "does not exist" is not repeated
    for a file that exists."""
    for name, text in (("notes.mp3", "not audio"), ("readme.mp3", (REPO / "README.md").read_text(encoding="utf-8"))):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        for command in ("transcribe", "stream"):
            done = run(command, str(path))
            assert done.returncode == 1
            assert done.stderr.splitlines() == [
                f"error: {path}: cannot decode: not a supported audio format, or damaged data (libsndfile: format "
                "not recognised); supported: WAV, FLAC, OGG (Vorbis, Opus), MP3"
            ], done.stderr
