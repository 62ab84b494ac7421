"""Build small CTranslate2 Whisper models in the file format, for converter tests without a real model."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

_CODES = {np.dtype("<f4"): 0, np.dtype("i1"): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 3, np.dtype("<f2"): 4}


def _string(value: str) -> bytes:
    raw = value.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(
    variables: Mapping[str, npt.NDArray[np.generic]],
    aliases: Mapping[str, str] | None = None,
    *,
    spec: str = "WhisperSpec",
    version: int = 6,
) -> bytes:
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        out.append(_string(name))
        out.append(struct.pack("<B", array.ndim))
        out.append(struct.pack(f"<{array.ndim}I", *array.shape))
        out.append(struct.pack("<B", _CODES[array.dtype]))
        data = np.ascontiguousarray(array).tobytes()
        out.append(struct.pack("<I", len(data)))
        out.append(data)
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out.append(_string(alias) + _string(target))
    return b"".join(out)


def _attention(
    rng: np.random.Generator, prefix: str, n: int, fused: int, key_bias: float
) -> dict[str, npt.NDArray[np.generic]]:
    bias = rng.standard_normal(fused * n).astype("<f2")
    # CTranslate2 fuses a zero key bias into the fused projection: rows n..2n of a qkv block, 0..n of a kv block.
    key_rows = slice(n, 2 * n) if fused == 3 else slice(0, n)
    bias[key_rows] = key_bias
    return {
        f"{prefix}/linear_0/weight": rng.standard_normal((fused * n, n)).astype("<f2"),
        f"{prefix}/linear_0/bias": bias,
    }


def tiny_whisper_variables(
    *, state: int = 8, layers: int = 1, n_vocab: int = 51864, key_bias: float = 0.0, seed: int = 0
) -> dict[str, npt.NDArray[np.generic]]:
    """A structurally complete Whisper model in CTranslate2's naming, with random weights and small dimensions."""
    rng = np.random.default_rng(seed)

    def f16(*shape: int) -> npt.NDArray[np.generic]:
        return rng.standard_normal(shape).astype("<f2")

    def norm(prefix: str) -> dict[str, npt.NDArray[np.generic]]:
        return {f"{prefix}/gamma": f16(state), f"{prefix}/beta": f16(state)}

    def linear(prefix: str, rows: int, cols: int) -> dict[str, npt.NDArray[np.generic]]:
        return {f"{prefix}/weight": f16(rows, cols), f"{prefix}/bias": f16(rows)}

    def ffn(prefix: str) -> dict[str, npt.NDArray[np.generic]]:
        return {
            **norm(f"{prefix}/layer_norm"),
            **linear(f"{prefix}/linear_0", 4 * state, state),
            **linear(f"{prefix}/linear_1", state, 4 * state),
        }

    v: dict[str, npt.NDArray[np.generic]] = {
        "decoder/activation": np.array(3, dtype="i1"),
        "decoder/embeddings/weight": f16(n_vocab, state),
        "decoder/num_heads": np.array(2, dtype="<i2"),
        "decoder/position_encodings/encodings": f16(448, state),
        **norm("decoder/layer_norm"),
        "encoder/conv1/weight": f16(state, 80, 3),
        "encoder/conv1/bias": f16(state),
        "encoder/conv2/weight": f16(state, state, 3),
        "encoder/conv2/bias": f16(state),
        "encoder/num_heads": np.array(2, dtype="<i2"),
        "encoder/position_encodings/encodings": f16(1500, state),
        **norm("encoder/layer_norm"),
    }
    for i in range(layers):
        sa = f"encoder/layer_{i}/self_attention"
        v.update(norm(f"{sa}/layer_norm") | _attention(rng, sa, state, 3, key_bias))
        v.update(linear(f"{sa}/linear_1", state, state) | ffn(f"encoder/layer_{i}/ffn"))
        sa = f"decoder/layer_{i}/self_attention"
        v.update(norm(f"{sa}/layer_norm") | _attention(rng, sa, state, 3, key_bias))
        v.update(linear(f"{sa}/linear_1", state, state) | ffn(f"decoder/layer_{i}/ffn"))
        ca = f"decoder/layer_{i}/attention"
        v.update(norm(f"{ca}/layer_norm") | linear(f"{ca}/linear_0", state, state))
        kv = _attention(rng, ca, state, 2, key_bias)
        v[f"{ca}/linear_1/weight"] = kv[f"{ca}/linear_0/weight"]
        v[f"{ca}/linear_1/bias"] = kv[f"{ca}/linear_0/bias"]
        v.update(linear(f"{ca}/linear_2", state, state))
    return v


def write_vocabulary(path: Path, n_text_tokens: int = 50256) -> None:
    """A byte-level vocabulary: the 256 single-byte tokens, then filler, then the special tokens."""
    from melvin_trio.models.vocab import _unicode_to_byte

    by_byte = {b: ch for ch, b in _unicode_to_byte().items()}
    tokens = [by_byte[b] for b in range(256)]
    tokens += [f"tok{i}" for i in range(n_text_tokens - len(tokens))]
    tokens += ["<|endoftext|>", "<|startoftranscript|>"]
    path.write_text("\n".join(tokens), encoding="utf-8")


def write_model_dir(
    directory: Path, variables: Mapping[str, npt.NDArray[np.generic]], *, parts: int = 1, n_text_tokens: int = 50256
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = ct2_bytes(variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    if parts == 1:
        (directory / "model.bin").write_bytes(data)
    else:
        step = -(-len(data) // parts)
        for i in range(parts):
            (directory / f"model.bin.part{i + 1}").write_bytes(data[i * step : (i + 1) * step])
    write_vocabulary(directory / "vocabulary.txt", n_text_tokens)
    (directory / "config.json").write_text("{}", encoding="utf-8")
