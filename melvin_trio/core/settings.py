"""The streaming settings: the one source of their defaults (config.yml's `streaming:` section is parsed into
`StreamSettings`; config.py validates it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamSettings"]


@dataclass(frozen=True)
class StreamSettings:
    """How streams are cut and finalized: the one source of these defaults (config.yml's `streaming:` section is
    parsed into this class)."""

    window_seconds: float = 15.0  # longest audio sent to the engine in one pass
    trim_seconds: float = 10.0  # past this much window, a short pause ends the utterance too
    min_new_audio_seconds: float = 1.0  # a pass runs once this much audio arrived since the last one began...
    first_pass_speech_seconds: float = 0.5  # ...or, for an utterance's first pass, once it holds this much speech
    # That first pass is preceded by a preview (its words only make a partial, none is confirmed) that the engine
    # runs with a reduced encoder context: about 0.2 s instead of 0.7 s for tiny.en, so the first partial comes
    # sooner; the full pass follows at once. bench/stream.py, en-long 100 s, tiny.en-q8_0, real time, medians of 2
    # rounds side by side: first partial 1.34 -> 0.76 s, finals p50 2.31 -> 2.47 s (the full pass starts one
    # preview later), p90 3.98 -> 3.93 s, WER 0.030 -> 0.036 (0.028-0.044 run to run; offline 0.012).
    preview_pass: bool = True
    # The preview runs once the utterance holds this much speech, before the full pass is due. bench/stream.py,
    # en-long 100 s, real time, medians of 2 rounds side by side, 0.5 -> 0.3: first partial 0.71 -> 0.54 s, finals
    # p50 2.28 -> 2.14 s, p90 3.69 -> 3.76 s, WER 0.012 -> 0.016 (one word; bench.replay: 0.016 -> 0.012).
    preview_speech_seconds: float = 0.3
    # Two passes agreeing on a word whisper gives less than this probability do not confirm it: it waits for a surer
    # pass or its utterance's end. bench/replay.py, en-long first 100 s, pass 0.7 s: WER 0.024 at 0, 0.012 at 0.35
    # and at 0.5 (p50 latency 1.60, 1.54 and 1.74 s of stream time).
    confirm_min_probability: float = 0.35
    # ...unless it is not its window's first word and the two passes agree, surely, on this many words after it (0:
    # never). bench/replay.py, en-long first 100 s, pass 0.7 s: see bench/README.
    confirm_unsure_after_words: int = 2
    # A word a pass heard at least settled_margin_seconds before its window's end, at least settled_min_probability
    # sure, where the previous pass had nothing more to say, needs no second pass (0: off). bench/replay.py, en-long
    # first 100 s, pass 0.8 s: p50 latency 1.59 -> 1.32 s of stream time, p90 2.68 -> 2.42 s, WER 0.016 both.
    settled_margin_seconds: float = 0.5
    settled_min_probability: float = 0.9
    # A final goes out once this many confirmed words wait (1: as soon as a word is confirmed; bench/replay.py: p50
    # 1.64 s against 1.90 s at 6, the same WER)...
    final_after_words: int = 1
    final_after_seconds: float = 2.0  # ...or the oldest of them ended this long ago (stream time)...
    # ...or one of them ends a sentence.
    # In a noisy room, beam search (this many beams; 1: never) on the pass that ends an utterance, which decides
    # every word of it no two passes confirmed: when the utterance's speech is less than noisy_snr_db over the
    # window's noise floor (core/window.py: the shared clips, clean, measure 17.5 dB and more; white noise at 7 dB
    # SNR about 9) and the detector hears a pause in it (not in babble, where beams lost words). Other passes stay
    # greedy, and so does every pass of a stream that is behind (each decides its whole window, and beam search
    # costs 1.2-1.6x: the backlog would grow). By measurement (bench/README.md, "Field audio"): in white and pink
    # noise at 5-7 dB SNR it cuts the clips streamed worse than offline + 0.05 from 6 of 27 to 2; on clean speech
    # the same beams cost words (en-long 16 -> 22 errors in 458: a beam tail after greedy words).
    utterance_beam_size: int = 5
    noisy_snr_db: float = 12.0
    prompt_chars: int = 200  # the finalized text conditioning the next pass, at most this long
    detect_after_speech_seconds: float = 3.0  # language detection waits for this much speech (or an utterance's end)
    pause_seconds: float = 0.5  # silence after speech that ends an utterance: all its words become final
    short_pause_seconds: float = 0.2  # the pause that ends an utterance already longer than trim_seconds
    vad_detector: str = "silero"  # the speech detector: "silero" (trained) or "energy" (level over the noise floor)
    vad_speech_threshold: float = 0.5  # a frame whose speech probability reaches this is speech...
    vad_pause_threshold: float = 0.35  # ...one below this is a pause; frames in between neither count nor end one
    vad_min_speech_seconds: float = 0.1  # a window needs this much speech to be transcribed ("Yes." holds 0.2 s)
    # Graceful overload: once this much received audio waits that no pass has covered (passes cost more than the
    # audio they cover: many streams, a busy CPU, a client faster than real time), the stream is behind and runs
    # only the passes that end an utterance or a full window (non-overlapping, each final at once) until it has
    # caught up. Normal lag is min_new_audio_seconds plus the queue: 1-3 s with up to four streams on one context.
    behind_seconds: float = 4.0
    # Background speech: words no second pass confirmed (an utterance's end, the last pass) whose confidence (the
    # geometric mean of their probabilities) is below background_max_confidence AND whose audio is at least
    # background_margin_db quieter than the stream's talker are someone else far from the microphone, and are not
    # sent. Heard alone, such speech makes whisper invent text (bench/vad.py, babble at 20 dB SNR: "Thank you very
    # much." at confidence 0.36, 20 dB under the talker; the talker's own unconfirmed runs there: 0.6 and up).
    # Either condition alone keeps the words. 0 confidence: off. 10 dB, not 15: a fresh tester's babble 15 dB
    # (RMS) under the talker measured 11-14 dB under it as speech (the detector's speech frames are its loudest),
    # and whisper made 5-27 words of it at confidence 0.10-0.41. Words under half that confidence need half the
    # margin (`BackgroundSpeech.is_background`).
    background_max_confidence: float = 0.5
    background_margin_db: float = 10.0
