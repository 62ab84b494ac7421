"""The node lock and the shared storage of several nodes: one owner per node id, take-over after a crash, spools
claimed once, retention and exports safe with several nodes on one folder."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest
import trio

from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.app import take_node_lock
from melvin_trio.server.exports import ExportStore
from melvin_trio.server.lock import ROLE_RECOVERY, NodeLock, NodeLockError, NodeLockHeld, read_record, this_host
from tests.server_harness import open_raw_session, running_server, wait_for

SID = "0123456789abcdef0123456789abcdef"


def _pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def _fake_record(path: Path, *, host: str, pid: int, age: float, role: str = "serve") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    record = {"node_id": path.stem, "pid": pid, "host": host, "token": "t", "role": role, "started": now - age}
    path.write_text(json.dumps({**record, "heartbeat": now - age}), encoding="utf-8")


def test_a_held_lock_is_refused_with_the_owner_named_and_left_untouched(tmp_path: Path) -> None:
    first = NodeLock(tmp_path, "n1", stale_after=30)
    assert first.acquire() is None
    before = first.path.read_bytes()
    with pytest.raises(NodeLockHeld) as refused:
        NodeLock(tmp_path, "n1", stale_after=30).acquire()
    message = str(refused.value)
    assert f"data_dir {tmp_path} is in use by pid {os.getpid()} on host {this_host()}" in message
    assert first.path.read_bytes() == before
    assert NodeLock(tmp_path, "n2", stale_after=30).acquire() is None  # another node id is another lock
    first.heartbeat()
    first.release()
    assert read_record(first.path) is not None
    assert NodeLock(tmp_path, "n1", stale_after=30).acquire() is None  # released: nothing to report


def test_a_lock_left_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; from melvin_trio.server.lock import NodeLock;"
        f"NodeLock(Path({str(tmp_path)!r}), 'n1', stale_after=30).acquire(); print('held', flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"held\n"
            with pytest.raises(NodeLockHeld, match=f"pid {child.pid}"):
                NodeLock(tmp_path, "n1", stale_after=30).acquire()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    previous = NodeLock(tmp_path, "n1", stale_after=30).acquire()  # the heartbeat is fresh, but the pid is gone
    assert previous is not None
    assert previous.pid == child.pid


def test_another_hosts_owner_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "nodes" / "n1.lock"
    _fake_record(path, host="elsewhere", pid=1, age=5)
    with pytest.raises(NodeLockHeld, match="pid 1 on host elsewhere"):
        NodeLock(tmp_path, "n1", stale_after=30).acquire()
    _fake_record(path, host="elsewhere", pid=1, age=31)
    previous = NodeLock(tmp_path, "n1", stale_after=30).acquire()
    assert previous is not None
    assert previous.host == "elsewhere"


def test_a_heartbeat_notices_a_take_over(tmp_path: Path) -> None:
    lock = NodeLock(tmp_path, "n1", stale_after=30)
    lock.acquire()
    _fake_record(lock.path, host="elsewhere", pid=1, age=0, role=ROLE_RECOVERY)
    with pytest.raises(NodeLockError, match="taken over by pid 1 on host elsewhere"):
        lock.heartbeat()
    lock.release()
    assert read_record(lock.path).host == "elsewhere"  # type: ignore[union-attr]  # not overwritten


def test_two_recoverers_racing_recover_each_spool_exactly_once(tmp_path: Path) -> None:
    dead = ExportStore(tmp_path, node_id="dead")
    ids = [f"{i:032x}" for i in range(40)]
    for sid in ids:
        recording = dead.open_recording(sid)
        recording.write_audio(sid.encode() * 100)
        recording.add_final({"text": sid})
        recording.abandon()
    results: list[list[str]] = [[], []]
    survivors = [ExportStore(tmp_path, node_id="a"), ExportStore(tmp_path, node_id="b")]
    barrier = threading.Barrier(2)

    def recover(index: int) -> None:
        barrier.wait()
        results[index] = survivors[index].recover_node("dead")

    threads = [threading.Thread(target=recover, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results[0] + results[1]) == ids
    for sid in ids:
        assert _pcm(tmp_path / f"{sid}.wav") == sid.encode() * 100
        assert json.loads((tmp_path / f"{sid}.json").read_text()) == [{"text": sid}]
    assert list(dead.spool_dir.iterdir()) == []
    assert not dead.has_spools("dead")


def test_exports_go_to_exports_dir_complete_even_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ExportStore(tmp_path / "data", exports_dir=tmp_path / "shared", node_id="n1")
    real_replace = os.replace

    def no_cross_device_rename(src: str | Path, dst: str | Path) -> None:
        if Path(src).parent == store.spool_dir and Path(dst).parent == store.exports_dir:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_cross_device_rename)
    recording = store.open_recording(SID)
    recording.write_audio(b"\x01\x02" * 5000)
    recording.finish()
    assert store.audio_path(SID) == tmp_path / "shared" / f"{SID}.wav"
    assert _pcm(tmp_path / "shared" / f"{SID}.wav") == b"\x01\x02" * 5000
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [f"{SID}.json", f"{SID}.wav"]
    assert list(store.spool_dir.iterdir()) == []
    assert not (tmp_path / "data" / f"{SID}.wav").exists()


def test_retention_on_several_nodes_at_once_is_no_error(tmp_path: Path) -> None:
    stores = [ExportStore(tmp_path / "data", exports_dir=tmp_path / "shared", node_id=f"n{i}") for i in range(3)]
    ids = [f"{i:032x}" for i in range(60)]
    for sid in ids:
        stores[0].open_recording(sid).finish()
    (tmp_path / "shared" / f".{SID}.host-1-x.json.part").write_text("half")  # left by a process that died
    old = time.time() - 100 * 3600
    for path in (tmp_path / "shared").iterdir():
        os.utime(path, (old, old))
    results: list[list[str]] = [[] for _ in stores]
    barrier = threading.Barrier(len(stores))

    def purge(index: int) -> None:
        barrier.wait()
        results[index] = stores[index].purge_older_than(72)

    threads = [threading.Thread(target=purge, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set().union(*results) == set(ids)
    assert list((tmp_path / "shared").iterdir()) == []


async def test_a_live_node_recovers_a_dead_nodes_spools_and_leaves_a_live_ones_alone(tmp_path: Path) -> None:
    """Node `dead` crashed on this host (its lock's OS lock is gone); node `alive` holds its lock. A server
    running as node `me` exports the dead node's spool within a heartbeat, logs its id, and never touches the
    live node's spool."""
    dead_store = ExportStore(tmp_path, node_id="dead")
    dead_lock = NodeLock(tmp_path, "dead", stale_after=30)
    dead_lock.acquire()
    recording = dead_store.open_recording(SID)
    recording.write_audio(b"\x07\x08" * 3000)
    recording.add_final({"text": " spooled"})
    recording.abandon()
    assert dead_lock._fd is not None
    os.close(dead_lock._fd)  # the process dies: the kernel drops the OS lock, the record stays as it was
    alive_lock = NodeLock(tmp_path, "alive", stale_after=30)
    alive_lock.acquire()
    live_id = "f" * 32
    live = ExportStore(tmp_path, node_id="alive").open_recording(live_id)
    live.write_audio(b"\x01\x00" * 100)
    cluster = {"heartbeat_seconds": 0.2, "stale_after_seconds": 1.0}
    with trio.fail_after(30):
        async with running_server(FakeEngine([]), tmp_path, node_id="me", cluster=cluster) as running:
            await wait_for(lambda: running.server.exports.audio_path(SID) is not None)
            await trio.sleep(1.0)  # several more heartbeats and scans
            assert running.server.exports.audio_path(live_id) is None
    assert _pcm(tmp_path / f"{SID}.wav") == b"\x07\x08" * 3000
    assert json.loads((tmp_path / f"{SID}.json").read_text()) == [{"text": " spooled"}]
    assert (tmp_path / "spool" / "alive" / f"{live_id}.wav").exists()
    record = read_record(tmp_path / "nodes" / "dead.lock")
    assert record is not None
    assert record.role == "released"
    live.finish()
    alive_lock.release()


async def _agent(port: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        data = b""
        while chunk := await stream.receive_some(100):
            data += chunk
    return data.decode("ascii")


async def test_the_agent_and_health_tell_haproxy_how_full_the_node_is(tmp_path: Path) -> None:
    """HAProxy's agent-check reads the node's seat count as a weight (`weight 1` x N%) and `drain` once the
    server stops; /health gives the free seats, names the node and answers 503 while draining."""
    with trio.fail_after(30):
        async with running_server(
            FakeEngine([]), tmp_path, seats=2, node_id="n7", cluster={"agent_port": 0}
        ) as running:
            agent = running.addresses.agent
            assert agent is not None
            assert await _agent(agent[1]) == "ready up 200%\n"
            first = await open_raw_session(running)
            second = await open_raw_session(running)
            await wait_for(lambda: running.server.seats.available == 0)
            assert await _agent(agent[1]) == "ready up 200%\n"
            status, _, body = await running.aget("/health", key=None)
            assert status == 200
            assert json.loads(body) == {
                "status": "ok",
                "seats": {"total": 2, "free": 0, "waiting": 0},
                "streams_behind": 0,
                "node": "n7",
            }
            running.server.request_stop()
            await wait_for(lambda: running.server.agent_reply() == "drain\n")
            assert await _agent(agent[1]) == "drain\n"
            status, _, body = await running.aget("/health", key=None)
            assert status == 503
            assert json.loads(body)["status"] == "draining"
            await first.aclose()
            await second.aclose()


def test_a_restarting_node_waits_while_a_survivor_recovers_its_spools(tmp_path: Path) -> None:
    """A node restarted right after its crash finds a survivor holding its lock to recover its spools: it waits
    for the survivor (not refused), then owns its lock; a second survivor meanwhile is refused."""
    survivor = NodeLock(tmp_path, "n1", stale_after=30, role=ROLE_RECOVERY)
    survivor.acquire()
    with pytest.raises(NodeLockHeld, match="recovering its spools"):
        NodeLock(tmp_path, "n1", stale_after=30, role=ROLE_RECOVERY).acquire()
    timer = threading.Timer(0.5, survivor.release)
    timer.start()
    restarted = NodeLock(tmp_path, "n1", stale_after=30)
    started = time.monotonic()
    take_node_lock(restarted)
    assert time.monotonic() - started >= 0.4
    assert restarted.held
    timer.join()
    restarted.release()
