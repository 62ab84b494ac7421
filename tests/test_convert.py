"""The CTranslate2 reader and the CT2-to-ggml converter, on small synthetic models and on the real ones."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from melvin_trio.models.convert import ConversionError, convert_ct2
from melvin_trio.models.ct2 import CT2FormatError, read_model
from melvin_trio.models.ggml import GGML_F16, GGML_F32, MAGIC, inspect_model
from melvin_trio.models.mel import mel_filterbank
from melvin_trio.models.quant import QUANT_TYPES
from melvin_trio.models.vocab import VocabularyError, read_text_tokens, token_bytes
from tests.ct2_builder import ct2_bytes, tiny_whisper_variables, write_model_dir

FIXTURES = Path(__file__).parent / "fixtures"


def read_raw_tensors(path: Path) -> dict[str, tuple[int, tuple[int, ...], bytes]]:
    """name -> (ggml type, numpy shape, raw data) for every tensor of a ggml file of any type (f32, f16, quantized)."""
    sizes = {GGML_F32: (1, 4), GGML_F16: (1, 2)} | {q.ggml_type: (32, q.block_bytes) for q in QUANT_TYPES.values()}
    data = path.read_bytes()
    pos = 4 + 11 * 4
    n_mel, n_fft = struct.unpack_from("<ii", data, pos)
    pos += 8 + 4 * n_mel * n_fft
    (n_tokens,) = struct.unpack_from("<i", data, pos)
    pos += 4
    for _ in range(n_tokens):
        (length,) = struct.unpack_from("<i", data, pos)
        pos += 4 + length
    tensors = {}
    while pos < len(data):
        n_dims, name_len, kind = struct.unpack_from("<iii", data, pos)
        pos += 12
        ne = struct.unpack_from(f"<{n_dims}i", data, pos)
        pos += 4 * n_dims + name_len
        name = data[pos - name_len : pos].decode()
        per_block, block_bytes = sizes[kind]
        size = int(np.prod(ne)) // per_block * block_bytes
        tensors[name] = (kind, tuple(reversed(ne)), data[pos : pos + size])
        pos += size
    return tensors


def read_ggml_tensors(path: Path) -> dict[str, tuple[int, tuple[int, ...], npt.NDArray[np.generic]]]:
    """name -> (ggml type, numpy shape, data) for every tensor of an f16/f32 ggml file."""
    tensors = {}
    for name, (kind, shape, raw) in read_raw_tensors(path).items():
        dtype = np.dtype("<f4") if kind == GGML_F32 else np.dtype("<f2")
        tensors[name] = (kind, shape, np.frombuffer(raw, dtype=dtype).reshape(shape))
    return tensors


# --- the CTranslate2 file format ---------------------------------------------------------------------------


def test_reader_reads_the_variable_table_with_every_dtype(tmp_path: Path) -> None:
    variables = {
        "a/f32": np.arange(6, dtype="<f4").reshape(2, 3),
        "a/i8": np.array(1, dtype="i1"),
        "a/i16": np.array(6, dtype="<i2"),
        "a/i32": np.array([7, -8], dtype="<i4"),
        "a/f16": np.linspace(0, 1, 4, dtype="<f2"),
    }
    (tmp_path / "model.bin").write_bytes(ct2_bytes(variables, {"b/alias": "a/f32"}))
    model = read_model(tmp_path)
    assert model.spec_name == "WhisperSpec"
    assert model.format_version == 6
    for name, array in variables.items():
        assert model.variables[name].dtype == array.dtype
        np.testing.assert_array_equal(model.variables[name], array)
    np.testing.assert_array_equal(model.get("b/alias"), variables["a/f32"])
    assert model.scalar("a/i16") == 6


def test_reader_joins_split_model_files(tmp_path: Path) -> None:
    variables = {"x": np.arange(1000, dtype="<f4"), "y": np.array(2, dtype="<i2")}
    data = ct2_bytes(variables)
    for i, chunk in enumerate([data[:10], data[10:2001], data[2001:]], start=1):
        (tmp_path / f"model.bin.part{i}").write_bytes(chunk)
    model = read_model(tmp_path)
    np.testing.assert_array_equal(model.variables["x"], variables["x"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: struct.pack("<I", 99) + d[4:], "format version 99"),
        (lambda d: b"\x00" * 64, "format version 0"),
        (lambda d: d + b"junk", "unexpected bytes"),
    ],
)
def test_reader_rejects_corrupt_files_with_a_clear_error(tmp_path: Path, mutate: object, message: str) -> None:
    data = ct2_bytes({"x": np.arange(100, dtype="<f4")})
    (tmp_path / "model.bin").write_bytes(mutate(data))  # type: ignore[operator]
    with pytest.raises(CT2FormatError, match=message):
        read_model(tmp_path)


def test_reader_rejects_an_unknown_dtype_code(tmp_path: Path) -> None:
    data = bytearray(ct2_bytes({"x": np.arange(4, dtype="<f4")}))
    dtype_at = data.index(b"x\0") + 2 + 1 + 4  # name, rank, one dim
    data[dtype_at] = 9
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(CT2FormatError, match="unknown dtype code 9"):
        read_model(tmp_path)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CT2FormatError, match=r"no model\.bin"):
        read_model(tmp_path)


# --- vocabulary and mel filters -----------------------------------------------------------------------------


def test_byte_level_tokens_decode_to_raw_bytes() -> None:
    assert token_bytes("Ġthe") == b" the"
    assert token_bytes("Ã¤") == "ä".encode()  # one umlaut, two bytes
    assert token_bytes("Ċ") == b"\n"
    with pytest.raises(VocabularyError, match="not a GPT-2 byte-level"):
        token_bytes("€")


def test_vocabulary_stops_before_end_of_text(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.txt"
    path.write_text("a\nĠb\n<|endoftext|>\n<|en|>", encoding="utf-8")
    assert read_text_tokens(path) == [b"a", b" b"]
    path.write_text("a\nb", encoding="utf-8")
    with pytest.raises(VocabularyError, match="endoftext"):
        read_text_tokens(path)


def test_mel_filterbank_equals_whispers_own() -> None:
    reference = np.load(FIXTURES / "whisper_mel_filters.npz")
    np.testing.assert_allclose(mel_filterbank(n_mels=80), reference["mel_80"], atol=1e-7)
    np.testing.assert_allclose(mel_filterbank(n_mels=128), reference["mel_128"], atol=1e-7)
    assert mel_filterbank().shape == (80, 201)


# --- conversion ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [1, 3])
def test_conversion_writes_every_tensor_with_the_right_type_and_values(tmp_path: Path, parts: int) -> None:
    variables = tiny_whisper_variables(layers=2)
    write_model_dir(tmp_path / "ct2", variables, parts=parts)
    out = tmp_path / "ggml-test.bin"
    result = convert_ct2(tmp_path / "ct2", out)

    info = inspect_model(out)
    assert result.n_tensors == info.n_tensors == 7 + 15 * 2 + 4 + 24 * 2
    assert info.n_tokens == 50256
    assert not info.hparams.multilingual
    assert struct.unpack_from("<i", out.read_bytes())[0] == MAGIC

    tensors = read_ggml_tensors(out)
    for name, (kind, shape, _) in tensors.items():
        must_be_f32 = len(shape) == 1 or name.endswith(("conv1.bias", "conv2.bias", "positional_embedding"))
        assert kind == (GGML_F32 if must_be_f32 else GGML_F16), name
    assert tensors["encoder.conv1.weight"][0] == GGML_F16  # a 3-D conv kernel stays f16
    assert tensors["encoder.conv1.bias"][1] == (8, 1)

    # self-attention: q, k, v are the row blocks of linear_0; the zero key bias is dropped
    fused = variables["encoder/layer_1/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(tensors["encoder.blocks.1.attn.query.weight"][2], fused[:8])
    np.testing.assert_array_equal(tensors["encoder.blocks.1.attn.key.weight"][2], fused[8:16])
    np.testing.assert_array_equal(tensors["encoder.blocks.1.attn.value.weight"][2], fused[16:])
    assert "encoder.blocks.1.attn.key.bias" not in tensors
    fused_bias = variables["encoder/layer_1/self_attention/linear_0/bias"].astype(np.float32)
    np.testing.assert_array_equal(tensors["encoder.blocks.1.attn.value.bias"][2], fused_bias[16:])
    # cross-attention: linear_0 is q, linear_1 holds k then v
    kv = variables["decoder/layer_0/attention/linear_1/weight"]
    np.testing.assert_array_equal(tensors["decoder.blocks.0.cross_attn.key.weight"][2], kv[:8])
    np.testing.assert_array_equal(tensors["decoder.blocks.0.cross_attn.value.weight"][2], kv[8:])
    np.testing.assert_array_equal(
        tensors["decoder.blocks.0.cross_attn.query.weight"][2], variables["decoder/layer_0/attention/linear_0/weight"]
    )
    # the final encoder norm is ln_post, not a layer
    np.testing.assert_array_equal(
        tensors["encoder.ln_post.weight"][2], variables["encoder/layer_norm/gamma"].astype(np.float32)
    )
    positions = tensors["decoder.positional_embedding"][2]
    np.testing.assert_array_equal(positions, variables["decoder/position_encodings/encodings"].astype(np.float32))


def test_a_nonzero_key_bias_is_refused(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "ct2", tiny_whisper_variables(key_bias=0.5))
    with pytest.raises(ConversionError, match="key bias is not zero"):
        convert_ct2(tmp_path / "ct2", tmp_path / "out.bin")
    assert list(tmp_path.glob("*.bin*")) == []


def test_a_vocabulary_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "ct2", tiny_whisper_variables(n_vocab=51864), n_text_tokens=50257)
    with pytest.raises(ConversionError, match="needs 50256"):
        convert_ct2(tmp_path / "ct2", tmp_path / "out.bin")


def test_a_truncated_ct2_model_gives_a_clear_error_and_no_output(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "ct2", tiny_whisper_variables())
    model = tmp_path / "ct2" / "model.bin"
    model.write_bytes(model.read_bytes()[:-1000])
    with pytest.raises(CT2FormatError, match="truncated"):
        convert_ct2(tmp_path / "ct2", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert list(tmp_path.glob(".out.bin*")) == []


def test_a_model_of_another_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(ct2_bytes({"x": np.zeros(2, "<f4")}, spec="TransformerSpec"))
    (tmp_path / "vocabulary.txt").write_text("a\n<|endoftext|>", encoding="utf-8")
    with pytest.raises(ConversionError, match="TransformerSpec"):
        convert_ct2(tmp_path, tmp_path / "out.bin")


# --- the real models, as ./dev setup imported them -------------------------------------------------------------


def test_imported_tiny_en_is_complete(tiny_en_path: Path) -> None:
    info = inspect_model(tiny_en_path)
    assert (info.n_tensors, info.n_tokens, info.hparams.n_vocab) == (167, 50256, 51864)
    assert info.description == "tiny, English-only"


def test_imported_base_is_complete(base_path: Path) -> None:
    info = inspect_model(base_path)
    assert (info.n_tensors, info.n_tokens, info.hparams.n_vocab) == (245, 50257, 51865)
    assert info.description == "base, multilingual"
