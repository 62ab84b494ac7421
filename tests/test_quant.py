"""ggml's block formats written with numpy (q8_0, q5_0, q5_1), and quantized models from the converter."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from melvin_trio.engine.whispercpp import WhisperCppEngine, WhisperCppOptions
from melvin_trio.evaluation import Clip, count_errors
from melvin_trio.models.catalog import install_offline_default, split_variant, variant_name
from melvin_trio.models.convert import convert_ct2
from melvin_trio.models.ggml import GGML_F16, GGML_F32, ModelFileError, inspect_model
from melvin_trio.models.probe import probe_model
from melvin_trio.models.quant import Q5_0, Q5_1, Q8_0, QUANT_TYPES, QuantType, dequantize, quant_type, quantize
from tests.ct2_builder import tiny_whisper_variables, write_model_dir
from tests.test_convert import read_ggml_tensors, read_raw_tensors

F32 = np.float32

# --- ggml's reference quantizers, written out value by value (ggml/src/ggml-quants.c, quantize_row_*_ref) ---------


def _c_roundf(v: np.float32) -> int:
    """C's roundf: halves away from zero."""
    whole = int(v)  # toward zero
    return whole + (1 if v - whole >= 0.5 else -1 if whole - v >= 0.5 else 0)


def _f16_bytes(v: np.float32) -> bytes:
    return np.array([v], dtype="<f2").tobytes()


def _pack5(q: list[int]) -> bytes:
    qh = 0
    qs = bytearray(16)
    for j in range(16):
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4)
        qh |= ((q[j] & 0x10) >> 4) << j
        qh |= ((q[j + 16] & 0x10) >> 4) << (j + 16)
    return struct.pack("<I", qh) + bytes(qs)


def reference_q8_0(x: npt.NDArray[np.float32]) -> bytes:
    out = b""
    for block in x.reshape(-1, 32):
        amax = F32(0.0)
        for v in block:
            amax = max(amax, F32(abs(v)))
        d = F32(amax / F32(127))
        inv = F32(F32(1.0) / d) if d else F32(0.0)
        out += _f16_bytes(d) + bytes(_c_roundf(F32(v * inv)) & 0xFF for v in block)
    return out


def reference_q5_0(x: npt.NDArray[np.float32]) -> bytes:
    out = b""
    for block in x.reshape(-1, 32):
        amax, vmax = F32(0.0), F32(0.0)
        for v in block:
            if amax < abs(v):
                amax, vmax = F32(abs(v)), v
        d = F32(vmax / F32(-16))
        inv = F32(F32(1.0) / d) if d else F32(0.0)
        q = [min(31, int(F32(F32(v * inv) + F32(16.5)))) for v in block]
        out += _f16_bytes(d) + _pack5(q)
    return out


def reference_q5_1(x: npt.NDArray[np.float32]) -> bytes:
    out = b""
    for block in x.reshape(-1, 32):
        vmin, vmax = F32(np.inf), F32(-np.inf)
        for v in block:
            vmin, vmax = min(vmin, v), max(vmax, v)
        d = F32(F32(vmax - vmin) / F32(31))
        inv = F32(F32(1.0) / d) if d else F32(0.0)
        q = [int(F32(F32(F32(v - vmin) * inv) + F32(0.5))) for v in block]
        out += _f16_bytes(d) + _f16_bytes(vmin) + _pack5(q)
    return out


REFERENCES: dict[str, Callable[[npt.NDArray[np.float32]], bytes]] = {
    "q8_0": reference_q8_0,
    "q5_0": reference_q5_0,
    "q5_1": reference_q5_1,
}


def awkward_blocks(seed: int = 0, scales: tuple[float, ...] = (1e-4, 0.02, 0.3, 3.0)) -> npt.NDArray[np.float32]:
    """Random f16 weights at several scales, and blocks that hit the edge cases of the C code."""
    rng = np.random.default_rng(seed)
    parts: list[npt.NDArray[np.floating]] = [rng.standard_normal(32 * 6) * scale for scale in scales]
    parts += [
        np.zeros(32),  # d = 0: every quant 0 (q5_0: 16)
        np.full(32, 0.5),  # all equal: q5_1 has d = 0
        np.linspace(-1, 1, 32),  # -1 and 1 tie for the largest magnitude: q5_0 takes the first
        np.linspace(1, -1, 32),
        np.arange(32) - 15.5,  # exact halves after scaling
        np.r_[-7.0, np.full(31, 3.5)],  # the extreme is negative
    ]
    return np.concatenate(parts).astype(np.float16).astype(np.float32)


# --- known bytes, worked out by hand -----------------------------------------------------------------------------


def test_q8_0_bytes_of_a_hand_worked_block() -> None:
    x = np.zeros(32, dtype=np.float32)
    x[:4] = [127.0, -127.0, 63.5, -0.5]  # amax 127: d = 1.0 (f16 0x3c00); halves round away from zero
    assert quantize(Q8_0, x) == bytes([0x00, 0x3C, 127, 256 - 127, 64, 255]) + bytes(28)


def test_q5_0_bytes_of_a_hand_worked_block() -> None:
    x = np.arange(32, dtype=np.float32) - 16  # -16 .. 15: the extreme is -16, so d = -16 / -16 = 1
    # each value v becomes trunc(v + 16.5) = v + 16, i.e. 0 .. 31: low nibbles j | (j << 4), fifth bit set for 16..31
    expected = bytes([0x00, 0x3C]) + struct.pack("<I", 0xFFFF0000) + bytes(j | (j << 4) for j in range(16))
    assert quantize(Q5_0, x) == expected


def test_q5_1_bytes_of_a_hand_worked_block() -> None:
    x = np.arange(32, dtype=np.float32) * 2 + 3  # min 3, max 65: d = 62 / 31 = 2, m = 3 (f16 0x4200)
    expected = bytes([0x00, 0x40, 0x00, 0x42]) + struct.pack("<I", 0xFFFF0000) + bytes(j | (j << 4) for j in range(16))
    assert quantize(Q5_1, x) == expected


# --- against the reference algorithm, and against ggml itself ----------------------------------------------------


@pytest.mark.parametrize("name", list(QUANT_TYPES))
def test_quantize_matches_ggmls_reference_algorithm(name: str) -> None:
    x = awkward_blocks()
    assert quantize(QUANT_TYPES[name], x) == REFERENCES[name](x)


@pytest.mark.parametrize("name", list(QUANT_TYPES))
def test_dequantize_round_trip_is_within_half_a_step(name: str) -> None:
    kind = QUANT_TYPES[name]
    x = awkward_blocks(seed=1, scales=(0.02, 0.3, 3.0))  # at 1e-4 the scale is an f16 subnormal, far coarser
    data = quantize(kind, x)
    assert len(data) == x.size // 32 * kind.block_bytes
    back = dequantize(kind, data)
    blocks = x.reshape(-1, 32)
    spread = blocks.max(axis=1) - blocks.min(axis=1) if kind is Q5_1 else np.abs(blocks).max(axis=1)
    steps = {"q8_0": 127, "q5_0": 16, "q5_1": 31}[name]
    step = spread / steps
    # half a step, plus the rounding of the scale (over up to `steps` steps) and the minimum to f16 (2^-11 relative)
    offset = np.abs(blocks.min(axis=1)) if kind is Q5_1 else 0.0
    # q5_0 keeps 16 steps on the extreme's side and 15 on the other, so the far end of that side is one step off
    half = 1.0 if kind is Q5_0 else 0.5
    bound = step * (half + steps * 2.0**-11) + offset * 2.0**-11 + 1e-7
    assert np.all(np.abs(back - x).reshape(-1, 32) <= bound[:, None])


def _ggml_base() -> ctypes.CDLL:
    import _pywhispercpp

    here = Path(_pywhispercpp.__file__).parent
    for path in sorted(here.glob("libggml-base*.so*")) + sorted(here.glob("pywhispercpp.libs/libggml-base*.so*")):
        try:
            return ctypes.CDLL(str(path))
        except OSError:
            continue
    pytest.skip("this pywhispercpp build ships no separate libggml-base to compare with")


@pytest.mark.parametrize("name", list(QUANT_TYPES))
def test_quantize_and_dequantize_equal_the_installed_ggml(name: str) -> None:
    lib = _ggml_base()
    kind = QUANT_TYPES[name]
    x = np.ascontiguousarray(awkward_blocks(seed=2))
    theirs = ctypes.create_string_buffer(x.size // 32 * kind.block_bytes)
    getattr(lib, f"quantize_row_{name}_ref")(x.ctypes.data_as(ctypes.c_void_p), theirs, ctypes.c_int64(x.size))
    assert quantize(kind, x) == theirs.raw
    values = np.zeros(x.size, dtype=np.float32)
    getattr(lib, f"dequantize_row_{name}")(theirs, values.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    np.testing.assert_array_equal(dequantize(kind, theirs.raw), values)


def test_quantization_names() -> None:
    assert quant_type("Q8_0") is Q8_0
    with pytest.raises(ValueError, match="known: q8_0, q5_0, q5_1"):
        quant_type("q4_0")
    assert variant_name("tiny.en", Q5_1) == "tiny.en-q5_1"
    assert split_variant("tiny.en-q5_1") == ("tiny.en", Q5_1)
    assert split_variant("large-v3") == ("large-v3", None)
    assert (Q8_0.header_ftype, Q5_0.header_ftype, Q5_1.header_ftype) == (2007, 2008, 2009)


# --- the converter -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Q8_0, Q5_0, Q5_1], ids=lambda q: q.name)
def test_a_quantized_conversion_is_the_f16_model_quantized_as_whisper_cpp_does(tmp_path: Path, kind: QuantType) -> None:
    write_model_dir(tmp_path / "ct2", tiny_whisper_variables(state=32, layers=1))
    f16 = convert_ct2(tmp_path / "ct2", tmp_path / "ggml-f16.bin")
    result = convert_ct2(tmp_path / "ct2", tmp_path / "ggml-q.bin", kind)

    info = inspect_model(result.path)
    assert info.n_tensors == f16.n_tensors == result.n_tensors
    assert info.hparams.ftype == result.hparams.ftype == kind.header_ftype
    assert info.description == f"1-layer, English-only, {kind.name}"
    plain, packed = read_ggml_tensors(f16.path), read_raw_tensors(result.path)
    assert plain.keys() == packed.keys()
    quantized = set()
    for name, (ggml_type, shape, raw) in packed.items():
        f16_type, f16_shape, values = plain[name]
        assert shape == f16_shape
        # as examples/quantize: every 2-D tensor except the conv biases and positional embeddings
        if len(shape) == 2 and not name.endswith(("conv1.bias", "conv2.bias", "positional_embedding")):
            assert ggml_type == kind.ggml_type, name
            assert raw == quantize(kind, values.astype(np.float32))
            quantized.add(name)
        else:
            assert ggml_type == f16_type, name
            assert raw == values.tobytes()
    assert {"decoder.token_embedding.weight", "encoder.blocks.0.mlp.0.weight"} <= quantized
    assert plain["encoder.conv2.weight"][0] == GGML_F16
    assert plain["encoder.positional_embedding"][0] == GGML_F32


def test_the_checker_refuses_a_tensor_of_the_wrong_type(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "ct2", tiny_whisper_variables(state=32))
    path = convert_ct2(tmp_path / "ct2", tmp_path / "ggml-q.bin", Q8_0).path
    data = bytearray(path.read_bytes())
    data[4 + 10 * 4 : 4 + 11 * 4] = struct.pack("<i", Q5_0.header_ftype)  # header says q5_0, tensors are q8_0
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"is q8_0, whisper\.cpp expects q5_0 in a q5_0 model"):
        inspect_model(path)
    data[4 + 10 * 4 : 4 + 11 * 4] = struct.pack("<i", 2006)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="ftype = 2006"):
        inspect_model(path)


# --- the real model -----------------------------------------------------------------------------------------------


def test_quantized_tiny_en_loads_and_transcribes_jfk(tmp_path: Path, clips: list[Clip]) -> None:
    path, converted = install_offline_default("tiny.en-q8_0", tmp_path)
    assert converted
    assert path.name == "ggml-tiny.en-q8_0.bin"
    info = inspect_model(path)
    assert (info.n_tensors, info.hparams.ftype) == (167, 2007)
    assert probe_model(path).ok
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    engine = WhisperCppEngine(path, WhisperCppOptions(n_threads=2), name="tiny.en-q8_0")
    try:
        words = engine.transcribe(jfk.audio(), language="en")
    finally:
        engine.close()
    assert count_errors(jfk.text, " ".join(w.text for w in words), "en").wer <= 0.10
