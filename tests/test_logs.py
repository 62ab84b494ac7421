"""Logs an operator can use: a refused login names the client and the reason (never the key); a client that
resets its connection during a pass is a disconnect at INFO, not whisper.cpp's "failed to encode" at ERROR; every
line about a stream carries its id and its client's address."""

from __future__ import annotations

import json
import logging
import socket
import struct
from pathlib import Path

import pytest
import trio

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.client import open_connection, stream_pcm
from melvin_trio.engine.base import Engine
from melvin_trio.evaluation import Clip
from tests.server_harness import API_KEY, client_frame, open_raw_session, read_until_closed, running_server, wait_for

WRONG_KEY = "wrong-key-7f3a9c"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


async def test_a_refused_login_is_logged_with_the_client_and_the_reason_never_the_key(
    tiny_en_engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(60):
        async with running_server(tiny_en_engine, tmp_path) as running:
            async with open_connection(running.ws_url) as ws:
                await ws.send_message(json.dumps({"Authorization": WRONG_KEY}))
                assert await read_until_closed(ws) == ["Provided api key is invalid"]
    refused = [r for r in caplog.records if r.getMessage().startswith("connection refused")]
    assert len(refused) == 1
    assert refused[0].levelno == logging.WARNING
    assert refused[0].getMessage().startswith("connection refused: Provided api key is invalid [client 127.0.0.1:")
    assert not any(WRONG_KEY in m or API_KEY in m for m in _messages(caplog))


async def test_a_reset_during_a_pass_is_a_disconnect_not_an_error(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    pcm = read_wav_pcm16(jfk.path)[: 4 * 32000]
    # No time to finish the gone client's audio (limits.drain_seconds 0), so its running pass is aborted; with
    # time, the pass would finish (tests/test_disconnect.py).
    with trio.fail_after(300):
        async with running_server(tiny_en_engine, tmp_path, limits={"drain_seconds": 0}) as running:
            worker = running.server.sections[0].workers[0]
            stream = await open_raw_session(running)
            client = f"127.0.0.1:{stream.socket.getsockname()[1]}"
            await stream.send_all(client_frame(0x2, pcm))
            await wait_for(lambda: worker.calls == 0 and any("seated" in m for m in _messages(caplog)))
            await trio.sleep(0.3)  # the first pass runs now (it takes seconds)
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            await wait_for(lambda: any("pass aborted" in m for m in _messages(caplog)))
            await wait_for(lambda: bool(running.export_ids()))
            # and the next client is served as usual
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0)
    assert result.stream_id is not None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    messages = _messages(caplog)
    (gone,) = [m for m in messages if "disconnected without eof" in m]
    assert gone.endswith(f"[client {client}]")
    (aborted,) = [m for m in messages if "pass aborted" in m]
    assert f"client {client}" in aborted
    assert any("whisper.cpp (aborted pass): " in m for m in messages)  # what whisper said, at DEBUG


async def test_every_line_about_a_stream_carries_its_id_and_client(
    tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    jfk = next(c for c in clips if c.path.name == "melvin_jfk.wav")
    pcm = read_wav_pcm16(jfk.path)[: 3 * 32000]
    with trio.fail_after(300):
        async with running_server(tiny_en_engine, tmp_path) as running:
            result = await stream_pcm(running.ws_url, API_KEY, pcm, speed=0)
    assert result.stream_id is not None
    messages = _messages(caplog)
    first = next(i for i, m in enumerate(messages) if m.startswith(f"stream {result.stream_id} started"))
    last = next(i for i, m in enumerate(messages) if m.startswith(f"stream {result.stream_id} exported"))
    during = [
        r
        for r in caplog.records[first : last + 1]
        if r.name.startswith(("melvin_trio.server.session", "melvin_trio.server.workers", "melvin_trio.engine"))
    ]
    assert len(during) >= 3  # started, seated, exported, and whatever the engine said
    for record in during:
        message = record.getMessage()
        assert result.stream_id in message, message
        assert "[client 127.0.0.1:" in message or ", client 127.0.0.1:" in message, message
