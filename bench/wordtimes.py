"""Word times of streamed finals: whisper.cpp's token timestamps against its DTW token times.

    .venv/bin/python -m bench.wordtimes [--model tiny.en] [--clips 5] [--gap 3]

Clips with gaps between them are streamed through the core (reference driver) twice, once by an engine giving
token-timestamp times and once by one giving DTW times (`dtw_token_timestamps` with the model's alignment heads),
and transcribed offline both ways. For each it prints: words of zero length (and the longest run of them), words
that begin outside their clip's speech (more than 0.3 s after it ended), and the share of words whose start lies
within 0.5 s of the same word offline (aligned by text), against the offline token times and the offline DTW times.
"""

from __future__ import annotations

import argparse
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np

from bench.common import REPO, clips
from bench.vad import RATE, pcm16, silence
from melvin_trio.core.driver import drive
from melvin_trio.core.stream import StreamCore, StreamSettings
from melvin_trio.core.words import Word, word_key
from melvin_trio.engine.base import GREEDY
from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions
from melvin_trio.filetranscribe import transcribe_file


def within(words: list[Word], reference: list[Word], tolerance: float = 0.5) -> float:
    a = [word_key(w.text) for w in words]
    b = [word_key(w.text) for w in reference]
    close = 0
    for block in SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            close += abs(words[block.a + k].start - reference[block.b + k].start) <= tolerance
    return close / max(len(words), 1)


def describe(name: str, words: list[Word], spans: list[tuple[float, float]], refs: dict[str, list[Word]]) -> None:
    zero = [w.end - w.start < 0.02 for w in words]
    run = longest = 0
    for z in zero:
        run = run + 1 if z else 0
        longest = max(longest, run)
    outside = sum(not any(b - 0.5 <= w.start <= e + 0.3 for b, e in spans) for w in words)
    shares = "  ".join(f"within 0.5 s of {k}: {within(words, v):.2f}" for k, v in refs.items())
    print(f"{name:<22} {len(words):>3} words, {sum(zero):>2} zero-length (longest run {longest}), ", end="")
    print(f"{outside} outside their speech;  {shares}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--gap", type=float, default=3.0)
    parser.add_argument("--pass-seconds", type=float, default=1.0)
    args = parser.parse_args()
    selected = [c for c in clips("en") if c.path.name.startswith("librispeech")][: args.clips]
    parts, spans, t = [], [], 0.0
    for clip in selected:
        audio = clip.audio()
        parts += [audio, silence(args.gap)]
        spans.append((t, t + audio.size / RATE))
        t += audio.size / RATE + args.gap
    stream = np.concatenate(parts)
    print(f"{len(selected)} clips, {t:.1f} s, gaps of {args.gap:.0f} s")
    path = Path(REPO / "models" / f"ggml-{args.model}.bin")
    engines = {
        "token times": WhisperCppEngine(path, WhisperCppOptions(n_threads=2)),
        "DTW": WhisperCppEngine(path, WhisperCppOptions(n_threads=2, dtw_token_timestamps=True)),
    }
    refs = {f"offline {name}": engine.transcribe(stream, language="en") for name, engine in engines.items()}
    for name, words in refs.items():
        describe(name, words, spans, {k: v for k, v in refs.items() if k != name})
    # What `melvin-trio transcribe` and file jobs give: speech windows, words retimed into them.
    file_words = transcribe_file(engines["token times"], stream, language="en", decoding=GREEDY)
    describe("file (transcribe_file)", file_words, spans, refs)
    for name, engine in engines.items():
        run = drive(StreamCore(StreamSettings(), "en"), pcm16(stream), engine, pass_seconds=args.pass_seconds)
        describe(f"streamed, {name}", run.words, spans, refs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
