"""Shared pieces of the benchmarks: the shared audio, long-form streams, machine facts."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from melvin_trio.evaluation import Clip, read_manifest

REPO = Path(__file__).resolve().parent.parent
SHARED_AUDIO = REPO.parent / "shared" / "audio"
RESULTS = REPO / "bench" / "results"


def clips(lang: str | None = None) -> list[Clip]:
    return read_manifest(SHARED_AUDIO, lang)


def time_windows(
    run: Callable[[npt.NDArray[np.float32]], object], stream: npt.NDArray[np.float32], seconds: float, repeat: int
) -> float:
    """Median seconds per call of `run` on `repeat` windows of `seconds` cut from `stream`."""
    n = int(seconds * 16000)
    times = []
    for i in range(repeat):
        start = (i * n) % max(1, stream.size - n)
        t0 = time.perf_counter()
        run(stream[start : start + n])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def long_form(selected: list[Clip], gap_seconds: float = 1.5) -> npt.NDArray[np.float32]:
    """The clips one after another with `gap_seconds` of silence between them."""
    gap = np.zeros(int(gap_seconds * 16000), dtype=np.float32)
    parts: list[npt.NDArray[np.float32]] = []
    for clip in selected:
        if parts:
            parts.append(gap)
        parts.append(clip.audio())
    return np.concatenate(parts)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
