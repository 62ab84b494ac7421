"""Load a model and transcribe a second of silence, in a child process, so a bad file cannot crash the caller.

whisper.cpp aborts or segfaults on some malformed models instead of returning an error; running the first load in
a separate process turns that into a clean "does not load" answer. `python -m melvin_trio.models.probe PATH`
prints one JSON line and exits 0 when the model works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

PROBE_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    multilingual: bool | None
    message: str


def probe_model(path: Path, *, timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Whether whisper.cpp loads `path` and transcribes with it, tried in a child process."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "melvin_trio.models.probe", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(
            False, None, f"loading took longer than {timeout:g} s (a busy machine? raise limits.model_check_seconds)"
        )
    if done.returncode == 0:
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            return ProbeResult(True, bool(answer["multilingual"]), "loads")
        except (json.JSONDecodeError, IndexError, KeyError):
            pass
    if done.returncode < 0:
        return ProbeResult(False, None, f"whisper.cpp crashed loading it (signal {-done.returncode})")
    lines = [line for line in done.stdout.strip().splitlines() if line]
    return ProbeResult(False, None, lines[-1] if lines else f"exit status {done.returncode}")


def _main(argv: list[str]) -> int:
    from melvin_trio.engine.base import EngineError
    from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions
    from melvin_trio.models.ggml import ModelFileError

    try:
        engine = WhisperCppEngine(Path(argv[0]), WhisperCppOptions(n_threads=1))
        engine.transcribe(np.zeros(16000, dtype=np.float32), language="en")
    except (ModelFileError, EngineError) as exc:
        print(str(exc))
        return 1
    print(json.dumps({"ok": True, "multilingual": engine.info.multilingual}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
