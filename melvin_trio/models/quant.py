"""ggml's block quantization formats (q8_0, q5_0, q5_1), written and read with numpy, byte for byte as ggml does.

whisper.cpp's `quantize` tool (examples/quantize/quantize.cpp, examples/common-ggml.cpp `ggml_common_quantize_0`)
reads an f16 model and quantizes every 2-D tensor except the conv biases and both positional embeddings, each row
with ggml's reference quantizer (ggml/src/ggml-quants.c `quantize_row_*_ref`; no importance matrix); everything
else is copied as it is. The header's ftype becomes `GGML_QNT_VERSION * 1000 + ftype` (2007 for q8_0), and each
tensor keeps its own type in its header.

Blocks of 32 values, little-endian (ggml/src/ggml-common.h):

    q8_0 (34 bytes): f16 d, 32 x i8 q;                       x = q * d,        d = amax / 127
    q5_0 (22 bytes): f16 d, u32 qh, 16 x u8 qs;              x = (q - 16) * d, d = max / -16 (max: the value of
                                                             largest magnitude, sign kept)
    q5_1 (24 bytes): f16 d, f16 m, u32 qh, 16 x u8 qs;       x = q * d + m,    d = (max - min) / 31, m = min

In q5_*, value j of the block (0-31) has its low 4 bits in the low nibble of qs[j] (j < 16) or the high nibble of
qs[j - 16], and its fifth bit at bit j of qh. The arithmetic below is float32 step for step as in the C code
(the scale is rounded to f16 only when stored), with C's rounding (`roundf` away from zero, casts toward zero),
so the bytes equal ggml's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

QK: Final = 32
GGML_QNT_VERSION: Final = 2
GGML_QNT_VERSION_FACTOR: Final = 1000

F32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class QuantType:
    name: str
    ggml_type: int  # enum ggml_type: the tensor's type in its header
    ftype: int  # enum ggml_ftype: the file's type in the hyperparameters (before the version factor)
    block_bytes: int

    @property
    def header_ftype(self) -> int:
        return GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR + self.ftype


Q8_0: Final = QuantType("q8_0", ggml_type=8, ftype=7, block_bytes=34)
Q5_0: Final = QuantType("q5_0", ggml_type=6, ftype=8, block_bytes=22)
Q5_1: Final = QuantType("q5_1", ggml_type=7, ftype=9, block_bytes=24)
QUANT_TYPES: Final[Mapping[str, QuantType]] = {q.name: q for q in (Q8_0, Q5_0, Q5_1)}

_Q8_0_BLOCK: Final = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])
_Q5_0_BLOCK: Final = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", (QK // 2,))])
_Q5_1_BLOCK: Final = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", (QK // 2,))])
_BIT_WEIGHTS: Final = np.left_shift(np.uint32(1), np.arange(QK, dtype=np.uint32))


def _blocks(values: npt.ArrayLike) -> F32Array:
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    if x.size % QK:
        raise ValueError(f"{x.size} values do not fill blocks of {QK}")
    return x.reshape(-1, QK)


def _inverse(d: F32Array) -> F32Array:
    """`d ? 1.0f/d : 0.0f`, per block."""
    out = np.zeros_like(d)
    np.divide(np.float32(1.0), d, out=out, where=d != 0)
    return out


def _round_half_away(v: F32Array) -> F32Array:
    """C's roundf, exactly (numpy rounds halves to even; adding 0.5 first can round up in float32)."""
    whole = np.trunc(v)
    return whole + np.where(np.abs(v - whole) >= np.float32(0.5), np.sign(v), np.float32(0.0)).astype(np.float32)


def _pack_5bit(q: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]:
    half = QK // 2
    qs = (q[:, :half] & 0x0F) | ((q[:, half:] & 0x0F) << 4)
    qh = (((q >> 4) & 1).astype(np.uint32) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint32)
    return qh, qs.astype(np.uint8)


def _unpack_5bit(qh: npt.NDArray[np.uint32], qs: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    low = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)
    high = ((qh[:, None] >> np.arange(QK, dtype=np.uint32)) & 1).astype(np.int32)
    return low | (high << 4)


def quantize_q8_0(values: npt.ArrayLike) -> bytes:
    """ggml's `quantize_row_q8_0_ref` over all values (their count a multiple of 32)."""
    x = _blocks(values)
    d = np.abs(x).max(axis=1) / np.float32(127)
    q = _round_half_away(x * _inverse(d)[:, None])
    out = np.empty(len(x), dtype=_Q8_0_BLOCK)
    out["d"] = d.astype(np.float16)
    out["qs"] = q.astype(np.int8)
    return out.tobytes()


def quantize_q5_0(values: npt.ArrayLike) -> bytes:
    """ggml's `quantize_row_q5_0_ref`: the first value of the largest magnitude sets the scale, sign included."""
    x = _blocks(values)
    rows = np.arange(len(x))
    extreme = x[rows, np.abs(x).argmax(axis=1)]
    d = extreme / np.float32(-16)
    scaled = x * _inverse(d)[:, None] + np.float32(16.5)
    q = np.minimum(np.trunc(scaled), np.float32(31)).astype(np.uint8)
    qh, qs = _pack_5bit(q)
    out = np.empty(len(x), dtype=_Q5_0_BLOCK)
    out["d"] = d.astype(np.float16)
    out["qh"] = qh
    out["qs"] = qs
    return out.tobytes()


def quantize_q5_1(values: npt.ArrayLike) -> bytes:
    """ggml's `quantize_row_q5_1_ref`: 32 steps from the block's minimum to its maximum."""
    x = _blocks(values)
    low = x.min(axis=1)
    d = (x.max(axis=1) - low) / np.float32(31)
    scaled = (x - low[:, None]) * _inverse(d)[:, None] + np.float32(0.5)
    q = np.trunc(scaled).astype(np.uint8)
    qh, qs = _pack_5bit(q)
    out = np.empty(len(x), dtype=_Q5_1_BLOCK)
    out["d"] = d.astype(np.float16)
    out["m"] = low.astype(np.float16)
    out["qh"] = qh
    out["qs"] = qs
    return out.tobytes()


def dequantize(kind: QuantType, data: bytes) -> F32Array:
    """The float32 values a block-quantized buffer stands for (ggml's `dequantize_row_*`)."""
    if kind is Q8_0:
        b8 = np.frombuffer(data, dtype=_Q8_0_BLOCK)
        return (b8["qs"].astype(np.float32) * b8["d"].astype(np.float32)[:, None]).reshape(-1)
    if kind is Q5_0:
        b5 = np.frombuffer(data, dtype=_Q5_0_BLOCK)
        q = _unpack_5bit(b5["qh"], b5["qs"]) - 16
        return (q.astype(np.float32) * b5["d"].astype(np.float32)[:, None]).reshape(-1)
    if kind is Q5_1:
        b51 = np.frombuffer(data, dtype=_Q5_1_BLOCK)
        q = _unpack_5bit(b51["qh"], b51["qs"])
        scaled = q.astype(np.float32) * b51["d"].astype(np.float32)[:, None]
        return (scaled + b51["m"].astype(np.float32)[:, None]).reshape(-1)
    raise ValueError(f"unknown quantization {kind.name}")


_QUANTIZERS: Final = {"q8_0": quantize_q8_0, "q5_0": quantize_q5_0, "q5_1": quantize_q5_1}


def quantize(kind: QuantType, values: npt.ArrayLike) -> bytes:
    """`values` (row-major, rows a multiple of 32 long) in `kind`'s blocks, as ggml's quantize tool writes them."""
    return _QUANTIZERS[kind.name](values)


def quant_type(name: str) -> QuantType:
    """The quantization called `name` (q8_0, q5_0, q5_1); raises ValueError naming the known ones."""
    try:
        return QUANT_TYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown quantization {name!r} (known: {', '.join(QUANT_TYPES)})") from None
