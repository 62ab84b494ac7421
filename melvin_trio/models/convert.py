"""Convert a faster-whisper / CTranslate2 Whisper model directory into a whisper.cpp model file, with numpy alone.

CTranslate2 stores OpenAI's weights under its own names and fuses some of them; whisper.cpp wants OpenAI's names:

- self-attention `linear_0` holds q, k and v stacked by rows; cross-attention `linear_0` is q and `linear_1` holds
  k and v stacked; the key bias CTranslate2 adds when fusing is zero, and whisper.cpp has no key bias;
- `encoder/layer_norm` is the encoder's final norm (`ln_post`), `decoder/layer_norm` the decoder's (`ln`);
- `gamma`/`beta` are a norm's weight and bias.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from melvin_trio.errors import MelvinError
from melvin_trio.models.ct2 import CT2FormatError, CT2Model, read_model
from melvin_trio.models.ggml import HParams, expected_tensors, inspect_model, write_model
from melvin_trio.models.mel import mel_filterbank
from melvin_trio.models.quant import QuantType
from melvin_trio.models.vocab import read_text_tokens

WHISPER_SPEC: Final = "WhisperSpec"
N_FFT: Final = 400
_F16_FTYPE: Final = 1
# Above this a key bias is not the zero CTranslate2 fills in, and dropping it would change the model.
_KEY_BIAS_TOLERANCE: Final = 1e-3

Array = npt.NDArray[np.floating]


class ConversionError(MelvinError, ValueError):
    """The directory does not hold a Whisper model this converter understands (the message says why)."""


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    hparams: HParams
    n_tensors: int


def _layer_count(model: CT2Model, side: str) -> int:
    count = 0
    while f"{side}/layer_{count}/ffn/linear_0/weight" in model.variables:
        count += 1
    if count == 0:
        raise ConversionError(f"no {side} layers found: not a Whisper model")
    return count


def hparams_of(model: CT2Model) -> HParams:
    if model.spec_name != WHISPER_SPEC:
        raise ConversionError(f"the model is a {model.spec_name}, not a {WHISPER_SPEC}")
    embeddings = model.get("decoder/embeddings/weight")
    audio_pos = model.get("encoder/position_encodings/encodings")
    text_pos = model.get("decoder/position_encodings/encodings")
    conv1 = model.get("encoder/conv1/weight")
    return HParams(
        n_vocab=embeddings.shape[0],
        n_audio_ctx=audio_pos.shape[0],
        n_audio_state=audio_pos.shape[1],
        n_audio_head=model.scalar("encoder/num_heads"),
        n_audio_layer=_layer_count(model, "encoder"),
        n_text_ctx=text_pos.shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=model.scalar("decoder/num_heads"),
        n_text_layer=_layer_count(model, "decoder"),
        n_mels=conv1.shape[1],
        ftype=_F16_FTYPE,
    )


def _split_rows(array: npt.NDArray[np.generic], parts: int, name: str) -> list[npt.NDArray[np.generic]]:
    if array.shape[0] % parts:
        raise ConversionError(f"{name} has {array.shape[0]} rows, not divisible into {parts} projections")
    return list(np.split(array, parts, axis=0))


def _norm(model: CT2Model, src: str, dst: str) -> Iterator[tuple[str, Array]]:
    yield f"{dst}.weight", model.get(f"{src}/gamma")  # type: ignore[misc]
    yield f"{dst}.bias", model.get(f"{src}/beta")  # type: ignore[misc]


def _linear(model: CT2Model, src: str, dst: str) -> Iterator[tuple[str, Array]]:
    yield f"{dst}.weight", model.get(f"{src}/weight")  # type: ignore[misc]
    yield f"{dst}.bias", model.get(f"{src}/bias")  # type: ignore[misc]


def _qkv(
    dst: str, weights: list[npt.NDArray[np.generic]], biases: list[npt.NDArray[np.generic]], src: str
) -> Iterator[tuple[str, Array]]:
    """q, k, v from their (already split) weights and biases; checks the key bias really is zero."""
    q_w, k_w, v_w = weights
    q_b, k_b, v_b = biases
    if np.abs(k_b.astype(np.float32)).max(initial=0.0) > _KEY_BIAS_TOLERANCE:
        raise ConversionError(f"{src}: the key bias is not zero, and whisper.cpp has no key bias")
    yield f"{dst}.query.weight", q_w  # type: ignore[misc]
    yield f"{dst}.query.bias", q_b  # type: ignore[misc]
    yield f"{dst}.key.weight", k_w  # type: ignore[misc]
    yield f"{dst}.value.weight", v_w  # type: ignore[misc]
    yield f"{dst}.value.bias", v_b  # type: ignore[misc]


def _self_attention(model: CT2Model, src: str, dst: str) -> Iterator[tuple[str, Array]]:
    yield from _norm(model, f"{src}/layer_norm", f"{dst}_ln")
    fused_w = model.get(f"{src}/linear_0/weight")
    fused_b = model.get(f"{src}/linear_0/bias")
    yield from _qkv(
        dst, _split_rows(fused_w, 3, f"{src}/linear_0/weight"), _split_rows(fused_b, 3, f"{src}/linear_0/bias"), src
    )
    yield from _linear(model, f"{src}/linear_1", f"{dst}.out")


def _cross_attention(model: CT2Model, src: str, dst: str) -> Iterator[tuple[str, Array]]:
    yield from _norm(model, f"{src}/layer_norm", f"{dst}_ln")
    k_w, v_w = _split_rows(model.get(f"{src}/linear_1/weight"), 2, f"{src}/linear_1/weight")
    k_b, v_b = _split_rows(model.get(f"{src}/linear_1/bias"), 2, f"{src}/linear_1/bias")
    yield from _qkv(
        dst,
        [model.get(f"{src}/linear_0/weight"), k_w, v_w],
        [model.get(f"{src}/linear_0/bias"), k_b, v_b],
        src,
    )
    yield from _linear(model, f"{src}/linear_2", f"{dst}.out")


def _ffn(model: CT2Model, src: str, dst: str) -> Iterator[tuple[str, Array]]:
    yield from _norm(model, f"{src}/layer_norm", f"{dst}.mlp_ln")
    yield from _linear(model, f"{src}/linear_0", f"{dst}.mlp.0")
    yield from _linear(model, f"{src}/linear_1", f"{dst}.mlp.2")


def whisper_tensors(model: CT2Model, hp: HParams) -> Iterator[tuple[str, Array]]:
    """Every whisper.cpp tensor, under OpenAI's name, built from the CTranslate2 variables."""
    yield "encoder.positional_embedding", model.get("encoder/position_encodings/encodings")  # type: ignore[misc]
    for conv in ("conv1", "conv2"):
        yield f"encoder.{conv}.weight", model.get(f"encoder/{conv}/weight")  # type: ignore[misc]
        # whisper.cpp adds the bias to a [n_ctx, n_state] result, so it wants shape [n_state, 1].
        yield f"encoder.{conv}.bias", model.get(f"encoder/{conv}/bias").reshape(-1, 1)  # type: ignore[misc]
    for i in range(hp.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from _self_attention(model, f"{src}/self_attention", f"{dst}.attn")
        yield from _ffn(model, f"{src}/ffn", dst)
    yield from _norm(model, "encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", model.get("decoder/position_encodings/encodings")  # type: ignore[misc]
    yield "decoder.token_embedding.weight", model.get("decoder/embeddings/weight")  # type: ignore[misc]
    for i in range(hp.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from _self_attention(model, f"{src}/self_attention", f"{dst}.attn")
        yield from _cross_attention(model, f"{src}/attention", f"{dst}.cross_attn")
        yield from _ffn(model, f"{src}/ffn", dst)
    yield from _norm(model, "decoder/layer_norm", "decoder.ln")


def _checked(tensors: Iterator[tuple[str, Array]], hp: HParams) -> Iterator[tuple[str, Array]]:
    expected = expected_tensors(hp)
    for name, data in tensors:
        if expected.get(name) != data.shape:
            raise ConversionError(f"{name}: shape {data.shape}, whisper.cpp expects {expected.get(name)}")
        yield name, data


def _check_vocab_fits(tokens: list[bytes], hp: HParams, directory: Path) -> None:
    # English-only models have 50256 text tokens (n_vocab 51864), multilingual ones 50257 (n_vocab 51865):
    # whisper.cpp derives the special token ids from n_vocab, so the two must agree.
    expected = 50257 if hp.multilingual else 50256
    if len(tokens) != expected:
        raise ConversionError(
            f"{directory}/vocabulary.txt holds {len(tokens)} text tokens, the model (n_vocab {hp.n_vocab}) needs "
            f"{expected}"
        )


def convert_ct2(directory: Path, out_path: Path, quant: QuantType | None = None) -> ConversionResult:
    """Convert the CTranslate2 Whisper model in `directory` to a whisper.cpp file at `out_path`.

    Without `quant` the file is f16; with it, the 2-D weights are in `quant`'s blocks, byte for byte what
    whisper.cpp's quantize tool makes of the f16 file. The file appears atomically (written beside it, checked, then
    renamed), so `out_path` is never a partial model. Raises ConversionError (or CT2FormatError) with a clear message
    on any malformed input.
    """
    if not directory.is_dir():
        raise ConversionError(f"{directory}: not a directory")
    model = read_model(directory)
    hp = hparams_of(model)
    if quant is not None:
        hp = dataclasses.replace(hp, ftype=quant.header_ftype)
    tokens = read_text_tokens(directory / "vocabulary.txt")
    _check_vocab_fits(tokens, hp, directory)
    _check_config(directory)
    filters = mel_filterbank(n_fft=N_FFT, n_mels=hp.n_mels)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            count = write_model(out, hp, filters, tokens, _checked(whisper_tensors(model, hp), hp), quant)
            out.flush()
            os.fsync(out.fileno())
        inspect_model(tmp)
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ConversionResult(path=out_path, hparams=hp, n_tensors=count)


def _check_config(directory: Path) -> None:
    config = directory / "config.json"
    if not config.is_file():
        return  # Only the tokenizer's suppress lists live there; whisper.cpp has its own.
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{config}: not valid JSON: {exc}") from exc


__all__ = ["CT2FormatError", "ConversionError", "ConversionResult", "convert_ct2", "hparams_of"]
