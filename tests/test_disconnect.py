"""A client that leaves without eof (a clean close, a reset, silence to pings) keeps the words of its audio: the
server finishes transcribing what it received, within limits.drain_seconds, and exports audio and transcript as it
would after eof; the seat comes back afterwards. A tester's report: leaving 2 s into a 3.3 s clip exported the
audio in full but the transcript as []."""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import trio

from melvin_trio.audio import float_to_pcm16, pcm16_to_float, read_wav_pcm16
from melvin_trio.client import open_connection
from melvin_trio.engine.base import Engine, Word
from melvin_trio.engine.fake import FakeEngine, Hang
from melvin_trio.evaluation import Clip, count_errors
from tests.server_harness import (
    API_KEY,
    Running,
    client_frame,
    open_raw_session,
    read_until_closed,
    running_server,
    wait_for,
)

BYTES_PER_SECOND = 32000
CHUNK = BYTES_PER_SECOND // 4  # 250 ms, as `melvin-trio stream` sends


async def _send_in_real_time(send: Callable[[bytes], Awaitable[None]], pcm: bytes) -> None:
    start = trio.current_time()
    for offset in range(0, len(pcm), CHUNK):
        await send(pcm[offset : offset + CHUNK])
        await trio.sleep_until(start + (offset + CHUNK) / BYTES_PER_SECOND)


async def _leave_after(running: Running, pcm: bytes, how: str) -> None:
    """Authenticate, send `pcm` in real time, then leave without eof: `close` (a WebSocket close, as a browser tab
    does) or `reset` (a TCP reset, as a crashed client or a dropped network path does)."""
    if how == "close":
        async with open_connection(running.ws_url) as ws:
            await ws.send_message(json.dumps({"Authorization": API_KEY}))
            await _send_in_real_time(ws.send_message, pcm)
        return
    stream = await open_raw_session(running)

    async def send(frame: bytes) -> None:
        await stream.send_all(client_frame(0x2, frame))

    await _send_in_real_time(send, pcm)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def _seats_free(running: Running) -> dict[str, int]:
    status, _, body = await running.aget("/health", key=None)
    assert status == 200
    seats: dict[str, int] = json.loads(body)["seats"]
    return seats


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_that_leaves_mid_clip_gets_the_words_of_what_it_sent(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.INFO, logger="melvin_trio")
    kittens = next(c for c in clips if c.path.name == "librispeech_1988-24833-0000.wav")
    assert kittens.text.startswith("THE TWO STRAY KITTENS GRADUALLY")
    sent = read_wav_pcm16(kittens.path)[: 2 * BYTES_PER_SECOND]  # 2 s of the 3.3 s clip
    with trio.fail_after(120):
        async with running_server(tiny_en_engine, tmp_path) as running:
            await _leave_after(running, sent, how)
            await wait_for(lambda: bool(running.export_ids()))
            (stream_id,) = running.export_ids()
            status, _, body = await running.aget(f"/export/transcript/{stream_id}")
            assert status == 200
            finals = json.loads(body)
            status, _, audio = await running.aget(f"/export/audio/{stream_id}")
            assert status == 200
            assert await _seats_free(running) == {"total": 1, "free": 1, "waiting": 0}
    with wave.open(io.BytesIO(audio), "rb") as wav:
        assert wav.readframes(wav.getnframes()) == sent  # the audio as received
    text = " ".join(w["word"] for final in finals for w in final["result"])
    # The words in the 2 s sent: the clip's first five (whisper ends "gradually" at 1.7-2.0 s).
    errors = count_errors(" ".join(kittens.text.split()[:5]), text, "en")
    assert errors.wer <= 0.2, text
    gone = f"stream {stream_id}: the client disconnected without eof; exported"
    assert any(gone in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def _speech(seconds: float) -> bytes:
    """Real speech (melvin_jfk, repeated): the speech detector sends it to the engine."""
    from tests.conftest import SHARED_AUDIO

    speech = pcm16_to_float(read_wav_pcm16(SHARED_AUDIO / "en" / "melvin_jfk.wav"))
    return float_to_pcm16(np.resize(speech, int(seconds * 16000)) * 0.5)


async def test_finishing_for_a_client_that_left_is_bounded_by_drain_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine is stuck in the gone client's pass: the stream is exported and its seat back once
    limits.drain_seconds have passed (not at the engine's call limit), and the next client is served."""
    caplog.set_level(logging.INFO, logger="melvin_trio")
    engine = FakeEngine([Hang(), [Word("fine.", 0.1, 0.4, 0.9)]])
    limits = {"drain_seconds": 1, "engine_call_timeout_seconds": 600}
    with trio.fail_after(60):
        async with running_server(engine, tmp_path, limits=limits) as running:
            async with open_connection(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                await ws.send_message(_speech(3))
                await wait_for(lambda: len(engine.calls) == 1)  # its pass hangs
            left = trio.current_time()
            await wait_for(lambda: bool(running.export_ids()))
            assert await _seats_free(running) == {"total": 1, "free": 1, "waiting": 0}
            assert trio.current_time() - left >= 0.9  # the seat was held for the finish
            async with open_connection(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                await ws.send_message(_speech(2))
                await ws.send_message("eof")
                messages = await read_until_closed(ws)
    assert any('"fine."' in m for m in messages if isinstance(m, str))
    assert any("were not transcribed within limits.drain_seconds" in r.getMessage() for r in caplog.records)


async def test_a_client_silent_to_pings_is_finished_like_one_that_left(tmp_path: Path) -> None:
    """A dead network path (no close, no reset, no answer to pings): once the ping times out the stream is
    finished and exported with its words, and the seat comes back."""

    def slow_pass(audio: np.ndarray, prompt: str) -> list[Word]:
        time.sleep(1.0)  # no final is out before the ping times out (after 1 s)
        return [Word("heard.", 0.1, 0.4, 0.9)]

    engine = FakeEngine([slow_pass])
    limits = {"ping_interval_seconds": 0.5, "ping_timeout_seconds": 0.5}
    with trio.fail_after(60):
        async with running_server(engine, tmp_path, limits=limits) as running:
            stream = await open_raw_session(running)  # never reads, never answers a ping
            await stream.send_all(client_frame(0x2, _speech(3)))
            await wait_for(lambda: bool(running.export_ids()))
            (stream_id,) = running.export_ids()
            status, _, body = await running.aget(f"/export/transcript/{stream_id}")
            assert await _seats_free(running) == {"total": 1, "free": 1, "waiting": 0}
            await stream.aclose()
    assert status == 200
    assert "heard." in [w["word"] for final in json.loads(body) for w in final["result"]]
