"""Replay a long-form stream through the streaming core and the real engine, without a server or a clock.

    .venv/bin/python -m bench.replay [--set en-long] [--seconds 90] [--pass-seconds 1.0] [--verbose]

Stream time advances by `--pass-seconds` per engine call (the measured cost of a pass), so a run is repeatable and
shows what the core does with the engine's answers: WER of the finals against the reference and against
`melvin-trio transcribe`-style offline transcription, the words lost or changed, and the final latency in stream
time. This is the tool for tuning the core; bench/stream.py measures the server as a client sees it.
"""

from __future__ import annotations

import argparse
import difflib
import statistics
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import REPO
from bench.stream import SETS, build_set, normalised_words, transcribe_offline
from melvin_trio.core.driver import drive
from melvin_trio.core.stream import Event, SendFinal, SendPartial, StreamCore, StreamSettings, TranscribeRequest
from melvin_trio.core.words import Word
from melvin_trio.engine.base import GREEDY, Decoding
from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions
from melvin_trio.evaluation import count_errors, normalise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="en-long", choices=sorted(SETS))
    parser.add_argument("--seconds", type=float, default=None, help="use clips up to about this long")
    parser.add_argument("--pass-seconds", type=float, default=1.0, help="stream time one engine call takes")
    parser.add_argument("--fast-pass-seconds", type=float, default=0.4, help="the same, with a reduced audio_ctx")
    parser.add_argument("--reduce-audio-ctx", action="store_true")
    parser.add_argument("--dtw", action="store_true", help="DTW token times on every engine")
    parser.add_argument("--beam-size", type=int, default=1, help="beam search for the full passes (1: greedy)")
    parser.add_argument(
        "--complete-pass-seconds", type=float, default=None, help="stream time of a pass that ends a window"
    )
    parser.add_argument(
        "--beam-complete-only", action="store_true", help="beam search only on the passes that end a window"
    )
    parser.add_argument(
        "--reduce-partial-passes",
        action="store_true",
        help="reduced audio_ctx only for passes that do not end a window",
    )
    parser.add_argument(
        "--setting",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a StreamSettings field, e.g. final_after_words=1",
    )
    parser.add_argument("--clip", default=None, help="only the clips whose file name holds this")
    parser.add_argument("--verbose", action="store_true", help="print every pass and final")
    parser.add_argument(
        "--offline-clock",
        action="store_true",
        help="also time each final against the offline transcription's word end (aligned by text), as bench.stream",
    )
    args = parser.parse_args()

    stream = build_set(args.set, args.seconds, args.clip)
    model_file = REPO / "models" / f"ggml-{stream.model}.bin"
    engine = WhisperCppEngine(
        model_file,
        WhisperCppOptions(n_threads=2, reduce_audio_ctx=args.reduce_audio_ctx, dtw_token_timestamps=args.dtw),
    )

    def parsed(field: str, value: str) -> Any:
        default = getattr(StreamSettings(), field)
        return value.lower() in ("1", "true", "yes") if isinstance(default, bool) else type(default)(value)

    fields = {k: parsed(k, v) for k, v in (item.split("=", 1) for item in args.settings)}
    core = StreamCore(StreamSettings(**fields), stream.language)
    fast = (
        WhisperCppEngine(model_file, WhisperCppOptions(reduce_audio_ctx=True, dtw_token_timestamps=args.dtw))
        if args.reduce_partial_passes
        else engine
    )
    pcm = stream.pcm
    passes = 0
    busy = 0.0
    current: list[TranscribeRequest] = []

    class Chooser:
        """The full-context engine for passes that end a window and for previews (at the reduced context they ask
        for), the fast one for the others."""

        def transcribe(
            self, audio: npt.NDArray[np.float32], *, language: str, prompt: str = "", decoding: Decoding = GREEDY
        ) -> list[Word]:
            nonlocal passes, busy
            started = time.perf_counter()
            request = current[-1]
            chosen = engine if request.complete or request.preview else fast
            # The request's own decoding (the preview's reduced context, `utterance_beam_size`), as the server's
            # workers use it, unless --beam-size asks for beams on every full pass (or every complete one).
            if args.beam_size > 1 and not request.preview:
                beam = args.beam_size if request.complete or not args.beam_complete_only else 1
                decoding = Decoding(beam_size=beam)
            words = chosen.transcribe(audio, language=language, prompt=prompt, decoding=decoding)
            busy += time.perf_counter() - started
            passes += 1
            if args.verbose:
                end = request.end_sample / 16000
                print(f"PASS {request.offset:.2f}-{end:.2f} complete={request.complete} ...{request.prompt[-30:]!r}")
                print(
                    "   ",
                    [(w.text, round(w.start + request.offset, 2), round(w.end + request.offset, 2)) for w in words],
                )
            return words

        def detect_language(self, audio: npt.NDArray[np.float32]) -> tuple[str, float]:
            return engine.detect_language(audio)

    def cost(request: TranscribeRequest) -> float:
        if request.preview:
            return float(args.fast_pass_seconds)
        if request.complete and args.complete_pass_seconds is not None:
            return float(args.complete_pass_seconds)
        return float(args.pass_seconds if request.complete or fast is engine else args.fast_pass_seconds)

    partial_times: list[float] = []

    def show(clock: float, event: Event) -> None:
        if isinstance(event, SendPartial) and event.text.strip():
            partial_times.append(clock)
        if args.verbose and isinstance(event, SendFinal):
            print(f"  FINAL @{clock:.2f}", [(w.text, round(w.start, 2), round(w.end, 2)) for w in event.words])

    run = drive(
        core,
        pcm,
        Chooser(),
        step_seconds=0.1,
        chunk_bytes=len(pcm) + 1,
        pass_seconds_of=cost,
        on_event=show,
        on_request=current.append,
    )
    finals = list(zip(run.final_times, run.finals, strict=True))
    hypothesis = run.text
    errors = count_errors(stream.reference, hypothesis, stream.language)
    audio_seconds = len(pcm) / 32000
    latencies = [t - w.end for t, f in finals for w in f]
    print(f"set {stream.name}: {audio_seconds:.1f} s of audio, {passes} passes, engine busy {busy:.1f} s")
    print(f"WER {errors.wer:.3f} ({errors.errors}/{errors.reference_words})")
    if latencies:
        lat = sorted(latencies)
        print(f"latency (stream time) p50 {statistics.median(lat):.2f} p90 {lat[int(0.9 * (len(lat) - 1))]:.2f}")
    if args.offline_clock:
        # bench.stream's clock: a word's end is where the offline transcription puts it, not the core's own time,
        # so the replay's figures and the server's can be read side by side.
        offline = transcribe_offline(stream)
        streamed = normalised_words([(w.text, t) for t, f in finals for w in f], stream.language)
        matcher = difflib.SequenceMatcher(a=[w for w, _ in offline.words], b=[w for w, _ in streamed], autojunk=False)
        against = sorted(
            streamed[block.b + k][1] - offline.words[block.a + k][1]
            for block in matcher.get_matching_blocks()
            for k in range(block.size)
        )
        if against:
            p90 = against[int(0.9 * (len(against) - 1))]
            print(
                f"latency (stream time, offline word ends) p50 {statistics.median(against):.2f} p90 {p90:.2f}"
                f" over {len(against)} words; offline WER {offline.wer:.3f}"
            )
    # As bench/stream.py times it: from each clip's speech onset to the first partial with text after it.
    firsts = [next((t - start for t in partial_times if t >= start), None) for start in stream.speech_starts]
    timed = sorted(x for x in firsts if x is not None)
    if timed:
        print(f"first partial (stream time) median {statistics.median(timed):.2f} over {len(timed)} clips")
    ref, hyp = normalise(stream.reference, stream.language), normalise(hypothesis, stream.language)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if op != "equal":
            print(f"  {op}: {' '.join(ref[i1:i2])!r} -> {' '.join(hyp[j1:j2])!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
