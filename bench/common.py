"""Shared pieces of the benchmarks: the shared audio, long-form streams, machine facts."""

from __future__ import annotations

import json
import os
import platform
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from melvin_trio.audio import read_wav

REPO = Path(__file__).resolve().parent.parent
SHARED_AUDIO = REPO.parent / "shared" / "audio"
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Clip:
    path: Path
    lang: str
    text: str
    seconds: float

    def audio(self) -> npt.NDArray[np.float32]:
        return read_wav(self.path)[0]


def clips(lang: str | None = None) -> list[Clip]:
    out = []
    for line in (SHARED_AUDIO / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if lang is None or entry["lang"] == lang:
            out.append(Clip(SHARED_AUDIO / entry["file"], entry["lang"], entry["text"], float(entry["seconds"])))
    return out


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
