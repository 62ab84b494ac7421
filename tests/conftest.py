from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
SHARED_AUDIO = REPO.parent / "shared" / "audio"


@dataclass(frozen=True)
class Clip:
    path: Path
    lang: str
    text: str
    seconds: float


def load_clips() -> list[Clip]:
    manifest = SHARED_AUDIO / "manifest.jsonl"
    if not manifest.is_file():
        pytest.fail(f"the shared audio is missing: {manifest} (tests need ../shared/audio beside the repository)")
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        clips.append(Clip(SHARED_AUDIO / entry["file"], entry["lang"], entry["text"], float(entry["seconds"])))
    return clips


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    return load_clips()


def _model(name: str) -> Path:
    path = MODELS_DIR / f"ggml-{name}.bin"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run ./dev setup (it imports the offline default models)")
    return path


@pytest.fixture(scope="session")
def tiny_en_path() -> Path:
    return _model("tiny.en")


@pytest.fixture(scope="session")
def base_path() -> Path:
    return _model("base")


@pytest.fixture(scope="session")
def tiny_en_engine(tiny_en_path: Path) -> Iterator[object]:
    from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions

    engine = WhisperCppEngine(tiny_en_path, WhisperCppOptions(n_threads=2, reduce_audio_ctx=False), name="tiny.en")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def base_engine(base_path: Path) -> Iterator[object]:
    from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions

    engine = WhisperCppEngine(base_path, WhisperCppOptions(n_threads=2, reduce_audio_ctx=False), name="base")
    yield engine
    engine.close()
