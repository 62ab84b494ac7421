"""TLS without a proxy: with `tls.certfile`/`tls.keyfile` the same ports speak wss:// and https://. The certificate
is self-signed, made for the test by the `openssl` command."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
import trio
from trio_websocket import wrap_client_stream

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.config import ConfigError
from melvin_trio.engine.base import Engine
from melvin_trio.evaluation import Clip
from melvin_trio.server.tls import server_context
from tests.server_harness import API_KEY, make_config, read_until_closed, running_server


def _self_signed(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS test needs the openssl command (apt-get install openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _https_get(url: str, context: ssl.SSLContext, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": key} if key else {})
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return response.status, response.read()


async def test_wss_and_https_on_the_same_ports(tiny_en_engine: Engine, clips: list[Clip], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    client = ssl.create_default_context(cafile=str(cert))
    pcm = read_wav_pcm16(next(c for c in clips if c.path.name == "melvin_jfk.wav").path)
    tls = {"certfile": str(cert), "keyfile": str(key)}
    with trio.fail_after(300):  # generous: six developers share two cores
        async with running_server(tiny_en_engine, tmp_path / "data", tls=tls) as running:
            ws_port, rest_port = running.addresses.websocket[1], running.addresses.rest[1]
            stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", ws_port, ssl_context=client)
            async with stream, trio.open_nursery() as nursery:
                ws = await wrap_client_stream(nursery, stream, f"127.0.0.1:{ws_port}", "/")
                await ws.send_message(json.dumps({"Authorization": API_KEY}))
                for offset in range(0, len(pcm), 64000):
                    await ws.send_message(pcm[offset : offset + 64000])
                await ws.send_message("eof")
                messages = await read_until_closed(ws)
                nursery.cancel_scope.cancel()
            stream_id = messages[-1]
            assert isinstance(stream_id, str)
            finals = [json.loads(m) for m in messages if isinstance(m, str) and m.startswith('{"result"')]
            assert "country" in " ".join(f["text"] for f in finals).lower()
            base = f"https://127.0.0.1:{rest_port}"
            status, body = await trio.to_thread.run_sync(_https_get, f"{base}/health", client)
            assert status == 200
            assert json.loads(body)["status"] == "ok"
            status, body = await trio.to_thread.run_sync(
                _https_get, f"{base}/export/transcript/{stream_id}", client, API_KEY
            )
            assert json.loads(body) == finals


def test_unusable_certificate_files_stop_the_start(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    missing = make_config(tmp_path, tls={"certfile": str(tmp_path / "nope.pem"), "keyfile": str(key)})
    with pytest.raises(ConfigError, match=r"tls\.certfile: .*nope\.pem: file not found"):
        server_context(missing)
    swapped = make_config(tmp_path, tls={"certfile": str(key), "keyfile": str(cert)})
    with pytest.raises(ConfigError, match="tls: cannot load"):
        server_context(swapped)
    with pytest.raises(ConfigError, match="tls: set both"):
        make_config(tmp_path, tls={"certfile": str(cert)})
