from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from melvin_trio.evaluation import Clip, read_manifest

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
SHARED_AUDIO = REPO.parent / "shared" / "audio"


def load_clips() -> list[Clip]:
    try:
        return read_manifest(SHARED_AUDIO)
    except FileNotFoundError:
        pytest.fail(f"the shared audio is missing: {SHARED_AUDIO} (tests need ../shared/audio beside the repository)")


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    return load_clips()


@pytest.fixture(scope="session", autouse=True)
def default_model() -> Path:
    """The CPU model the default config names (tiny.en-q8_0), made from the offline package if a checkout set up
    before it became the default lacks it (a few seconds, once)."""
    from melvin_trio.config import CpuSection
    from melvin_trio.models.catalog import install_offline_default, is_offline_default

    name = CpuSection().model
    path = MODELS_DIR / f"ggml-{name}.bin"
    if not path.is_file() and is_offline_default(name):
        install_offline_default(name, MODELS_DIR)
    return path


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


# Property tests search at random on a developer's machine (more cases over time); in CI they replay a fixed
# sequence, so a red build always means the code changed.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
