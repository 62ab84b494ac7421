"""The whisper.cpp model file format ("ggml", magic 0x67676d6c): writing it, and checking a file before use.

Layout, little-endian, as whisper.cpp's `whisper_model_load` reads it:

    i32 magic, 11 x i32 hparams (n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
    n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype),
    i32 n_mel, i32 n_fft, f32 filters[n_mel * n_fft],
    i32 n_tokens, then per token: i32 length, bytes,
    then tensors until the end of the file: i32 n_dims, i32 name length, i32 ggml type,
    i32 ne[n_dims] (innermost first, i.e. numpy's shape reversed), name, raw data.

whisper.cpp itself does not fail cleanly on a bad file (garbage "loads" and crashes later; a truncated file only
logs a warning), so `inspect_model` walks the whole structure in Python and checks every tensor's name, shape, type
and size against the hyperparameters: a file that passes is one whisper.cpp will load completely.

The ftype in the header (modulo 1000; quantized files add `GGML_QNT_VERSION * 1000`) sets the type whisper.cpp gives
its 2-D weights (f16, or a block-quantized type such as q8_0); conv kernels are f16 (f32 in an all-f32 file), and
1-D tensors, conv biases and positional embeddings f32. whisper.cpp reads each tensor as the type it expects and
only compares sizes, so a tensor stored in another type is refused here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from melvin_trio.errors import MelvinError
from melvin_trio.models.quant import GGML_QNT_VERSION_FACTOR, QuantType, quantize

MAGIC: Final = 0x67676D6C
GGML_F32: Final = 0
GGML_F16: Final = 1
# ggml type -> (elements per block, bytes per block), for the types whisper.cpp model files use.
_TYPE_BLOCKS: Final[Mapping[int, tuple[int, int]]] = {
    0: (1, 4),  # f32
    1: (1, 2),  # f16
    2: (32, 18),  # q4_0
    3: (32, 20),  # q4_1
    6: (32, 22),  # q5_0
    7: (32, 24),  # q5_1
    8: (32, 34),  # q8_0
    10: (256, 84),  # q2_K
    11: (256, 110),  # q3_K
    12: (256, 144),  # q4_K
    13: (256, 176),  # q5_K
    14: (256, 210),  # q6_K
}
_TYPE_NAMES: Final[Mapping[int, str]] = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    6: "q5_0",
    7: "q5_1",
    8: "q8_0",
    10: "q2_K",
    11: "q3_K",
    12: "q4_K",
    13: "q5_K",
    14: "q6_K",
}
# enum ggml_ftype (the header's ftype modulo 1000) -> the ggml type of the 2-D weights (ggml_ftype_to_ggml_type).
_FTYPE_WEIGHT_TYPE: Final[Mapping[int, int]] = {
    0: 0,
    1: 1,
    2: 2,
    3: 3,
    4: 3,  # MOSTLY_Q4_1_SOME_F16
    7: 8,
    8: 6,
    9: 7,
    10: 10,
    11: 11,
    12: 12,
    13: 13,
    14: 14,
}
_HPARAM_NAMES: Final = (
    "n_vocab",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
    "n_mels",
    "ftype",
)
# Largest values in any released Whisper model, with room; beyond them a header is garbage, not a model.
_HPARAM_LIMITS: Final = {
    "n_vocab": 60_000,
    "n_audio_ctx": 4096,
    "n_audio_state": 4096,
    "n_audio_head": 64,
    "n_audio_layer": 64,
    "n_text_ctx": 4096,
    "n_text_state": 4096,
    "n_text_head": 64,
    "n_text_layer": 64,
    "n_mels": 256,
}
MULTILINGUAL_MIN_VOCAB: Final = 51865
_SIZE_NAMES: Final = {4: "tiny", 6: "base", 12: "small", 24: "medium", 32: "large"}


class ModelFileError(MelvinError, ValueError):
    """A whisper.cpp model file is missing, truncated or malformed; the message says which and where."""


@dataclass(frozen=True)
class HParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= MULTILINGUAL_MIN_VOCAB

    @property
    def weight_type(self) -> int | None:
        """The ggml type of the 2-D weights this file's ftype stands for; None for an ftype whisper.cpp refuses."""
        return _FTYPE_WEIGHT_TYPE.get(self.ftype % GGML_QNT_VERSION_FACTOR)

    @property
    def weight_type_name(self) -> str:
        weight = self.weight_type
        return "?" if weight is None else _TYPE_NAMES[weight]

    @property
    def size_name(self) -> str:
        return _SIZE_NAMES.get(self.n_audio_layer, f"{self.n_audio_layer}-layer")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    hparams: HParams
    n_tensors: int
    n_tokens: int
    file_size: int

    @property
    def description(self) -> str:
        lang = "multilingual" if self.hparams.multilingual else "English-only"
        weights = self.hparams.weight_type_name
        return f"{self.hparams.size_name}, {lang}" + ("" if weights == "f16" else f", {weights}")


def expected_tensors(hp: HParams) -> dict[str, tuple[int, ...]]:
    """Every tensor whisper.cpp requires for these hyperparameters, with its numpy-order shape."""
    a, t = hp.n_audio_state, hp.n_text_state
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.positional_embedding": (hp.n_audio_ctx, a),
        "encoder.conv1.weight": (a, hp.n_mels, 3),
        "encoder.conv1.bias": (a, 1),
        "encoder.conv2.weight": (a, a, 3),
        "encoder.conv2.bias": (a, 1),
        "encoder.ln_post.weight": (a,),
        "encoder.ln_post.bias": (a,),
        "decoder.positional_embedding": (hp.n_text_ctx, t),
        "decoder.token_embedding.weight": (hp.n_vocab, t),
        "decoder.ln.weight": (t,),
        "decoder.ln.bias": (t,),
    }
    for i in range(hp.n_audio_layer):
        shapes.update(_block_shapes(f"encoder.blocks.{i}", a, cross=False))
    for i in range(hp.n_text_layer):
        shapes.update(_block_shapes(f"decoder.blocks.{i}", t, cross=True))
    return shapes


def _attention_shapes(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}_ln.weight": (n,),
        f"{prefix}_ln.bias": (n,),
        f"{prefix}.query.weight": (n, n),
        f"{prefix}.query.bias": (n,),
        f"{prefix}.key.weight": (n, n),
        f"{prefix}.value.weight": (n, n),
        f"{prefix}.value.bias": (n,),
        f"{prefix}.out.weight": (n, n),
        f"{prefix}.out.bias": (n,),
    }


def _block_shapes(prefix: str, n: int, *, cross: bool) -> dict[str, tuple[int, ...]]:
    shapes = _attention_shapes(f"{prefix}.attn", n)
    if cross:
        shapes.update(_attention_shapes(f"{prefix}.cross_attn", n))
    shapes.update(
        {
            f"{prefix}.mlp_ln.weight": (n,),
            f"{prefix}.mlp_ln.bias": (n,),
            f"{prefix}.mlp.0.weight": (4 * n, n),
            f"{prefix}.mlp.0.bias": (4 * n,),
            f"{prefix}.mlp.2.weight": (n, 4 * n),
            f"{prefix}.mlp.2.bias": (n,),
        }
    )
    return shapes


def stays_f32(name: str, ndim: int) -> bool:
    """Whether whisper.cpp wants this tensor in f32 in an f16 model (1-D tensors, conv biases, positions)."""
    return ndim < 2 or name.endswith(("conv1.bias", "conv2.bias", "positional_embedding"))


def tensor_type(name: str, ndim: int, weight_type: int) -> int:
    """The ggml type whisper.cpp expects for a tensor, given the file's 2-D weight type.

    As whisper.cpp's quantize tool decides: 2-D tensors other than conv biases and positional embeddings take the
    weight type; conv kernels (3-D) stay f16 (f32 in an all-f32 file); the rest is f32.
    """
    if stays_f32(name, ndim):
        return GGML_F32
    if ndim == 2:
        return weight_type
    return GGML_F32 if weight_type == GGML_F32 else GGML_F16


def write_model(
    out: BinaryIO,
    hp: HParams,
    filters: npt.NDArray[np.float32],
    tokens: Iterable[bytes],
    tensors: Iterable[tuple[str, npt.NDArray[np.floating]]],
    quant: QuantType | None = None,
) -> int:
    """Write a whisper.cpp model; returns the tensor count.

    Without `quant`: an f16 model, 2-D and 3-D tensors in f16, the rest in f32. With it: the same model as
    whisper.cpp's quantize tool makes of that f16 file (the 2-D weights' f16 values in `quant`'s blocks, the header's
    ftype `quant.header_ftype`); `hp.ftype` is ignored. `tensors` may be a generator, so that a large model is
    converted one tensor at a time.
    """
    ftype = quant.header_ftype if quant else GGML_F16
    weight_type = quant.ggml_type if quant else GGML_F16
    out.write(struct.pack("<i", MAGIC))
    hparams = {name: getattr(hp, name) for name in _HPARAM_NAMES} | {"ftype": ftype}
    out.write(struct.pack("<11i", *hparams.values()))
    out.write(struct.pack("<ii", *filters.shape))
    out.write(np.ascontiguousarray(filters, dtype="<f4").tobytes())
    token_list = list(tokens)
    out.write(struct.pack("<i", len(token_list)))
    for token in token_list:
        out.write(struct.pack("<i", len(token)))
        out.write(token)
    count = 0
    for name, data in tensors:
        ggml_type = tensor_type(name, data.ndim, weight_type)
        array = np.ascontiguousarray(data, dtype="<f4" if ggml_type == GGML_F32 else "<f2")
        encoded = name.encode("utf-8")
        out.write(struct.pack("<iii", array.ndim, len(encoded), ggml_type))
        out.write(struct.pack(f"<{array.ndim}i", *reversed(array.shape)))
        out.write(encoded)
        if quant is not None and ggml_type == quant.ggml_type:
            # From the f16 values, as the quantize tool reads them from an f16 file.
            out.write(quantize(quant, array.astype(np.float32)))
        else:
            out.write(array.tobytes())
        count += 1
    return count


def _tensor_bytes(name: str, ggml_type: int, ne: tuple[int, ...]) -> int:
    block = _TYPE_BLOCKS.get(ggml_type)
    if block is None:
        raise ModelFileError(f"tensor {name!r} has unknown ggml type {ggml_type}")
    per_block, block_bytes = block
    if ne[0] % per_block:
        raise ModelFileError(f"tensor {name!r}: row of {ne[0]} does not fit blocks of {per_block}")
    return math.prod(ne) // per_block * block_bytes


class _Reader:
    def __init__(self, stream: BinaryIO, path: Path, size: int) -> None:
        self.stream, self.path, self.size = stream, path, size

    def take(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise ModelFileError(
                f"{self.path}: truncated: the file ends while reading {what} "
                f"(at byte {self.stream.tell()} of {self.size})"
            )
        return data

    def ints(self, n: int, what: str) -> tuple[int, ...]:
        return struct.unpack(f"<{n}i", self.take(4 * n, what))

    def skip(self, n: int, what: str) -> None:
        if self.stream.tell() + n > self.size:
            raise ModelFileError(
                f"{self.path}: truncated: {what} needs {n} bytes at byte {self.stream.tell()}, the file has {self.size}"
            )
        self.stream.seek(n, 1)


def inspect_model(path: Path) -> ModelInfo:
    """Walk the whole of a whisper.cpp model file and check it; raises ModelFileError naming the first fault.

    Reads only headers (tensor data is skipped), so it costs milliseconds even for large files.
    """
    try:
        size = path.stat().st_size
        stream = path.open("rb")
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot open: {exc.strerror}") from exc
    with stream:
        return _inspect(_Reader(stream, path, size), path, size)


def _inspect(r: _Reader, path: Path, size: int) -> ModelInfo:
    (magic,) = r.ints(1, "magic")
    if magic != MAGIC:
        raise ModelFileError(f"{path}: not a whisper.cpp model (bad magic 0x{magic & 0xFFFFFFFF:08x})")
    hp = HParams(*r.ints(11, "hyperparameters"))
    for name, limit in _HPARAM_LIMITS.items():
        value = getattr(hp, name)
        if not 0 < value <= limit:
            raise ModelFileError(f"{path}: corrupt header: {name} = {value}")
    n_mel, n_fft = r.ints(2, "mel filter shape")
    if not (0 < n_mel <= 256 and 0 < n_fft <= 4096):
        raise ModelFileError(f"{path}: corrupt mel filter shape {n_mel} x {n_fft}")
    r.skip(4 * n_mel * n_fft, "mel filters")
    (n_tokens,) = r.ints(1, "vocabulary size")
    if not 0 < n_tokens <= hp.n_vocab:
        raise ModelFileError(f"{path}: corrupt vocabulary size {n_tokens} (n_vocab {hp.n_vocab})")
    for index in range(n_tokens):
        (length,) = r.ints(1, f"length of token {index}")
        if not 0 <= length <= 256:
            raise ModelFileError(f"{path}: corrupt vocabulary: token {index} has length {length}")
        r.skip(length, f"token {index}")
    weight_type = hp.weight_type
    if weight_type is None:
        raise ModelFileError(f"{path}: corrupt header: ftype = {hp.ftype} is no type whisper.cpp knows")
    expected = expected_tensors(hp)
    seen: set[str] = set()
    while r.stream.tell() < size:
        n_dims, name_len, ggml_type = r.ints(3, f"header of tensor {len(seen)}")
        if not (1 <= n_dims <= 4 and 0 < name_len <= 256):
            raise ModelFileError(f"{path}: corrupt header of tensor {len(seen)} at byte {r.stream.tell() - 12}")
        ne = r.ints(n_dims, f"dims of tensor {len(seen)}")
        raw_name = r.take(name_len, f"name of tensor {len(seen)}")
        name = raw_name.decode("utf-8", errors="replace")
        shape = expected.get(name)
        if shape is None:
            raise ModelFileError(f"{path}: unknown tensor {name!r}")
        if name in seen:
            raise ModelFileError(f"{path}: tensor {name!r} appears twice")
        if tuple(reversed(ne)) != shape:
            raise ModelFileError(f"{path}: tensor {name!r} has shape {tuple(reversed(ne))}, expected {shape}")
        want = tensor_type(name, n_dims, weight_type)
        if ggml_type != want:
            raise ModelFileError(
                f"{path}: tensor {name!r} is {_TYPE_NAMES.get(ggml_type, f'type {ggml_type}')}, whisper.cpp expects "
                f"{_TYPE_NAMES[want]} in a {hp.weight_type_name} model"
            )
        r.skip(_tensor_bytes(name, ggml_type, ne), f"data of tensor {name!r}")
        seen.add(name)
    missing = [name for name in expected if name not in seen]
    if missing:
        raise ModelFileError(
            f"{path}: truncated or incomplete: {len(missing)} of {len(expected)} tensors missing "
            f"(first: {missing[0]!r})"
        )
    return ModelInfo(path=path, hparams=hp, n_tensors=len(seen), n_tokens=n_tokens, file_size=size)
