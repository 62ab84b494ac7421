"""How an engine call decodes: a plain description the stream core puts on each request (`TranscribeRequest.decoding`)
and every engine honours. Here, not in the engine package, because choosing it is the stream's decision and the core
imports no engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["BEAM_SIZES", "GREEDY", "PREVIEW", "Decoding"]


@dataclass(frozen=True, slots=True)
class Decoding:
    """How a call decodes. The default, greedy without fallback, is what live streams need (fast, steady cost);
    files are decoded for accuracy with `FILE_DECODING`.

    `beam_size` 1 is greedy; more is beam search. `temperature_inc` > 0 turns on whisper's temperature fallback:
    a window whose text is too repetitive (compression) or too unlikely (log-probability) is decoded again at
    `temperature + temperature_inc`, and so on up to 1.0. `translate` turns the speech into English.
    """

    beam_size: int = 1
    temperature: float = 0.0
    temperature_inc: float = 0.0
    translate: bool = False
    # Encode only the audio's length plus a margin (whisper.cpp's audio_ctx) instead of 30 s: for tiny.en about
    # 0.2x of the full pass on a 2 s window, the text as good, the token times stacked on the audio's end
    # (bench/README.md, "Encoder context"). For previews, whose text alone is shown.
    reduced_context: bool = False


GREEDY: Final = Decoding()
PREVIEW: Final = Decoding(reduced_context=True)  # a stream's preview pass (TranscribeRequest.preview)
# The beam sizes a caller may choose (the file API's settings, `transcribe --beam-size`, the streams'
# `utterance_beam_size`), inclusive.
BEAM_SIZES: Final = (1, 16)  # 1 is greedy; whisper.cpp's beam search allows up to 16
