"""The server end to end: real sockets on 127.0.0.1 (port 0), the real tiny.en and base models, real speech."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from melvin_trio.audio import float_to_pcm16, read_wav, read_wav_pcm16
from melvin_trio.client import StreamResult, stream_pcm
from melvin_trio.client import open_connection as open_websocket_url
from melvin_trio.core import protocol
from melvin_trio.engine.base import GREEDY, Audio, Decoding, Engine, Word
from melvin_trio.evaluation import Clip, count_errors
from melvin_trio.server.exports import is_stream_id
from tests.server_harness import API_KEY, Running, read_until_closed, running_server


def _clip(clips: list[Clip], name: str) -> Clip:
    return next(c for c in clips if c.path.name == name)


def _words(result: StreamResult) -> list[dict[str, Any]]:
    return [w for final in result.finals for w in final["result"]]


def _check_stream(running: Running, result: StreamResult, pcm: bytes) -> None:
    """The export holds exactly the audio sent and exactly the finals received; word times rise inside the audio."""
    assert result.stream_id is not None
    assert is_stream_id(result.stream_id)
    assert running.exported_pcm(result.stream_id) == pcm
    assert running.transcript(result.stream_id) == result.finals
    words = _words(result)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    seconds = len(pcm) / 32000
    assert all(0 <= w["start"] <= w["end"] <= seconds + 1e-3 for w in words)
    for final in result.finals:
        assert final["text"] == "".join(f" {w['word']}" for w in final["result"])
        assert set(final) == {"result", "text"}


def _hypothesis(result: StreamResult) -> str:
    return " ".join(w["word"] for w in _words(result))


async def test_jfk_streamed_at_four_times_real_time(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    jfk = _clip(clips, "melvin_jfk.wav")
    pcm = read_wav_pcm16(jfk.path)
    with trio.fail_after(90):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=4.0)
    assert count_errors(jfk.text, _hypothesis(result), "en").wer <= 0.10
    assert result.partials, "partials go out while the stream runs"
    _check_stream(running, result, pcm)


async def test_previews_run_at_the_reduced_context_and_change_no_final(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    """streaming.preview_pass: each utterance's first pass is preceded by a call at the reduced encoder context
    (Decoding.reduced_context), and the finals are as good as without it."""
    jfk = _clip(clips, "melvin_jfk.wav")
    pcm = read_wav_pcm16(jfk.path)
    decodings: list[Decoding] = []

    class Recording:
        info = tiny_en_engine.info

        def transcribe(self, audio: Audio, **kwargs: Any) -> list[Word]:
            decodings.append(kwargs.get("decoding", GREEDY))
            return tiny_en_engine.transcribe(audio, **kwargs)

        def detect_language(self, audio: Audio) -> tuple[str, float]:
            return tiny_en_engine.detect_language(audio)

    with trio.fail_after(90):
        async with running_server(Recording(), tmp_path, streaming={"preview_pass": True}) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=2.0)
    assert any(d.reduced_context for d in decodings)
    assert any(not d.reduced_context for d in decodings)
    assert count_errors(jfk.text, _hypothesis(result), "en").wer <= 0.10
    _check_stream(running, result, pcm)


@pytest.mark.parametrize(("name", "language"), [("melvin_batman.wav", "en")])
async def test_english_clip_within_five_points_of_offline(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, name: str, language: str
) -> None:
    clip = _clip(clips, name)
    pcm = read_wav_pcm16(clip.path)
    offline = count_errors(
        clip.text,
        " ".join(w.text for w in tiny_en_engine.transcribe(read_wav(clip.path)[0], language=language)),
        language,
    )
    with trio.fail_after(120):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=4.0)
    assert count_errors(clip.text, _hypothesis(result), language).wer <= offline.wer + 0.05
    _check_stream(running, result, pcm)


async def test_german_clip_with_base(base_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    clip = _clip(clips, "librivox-simplicissimus_D.wav")
    pcm = read_wav_pcm16(clip.path)
    offline = count_errors(
        clip.text, " ".join(w.text for w in base_engine.transcribe(read_wav(clip.path)[0], language="de")), "de"
    )
    with trio.fail_after(180):
        async with running_server(base_engine, tmp_path, transcription_default={"language": "en"}) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=4.0, language="de")
    assert count_errors(clip.text, _hypothesis(result), "de").wer <= offline.wer + 0.05
    assert "nützlich" in _hypothesis(result)
    _check_stream(running, result, pcm)


async def test_one_seat_queues_clients_first_come_first_served(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    jfk = read_wav_pcm16(_clip(clips, "melvin_jfk.wav").path)
    quiet = np.zeros(16000, dtype="<i2").tobytes()
    order: list[str] = []
    results: dict[str, StreamResult] = {}
    with trio.fail_after(180):
        async with running_server(tiny_en_engine, tmp_path, limits={"waiting_notice_seconds": 1.0}) as running:

            async def client(name: str, pcm: bytes, speed: float, first_notice_within: float | None) -> None:
                async with open_websocket_url(running.ws_url) as ws:
                    await ws.send_message(json.dumps({"Authorization": API_KEY}))
                    if first_notice_within is not None:
                        with trio.fail_after(first_notice_within):
                            assert await ws.get_message() == protocol.WAITING_FOR_SEAT
                    result = StreamResult()
                    for offset in range(0, len(pcm), 8000):
                        await ws.send_message(pcm[offset : offset + 8000])
                        if speed:
                            await trio.sleep(0.25 / speed)
                    await ws.send_message('{"eof" : 1}')
                    while result.stream_id is None:
                        message = await ws.get_message()
                        assert isinstance(message, str)
                        if is_stream_id(message):
                            result.stream_id = message
                        elif message == protocol.WAITING_FOR_SEAT:
                            result.notices.append(message)
                        elif "result" in (data := json.loads(message)):
                            result.finals.append(data)
                    order.append(name)
                    results[name] = result

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client, "first", jfk, 2.0, None)
                await trio.sleep(0.5)
                nursery.start_soon(client, "second", jfk, 0, 1.0)  # all its audio arrives while it waits
                await trio.sleep(0.5)
                nursery.start_soon(client, "third", quiet, 0, 1.0)
    assert order == ["first", "second", "third"]
    assert len(results["second"].notices) >= 1  # repeated while waiting
    for name in ("first", "second"):
        result = results[name]
        assert result.stream_id is not None
        assert running.exported_pcm(result.stream_id) == jfk
        assert running.transcript(result.stream_id) == result.finals
        hyp = " ".join(w["word"] for f in result.finals for w in f["result"])
        assert count_errors(_clip(clips, "melvin_jfk.wav").text, hyp, "en").wer <= 0.10
    assert running.server.seats.available == 1


@pytest.mark.parametrize(
    ("first", "answer"),
    [
        (b"\x00\x01", protocol.AUTH_NOT_TEXT),
        ("not json", protocol.AUTH_INVALID_JSON),
        ('["Authorization"]', protocol.AUTH_INVALID_JSON),
        ('{"Authorization": "wrong"}', protocol.AUTH_INVALID_KEY),
        ('{"authorization": "' + API_KEY + '"}', protocol.AUTH_INVALID_KEY),
    ],
)
async def test_auth_failures_answer_exactly_then_close(
    tiny_en_engine: Engine, tmp_path: Path, first: str | bytes, answer: str
) -> None:
    with trio.fail_after(30):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_websocket_url(running.ws_url) as ws:
                await ws.send_message(first)
                assert await read_until_closed(ws) == [answer]
            assert running.server.seats.available == 1
            assert running.export_ids() == []


@pytest.mark.parametrize("eof", ["eof", '{"eof" : 1}', '{"eof":1}', '{"type":"eof"}'])
async def test_every_eof_variant_ends_the_stream(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, eof: str
) -> None:
    pcm = read_wav_pcm16(_clip(clips, "melvin_jfk.wav").path)[: 3 * 32000]
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_websocket_url(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                await ws.send_message(pcm)
                await ws.send_message(eof)
                messages = await read_until_closed(ws)
    assert all(isinstance(m, str) for m in messages)
    text = [m for m in messages if isinstance(m, str)]
    assert is_stream_id(text[-1])
    finals = [json.loads(m) for m in text[:-1] if "result" in m]
    assert "fellow" in " ".join(w["word"] for f in finals for w in f["result"])
    assert running.exported_pcm(text[-1]) == pcm


async def test_bigbluebutton_style_client(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    """First message merged with a config block, 20 ms frames, eof, and an immediate close without waiting."""
    pcm = read_wav_pcm16(_clip(clips, "melvin_jfk.wav").path)
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_websocket_url(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY, "config": {"sample_rate": "16000"}}))
                for offset in range(0, len(pcm), 640):
                    await ws.send_message(pcm[offset : offset + 640])
                await ws.send_message('{"eof":1}')
    # leaving running_server drained the server: every stream is exported
    (stream_id,) = running.export_ids()
    assert running.exported_pcm(stream_id) == pcm
    assert running.transcript(stream_id)


async def test_a_client_that_vanishes_is_exported(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    pcm = read_wav_pcm16(_clip(clips, "melvin_jfk.wav").path)[: 5 * 32000]
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_websocket_url(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                await ws.send_message(pcm)
                await trio.sleep(1.5)
    assert running.server.seats.available == 1
    (stream_id,) = running.export_ids()
    assert running.exported_pcm(stream_id) == pcm


def _room_rumble(seconds: float, dbfs: float) -> npt.NDArray[np.float32]:
    """Brown noise without drift: the low rumble of a ventilated lecture hall."""
    rng = np.random.default_rng(9)
    brown = np.cumsum(rng.standard_normal(int(seconds * 16000)))
    brown -= np.convolve(brown, np.ones(1601) / 1601, mode="same")
    scaled: npt.NDArray[np.float32] = (brown * 10 ** (dbfs / 20) / np.sqrt(np.mean(brown**2))).astype(np.float32)
    return scaled


@pytest.mark.parametrize("kind", ["silence", "low noise", "room rumble"])
async def test_a_minute_without_speech_gives_no_words(tiny_en_engine: Engine, tmp_path: Path, kind: str) -> None:
    samples = np.zeros(60 * 16000, dtype=np.float32)
    if kind == "low noise":
        samples = (np.random.default_rng(7).standard_normal(samples.size) * 0.01).astype(np.float32)  # -40 dBFS
    elif kind == "room rumble":
        samples = _room_rumble(60, -45.0)
    pcm = float_to_pcm16(samples)
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0)
    assert _words(result) == []
    assert all(p.strip() == "" for p in result.partials)
    _check_stream(running, result, pcm)


async def test_unknown_control_message(tiny_en_engine: Engine, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_websocket_url(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                await ws.send_message('{"type": "ping"}')
                assert await ws.get_message() == protocol.CONTROL_UNKNOWN
                await ws.send_message("eof")
                (stream_id,) = await read_until_closed(ws)
    assert isinstance(stream_id, str)
    assert is_stream_id(stream_id)


async def test_english_only_model_refuses_german_at_connect(tiny_en_engine: Engine, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_websocket_url(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY, "language": "de"}))
                (answer,) = await read_until_closed(ws)
    assert isinstance(answer, str)
    assert "English-only" in answer


async def test_rest_exports_need_a_key_and_a_known_id(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path
) -> None:
    pcm = read_wav_pcm16(_clip(clips, "melvin_jfk.wav").path)[: 2 * 32000]
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0)
            sid = result.stream_id
            assert sid is not None
            status, headers, body = await running.aget(f"/export/audio/{sid}")
            assert status == 200
            assert headers["content-type"] == "audio/wav"
            assert headers["content-disposition"] == f"attachment; filename={sid}.wav"
            assert body[44:] == pcm
            assert (await running.aget(f"/export/audio/{sid}", key=f"Bearer {API_KEY}"))[0] == 200
            status, headers, body = await running.aget(f"/export/transcript/{sid}")
            assert (status, json.loads(body)) == (200, result.finals)
            assert (await running.aget(f"/export/transcript/{sid}", key=None))[0] == 401
            assert (await running.aget(f"/export/audio/{sid}", key="wrong"))[0] == 401
            status, _, body = await running.aget("/export/transcript/" + "0" * 32)
            assert status == 404
            assert "error" in json.loads(body)
            status, _, body = await running.aget("/health", key=None)
            assert status == 200
            assert json.loads(body) == {
                "status": "ok",
                "seats": {"total": 1, "free": 1, "waiting": 0},
                "streams_behind": 0,
                "node": running.server.config.node,
            }


async def test_language_null_detects_german_once(base_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    clip = _clip(clips, "librivox-simplicissimus_E.wav")
    pcm = read_wav_pcm16(clip.path)
    with trio.fail_after(120):
        async with running_server(base_engine, tmp_path, transcription_default={"language": None}) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=4.0)
    assert count_errors(clip.text, _hypothesis(result), "de").wer <= 0.3
    _check_stream(running, result, pcm)


async def test_rest_rejects_ids_that_could_leave_data_dir(tiny_en_engine: Engine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "secret.json").write_text("[]")
    with trio.fail_after(30):
        async with running_server(tiny_en_engine, data) as running:
            for bad in ["..", "..%2f..%2fsecret", "%2e%2e", "%2fetc%2fpasswd", "A" * 32, "x" * 5000, "0" * 31]:
                for kind in ("audio", "transcript"):
                    status, _, _ = await running.aget(f"/export/{kind}/{bad}")
                    assert status == 404, (kind, bad)
            assert (await running.aget("/export/transcript/" + "0" * 32, key=None))[0] == 401


async def test_audio_export_supports_head_and_ranges(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    pcm = read_wav_pcm16(_clip(clips, "melvin_jfk.wav").path)[: 2 * 32000]
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0)
            url = f"/export/audio/{result.stream_id}"
            status, headers, body = await running.aget(url, headers={"Range": "bytes=44-143"})
            assert status == 206
            assert body == pcm[:100]
            assert headers["content-range"] == f"bytes 44-143/{44 + len(pcm)}"

            def head() -> tuple[int, str]:
                import urllib.request

                request = urllib.request.Request(
                    running.rest_url + url, method="HEAD", headers={"Authorization": API_KEY}
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.headers["Content-Length"]

            assert await trio.to_thread.run_sync(head) == (200, str(44 + len(pcm)))
