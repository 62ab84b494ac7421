"""Several nodes as one service (issue 12): HAProxy from the shipped deploy/haproxy.cfg in front of three
`melvin-trio serve` processes sharing one data_dir, real model, real audio, all on 127.0.0.1.

Six clients stream through HAProxy onto three nodes of one seat each; one node is killed mid-stream. Every client
of a surviving node gets its id and its export through HAProxy (whichever node answers the REST call); the killed
node's clients' audio is recovered by a surviving node and fetchable through HAProxy, byte-exact up to what the
node had received; seats are balanced (each node one seated client and one waiting, told so by the protocol).
Then one survivor gets SIGTERM while it holds a stream: the next clients all go to the other node, and the drained
stream is exported.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from melvin_trio.audio import read_wav_pcm16
from melvin_trio.client import open_connection
from melvin_trio.core.protocol import WAITING_FOR_SEAT
from melvin_trio.evaluation import Clip
from tests.conftest import REPO
from tests.server_harness import API_KEY, spawn_serve, wait_for

BYTES_PER_SECOND = 32000
FRAME = 3200  # 100 ms
STREAM_SECONDS = 9
KILL_AFTER_S = 4.0
NODES = ("n1", "n2", "n3")
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"


def test_the_shipped_haproxy_config_is_valid() -> None:
    haproxy = _haproxy()
    result = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    text = HAPROXY_CFG.read_text(encoding="utf-8")
    for needed in ("balance leastconn", "timeout tunnel 4h", "option httpchk GET /health", "agent-check"):
        assert needed in text


def _haproxy() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        pytest.fail("haproxy is not installed (apt-get install haproxy; ./dev test installs it as root)")
    return path


@dataclass
class Node:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ws: int = 0
    rest: int = 0
    agent: int = 0


@dataclass
class Client:
    index: int
    pcm: bytes
    sent: int = 0
    messages: list[str | bytes] = field(default_factory=list)
    closed_without_id: bool = False

    @property
    def stream_id(self) -> str | None:
        last = self.messages[-1] if self.messages else None
        return last if isinstance(last, str) and re.fullmatch(r"[0-9a-f]{32}", last) else None

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.messages if isinstance(m, str) and '"result"' in m]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_node(tmp_path: Path, name: str) -> Node:
    config = tmp_path / f"{name}.yml"
    config.write_text(
        f"host: 127.0.0.1\nnode_id: {name}\ndata_dir: {tmp_path / 'data'}\nexports_dir: {tmp_path / 'exports'}\n"
        f"models_dir: {REPO / 'models'}\napi_keys_file: null\n"
        # One thread and cheaper passes: three nodes share this machine's cores (the test is about the cluster).
        "websocket_stream:\n  cpu:\n    cpu_threads: 1\n    reduce_audio_ctx: true\n"
        "streaming:\n  min_new_audio_seconds: 2.0\n"
        "limits:\n  drain_seconds: 20\n  waiting_notice_seconds: 2\n"
        "cluster:\n  heartbeat_seconds: 0.5\n  stale_after_seconds: 5\n  agent_port: 0\n",
        encoding="utf-8",
    )
    log = tmp_path / f"{name}.log"
    process = spawn_serve(config, log)
    return Node(name, process, log)


def _wait_started(node: Node) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and node.process.poll() is None:
        text = node.log.read_text(encoding="utf-8")
        main = re.search(r"WebSocket on ws://127\.0\.0\.1:(\d+), REST on http://127\.0\.0\.1:(\d+)", text)
        agent = re.search(r"HAProxy agent on 127\.0\.0\.1:(\d+)", text)
        if main and agent:
            node.ws, node.rest, node.agent = int(main.group(1)), int(main.group(2)), int(agent.group(1))
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node.name} did not start:\n{node.log.read_text(encoding='utf-8')}")


def _haproxy_config(nodes: list[Node], ws_port: int, rest_port: int) -> str:
    """The shipped file with this machine's addresses: frontends on free ports, servers at the nodes' ports."""
    text = HAPROXY_CFG.read_text(encoding="utf-8")
    text = text.replace("log /dev/log local0", "log stderr format short local0 warning")
    text = text.replace("bind :8394", f"bind 127.0.0.1:{ws_port}").replace("bind :8393", f"bind 127.0.0.1:{rest_port}")
    for i, node in enumerate(nodes, start=1):
        text = text.replace(f"10.0.0.1{i}:8394 check port 8393", f"127.0.0.1:{node.ws} check port {node.rest}").replace(
            f"10.0.0.1{i}:8393", f"127.0.0.1:{node.rest}"
        )
        text = re.sub(rf"(server node{i} .*agent-port )8395", rf"\g<1>{node.agent}", text)
    assert "10.0.0." not in text
    assert "agent-port 8395" not in text
    return text


def _start_haproxy(haproxy: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    with (tmp_path / "haproxy.log").open("wb") as sink:
        return subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], stderr=sink, stdout=sink)


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _audio_received_seconds(port: int) -> float:
    """The node's `melvin_audio_received_seconds_total` (its /metrics, open on loopback)."""
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "melvin_audio_received_seconds_total":
                return float(sample.value)
    return 0.0


def _wav_pcm(body: bytes) -> bytes:
    with wave.open(BytesIO(body), "rb") as wav:
        return wav.readframes(wav.getnframes())


def _log(node: Node) -> str:
    return node.log.read_text(encoding="utf-8")


async def _stream(url: str, client: Client, connected: trio.Event) -> None:
    """Stream the client's audio in real time, then eof; read everything until the close."""
    try:
        async with open_connection(url) as ws:
            await ws.send_message(json.dumps({"Authorization": API_KEY}))
            connected.set()

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        client.messages.append(await ws.get_message())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                with contextlib.suppress(ConnectionClosed):
                    for offset in range(0, len(client.pcm), FRAME):
                        await ws.send_message(client.pcm[offset : offset + FRAME])
                        client.sent = min(offset + FRAME, len(client.pcm))
                        await trio.sleep(0.1)
                    await ws.send_message("eof")
    except (ConnectionClosed, trio.BrokenResourceError, OSError):
        pass  # the node was killed under it
    finally:
        connected.set()
    client.closed_without_id = client.stream_id is None


async def test_three_nodes_behind_haproxy_balance_serve_every_export_and_recover_a_killed_node(
    clips: list[Clip], tiny_en_path: Path, tmp_path: Path
) -> None:
    haproxy = _haproxy()
    english = sorted((c for c in clips if c.lang == "en"), key=lambda c: -c.seconds)[:6]
    clients = [Client(i, read_wav_pcm16(c.path)[: STREAM_SECONDS * BYTES_PER_SECOND]) for i, c in enumerate(english)]
    assert len({c.pcm[: 4 * BYTES_PER_SECOND] for c in clients}) == 6  # each recovered prefix names its client
    nodes = [_start_node(tmp_path, name) for name in NODES]
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for node in nodes:
            await trio.to_thread.run_sync(_wait_started, node)
        ws_port, rest_port = _free_port(), _free_port()
        (tmp_path / "haproxy.cfg").write_text(_haproxy_config(nodes, ws_port, rest_port), encoding="utf-8")
        proxy = _start_haproxy(haproxy, tmp_path)
        with trio.fail_after(240):
            # HAProxy is up once /health answers through it; then give the agents a round (agent-inter 1s).
            await wait_for(lambda: proxy.poll() is not None or _probe(rest_port), interval=0.2)
            assert proxy.poll() is None, (tmp_path / "haproxy.log").read_text(encoding="utf-8")
            await trio.sleep(2.5)
            url = f"ws://127.0.0.1:{ws_port}"
            async with trio.open_nursery() as nursery:
                for client in clients:
                    connected = trio.Event()
                    nursery.start_soon(_stream, url, client, connected)
                    await connected.wait()
                    await trio.sleep(0.3)
                # Every client is connected: one seated and one waiting per node.
                await trio.sleep(0.5)
                seats = [await trio.to_thread.run_sync(_health, node.rest) for node in nodes]
                assert [s["seats"] for s in seats] == [{"total": 1, "free": 0, "waiting": 1}] * 3, seats
                assert [s["node"] for s in seats] == list(NODES)
                await trio.sleep(KILL_AFTER_S - 0.3 * 6 - 0.5)
                victim = nodes[1]
                victim.process.send_signal(signal.SIGKILL)
                await trio.to_thread.run_sync(victim.process.wait)
                sent_at_kill = {c.index: c.sent for c in clients}
            killed = [c for c in clients if c.closed_without_id]
            served = [c for c in clients if not c.closed_without_id]
            assert len(killed) == 2
            assert len(served) == 4
            # The survivors noticed the dead node and recovered its two streams (one survivor does it all).
            survivors = [n for n in nodes if n is not victim]
            pattern = re.compile(r"recovered the interrupted stream ([0-9a-f]{32}) of node n2 \(dead: pid (\d+)")
            await wait_for(lambda: sum(len(pattern.findall(_log(n))) for n in survivors) == 2, interval=0.2)
            recovered = [m for n in survivors for m in pattern.findall(_log(n))]
            assert all(int(pid) == victim.process.pid for _, pid in recovered)

            for client in served:  # id, audio and transcript through HAProxy, whichever node answers
                assert client.stream_id is not None
                status, body = await trio.to_thread.run_sync(
                    _get, f"http://127.0.0.1:{rest_port}/export/audio/{client.stream_id}"
                )
                assert status == 200
                assert _wav_pcm(body) == client.pcm
                status, body = await trio.to_thread.run_sync(
                    _get, f"http://127.0.0.1:{rest_port}/export/transcript/{client.stream_id}"
                )
                assert status == 200
                assert json.loads(body) == client.finals
            waited = [c for c in clients if WAITING_FOR_SEAT in c.messages]
            assert len(waited) == 3  # the second client on each node waited, and was told so

            by_prefix: dict[int, bytes] = {}
            for stream_id, _ in recovered:
                status, body = await trio.to_thread.run_sync(
                    _get, f"http://127.0.0.1:{rest_port}/export/audio/{stream_id}"
                )
                assert status == 200
                pcm = _wav_pcm(body)
                owner = next(c for c in killed if len(pcm) >= BYTES_PER_SECOND and c.pcm.startswith(pcm))
                by_prefix[owner.index] = pcm
            assert sorted(by_prefix) == sorted(c.index for c in killed)
            for client in killed:
                # Byte-exact up to what the node had received: all it had, less at most what was in flight.
                assert len(by_prefix[client.index]) >= sent_at_kill[client.index] - BYTES_PER_SECOND
            print(f"\nseats before the kill: {[(s['node'], s['seats']) for s in seats]}")  # shown with pytest -s
            print(f"killed {victim.name} (pid {victim.process.pid}); recovered by: {_recoverer(survivors, pattern)}")
            for client in clients:
                if client in served:
                    print(f"client {client.index}: id {client.stream_id}, {len(client.pcm)} bytes exported == sent")
                else:
                    got, sent = len(by_prefix[client.index]), sent_at_kill[client.index]
                    print(
                        f"client {client.index}: killed; recovered {got} bytes, {sent} sent at the kill, exact prefix"
                    )
        with trio.fail_after(120):
            await _a_draining_node_gets_no_new_client(url, rest_port, survivors, clients[0].pcm)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            try:
                node.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()


async def _a_draining_node_gets_no_new_client(url: str, rest_port: int, survivors: list[Node], pcm: bytes) -> None:
    """Both survivors are idle. A client lands on one of them, which then gets SIGTERM: its agent says `drain`
    and its /health 503, so the next two clients both go to the other node (one seated, one waiting) although
    the draining node has the same seat count; the draining node's open stream still ends with its id and export."""
    first = Client(10, pcm)
    later = [Client(11 + i, pcm[: 3 * BYTES_PER_SECOND]) for i in range(2)]
    async with trio.open_nursery() as nursery:
        connected = trio.Event()
        nursery.start_soon(_stream, url, first, connected)
        await connected.wait()
        await wait_for(lambda: sum(_health(n.rest)["seats"]["free"] for n in survivors) == 1, interval=0.2)
        draining = next(n for n in survivors if _health(n.rest)["seats"]["free"] == 0)
        other = next(n for n in survivors if n is not draining)
        # Its audio must have begun to arrive before the signal, or there is nothing to export (a seated client
        # can be a few frames away from its first audio; the run that failed sent the signal in that gap).
        received = _audio_received_seconds(draining.rest)
        await wait_for(lambda: _audio_received_seconds(draining.rest) >= received + 0.5, interval=0.1)
        draining.process.send_signal(signal.SIGTERM)
        await trio.sleep(4.5)  # HAProxy reads "drain" within agent-inter (1 s), the 503 within 2 checks (4 s)
        for client in later:
            connected = trio.Event()
            nursery.start_soon(_stream, url, client, connected)
            await connected.wait()
            await trio.sleep(0.3)
        await wait_for(lambda: _health(other.rest)["seats"] == {"total": 1, "free": 0, "waiting": 1}, interval=0.2)
    drained_log = _log(draining).split("SIGTERM received")[1]
    assert " started" not in drained_log  # no stream began on the draining node after the signal
    exported = {}
    for client in (first, *later):
        assert client.stream_id is not None
        status, body = await trio.to_thread.run_sync(
            _get, f"http://127.0.0.1:{rest_port}/export/audio/{client.stream_id}"
        )
        assert status == 200
        exported[client.index] = _wav_pcm(body)
    # Draining ends a stream as if at eof (README): its export is what arrived before, exactly.
    assert len(exported[first.index]) > 0
    assert first.pcm.startswith(exported[first.index])
    assert [exported[c.index] for c in later] == [c.pcm for c in later]
    assert await trio.to_thread.run_sync(lambda: draining.process.wait(timeout=60)) == 0
    print(f"{draining.name} drained: its stream exported, the next two clients went to {other.name}")


def _recoverer(nodes: list[Node], pattern: re.Pattern[str]) -> list[str]:
    return [f"{n.name}: {[m[0] for m in pattern.findall(_log(n))]}" for n in nodes if pattern.search(_log(n))]


def _probe(rest_port: int) -> bool:
    try:
        return bool(_health(rest_port)["status"] == "ok")
    except (OSError, ValueError):
        return False
