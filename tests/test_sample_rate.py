"""The declared sample rate (`"config": {"sample_rate": R}` in the first message, as vosk-style and BigBlueButton
clients send it): audio at 8-48 kHz is resampled for the engine, the export keeps the bytes as received with that
rate in its header, word times stay in seconds; a rate that cannot be served is refused at once."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from melvin_trio.audio import SAMPLE_RATE, StreamResampler, float_to_pcm16, pcm16_to_float, read_wav, resample
from melvin_trio.client import open_connection, stream_pcm
from melvin_trio.core.protocol import AuthFailed, AuthOk, declared_sample_rate, parse_auth
from melvin_trio.engine.base import Engine
from melvin_trio.evaluation import Clip, count_errors
from melvin_trio.server.exports import ExportStore
from tests.server_harness import API_KEY, read_until_closed, running_server

REFUSAL = "config.sample_rate must be a whole number of Hz from 8000 to 48000"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, 16000),
        ({}, 16000),
        ({"sample_rate": "8000"}, 8000),
        ({"sample_rate": 44100}, 44100),
        ({"sample_rate": " 48000 "}, 48000),
        ({"sample_rate": 22050.0}, 22050),
        ({"sample_rate": "16000.0"}, 16000),
    ],
)
def test_declared_rates_that_are_served(config: dict[str, object] | None, expected: int) -> None:
    first = {"Authorization": "k", **({"config": config} if config is not None else {})}
    assert declared_sample_rate(first) == expected
    assert parse_auth(json.dumps(first), ["k"]) == AuthOk(language=None, sample_rate=expected)


@pytest.mark.parametrize("value", ["96000", 4000, 7999, 48001, "8 kHz", "", True, [16000], 16000.5, "nan", "1e400"])
def test_declared_rates_that_are_refused_name_the_value_and_the_range(value: object) -> None:
    refused = declared_sample_rate({"config": {"sample_rate": value}})
    assert isinstance(refused, AuthFailed)
    assert refused.message.startswith(f"Unsupported sample rate {json.dumps(value)}")
    assert refused.message.endswith(REFUSAL)


def test_a_wrong_key_is_refused_before_the_rate_is_looked_at() -> None:
    first = json.dumps({"Authorization": "wrong", "config": {"sample_rate": "96000"}})
    assert parse_auth(first, ["k"]) == AuthFailed("Provided api key is invalid")


def test_the_stream_resampler_in_pieces_matches_the_whole() -> None:
    rng = np.random.default_rng(3)
    pcm = float_to_pcm16(rng.uniform(-0.5, 0.5, 44100 * 2).astype(np.float32))
    resampler = StreamResampler(44100)
    pieces = b""
    cuts = sorted(rng.integers(0, len(pcm), 40))  # odd lengths included
    for a, b in zip([0, *cuts], [*cuts, len(pcm)], strict=True):
        pieces += resampler.feed(pcm[a:b])
    pieces += resampler.flush()
    assert len(pieces) // 2 == pytest.approx(2 * SAMPLE_RATE, abs=2)
    whole = resample(pcm16_to_float(pcm), 44100, SAMPLE_RATE)
    got = pcm16_to_float(pieces)[: whole.size]
    assert np.max(np.abs(got - whole[: got.size])) < 2e-3


def _at_rate(clip: Clip, rate: int) -> bytes:
    audio, info = read_wav(clip.path)
    assert info.sample_rate == SAMPLE_RATE
    return float_to_pcm16(resample(audio, SAMPLE_RATE, rate))


def _export(data_dir: Path, stream_id: str) -> tuple[int, bytes]:
    with wave.open(str(data_dir / f"{stream_id}.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.getframerate(), wav.readframes(wav.getnframes())


# tiny.en on this stream at speed 0: 16 kHz 0.091 (2 of 22 words), 44.1 kHz 0.091, 8 kHz 0.136 (telephone band:
# "Americans" heard as "America"); on 06ffd04, which ignored the declared rate, 8 kHz gave 0.55.
@pytest.mark.parametrize(("rate", "max_wer"), [(8000, 0.15), (44100, 0.10)])
async def test_audio_at_a_declared_rate_is_transcribed_and_exported_as_received(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, rate: int, max_wer: float
) -> None:
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    pcm = _at_rate(jfk, rate)
    with trio.fail_after(300):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0, chunk_ms=170, sample_rate=rate)
    assert result.stream_id is not None
    text = " ".join(f["text"] for f in result.finals)
    assert count_errors(jfk.text, text, "en").wer <= max_wer, text
    header_rate, exported = _export(tmp_path, result.stream_id)
    assert (header_rate, exported) == (rate, pcm)
    words = [w for f in result.finals for w in f["result"]]
    assert 9.0 < words[-1]["end"] <= 11.5  # seconds of the stream, whatever the rate
    assert words[0]["start"] < 1.5


async def test_a_rate_that_cannot_be_served_is_refused_at_once(tiny_en_engine: Engine, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(tiny_en_engine, tmp_path) as running:
            for value in ("96000", "fast"):
                async with open_connection(running.ws_url) as ws:
                    await ws.send_message(json.dumps({"Authorization": API_KEY, "config": {"sample_rate": value}}))
                    messages = await read_until_closed(ws)
                assert messages == [f"Unsupported sample rate {json.dumps(value)}: {REFUSAL}"]
    assert running.export_ids() == []


def test_a_spool_recovered_after_a_crash_keeps_its_declared_rate(tmp_path: Path) -> None:
    store = ExportStore(tmp_path)
    recording = store.open_recording("ab" * 16, 8000)
    recording.write_audio(b"\x01\x02" * 800)
    recording.abandon()  # as if the process died here
    assert ExportStore(tmp_path).recover() == ["ab" * 16]
    assert _export(tmp_path, "ab" * 16) == (8000, b"\x01\x02" * 800)
