"""The job store on disk: what a restart finds, retention, ids that cannot leave the job folder; a job's window
past its time limit (scripted fake engine)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import trio

from melvin_trio.audio import float_to_pcm16, wav_bytes
from melvin_trio.core.settings import StreamSettings
from melvin_trio.engine.base import GREEDY, SAMPLE_RATE, Decoding, Word
from melvin_trio.engine.fake import FakeEngine, Hang
from melvin_trio.server.jobs import JobRunner, JobSpec, JobStore, Status, job_object, new_job_id, words_of
from melvin_trio.server.workers import EngineWorker, Seat, SeatPool


def _spec() -> JobSpec:
    return JobSpec("fake", "en", "transcribe", {}, GREEDY, "", "a.wav")


def _runner(store: JobStore, node: str = "n1") -> JobRunner:
    worker = EngineWorker(FakeEngine(), "w")
    return JobRunner(store, SeatPool([Seat("cpu", 0, worker)]), {"fake": [worker]}, node)


def _queued(runner: JobRunner) -> list[str]:
    queued = []
    while True:
        try:
            queued.append(runner._queue_receive.receive_nowait())
        except trio.WouldBlock:
            return queued


def test_a_restart_requeues_unfinished_jobs_and_fails_those_without_upload(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    waiting, running, orphan, done = (new_job_id() for _ in range(4))
    for job_id, status in ((waiting, Status.IN_QUERY), (running, Status.IN_PROGRESS), (orphan, Status.IN_PROGRESS)):
        store.put({**job_object(job_id, _spec(), "n1"), "status": status})
    finished = {"status": Status.FINISHED, "transcript": {"text": "", "segments": []}}
    store.put({**job_object(done, _spec(), "n1"), **finished})
    store.upload_path(waiting).write_bytes(b"x")
    store.upload_path(running).write_bytes(b"x")
    runner = _runner(store)
    runner.recover()
    assert sorted(_queued(runner)) == sorted([waiting, running])
    assert store.get(running)["status"] == Status.IN_QUERY  # type: ignore[index]
    orphaned = store.get(orphan)
    assert orphaned is not None
    assert orphaned["status"] == Status.ERROR
    assert "upload" in orphaned["message"]
    assert store.get(done)["status"] == Status.FINISHED  # type: ignore[index]


def test_ended_jobs_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    old, fresh, unfinished = new_job_id(), new_job_id(), new_job_id()
    store.put({**job_object(old, _spec(), "n1"), "status": Status.FINISHED})
    store.put({**job_object(fresh, _spec(), "n1"), "status": Status.ERROR, "message": "x"})
    store.put({**job_object(unfinished, _spec(), "n1"), "status": Status.IN_QUERY})
    past = time.time() - 5 * 3600
    for job_id in (old, unfinished):
        os.utime(store.dir / f"{job_id}.json", (past, past))
    assert store.purge_older_than(4) == [old]
    assert store.get(old) is None
    assert store.get(fresh) is not None
    assert store.get(unfinished) is not None


def test_malformed_ids_never_touch_the_disk(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    (tmp_path / "secret.json").write_text('{"transcription_id": "x"}', encoding="utf-8")
    for bad in ("../secret", "..%2fsecret", "/etc/passwd", "", "x" * 36):
        assert store.get(bad) is None


def test_a_node_runs_only_its_own_jobs_again_and_adopts_a_dead_nodes(tmp_path: Path) -> None:
    """Nodes share the job folder: a starting node must not run the jobs another live node is running (they would
    run twice); the node that holds a dead node's lock adopts them, and they then stay its own."""
    store = JobStore(tmp_path)
    mine, theirs = new_job_id(), new_job_id()
    store.put({**job_object(mine, _spec(), "n1"), "status": Status.IN_PROGRESS})
    store.put({**job_object(theirs, _spec(), "n2"), "status": Status.IN_PROGRESS})
    for job_id in (mine, theirs):
        store.upload_path(job_id).write_bytes(b"x")
    n1 = _runner(store, "n1")
    n1.recover()
    assert _queued(n1) == [mine]
    assert store.get(theirs)["status"] == Status.IN_PROGRESS  # type: ignore[index]  # untouched: n2's
    assert n1.has_unfinished("n2")
    assert n1.adopt("n2") == [theirs]  # n2 died: n1 holds its lock
    assert _queued(n1) == []  # adopt queues nothing itself (it runs in a thread): the caller submits
    assert store.get(theirs)["node"] == "n1"  # type: ignore[index]
    assert not n1.has_unfinished("n2")
    n2 = _runner(store, "n2")  # n2 restarts: nothing of its is left to run twice
    n2.recover()
    assert _queued(n2) == []


async def test_a_window_past_its_time_limit_is_decoded_again_greedily(tmp_path: Path) -> None:
    """The beam decode of a job's second window hangs past the worker's limit: the window is decoded again
    greedily (no fallback) and the job finishes with every window's words."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(40 * SAMPLE_RATE)).astype(np.float32)  # loud from 1 s on: two windows
    audio[:SAMPLE_RATE] = 0.0
    engine = FakeEngine([[Word("one", 1.0, 1.5, 0.9)], Hang(), [Word("two", 2.0, 2.5, 0.9)]])
    worker = EngineWorker(engine, "w")
    store = JobStore(tmp_path)
    speech_by_level = StreamSettings(vad_detector="energy")  # white noise is no speech to Silero
    runner = JobRunner(store, SeatPool([Seat("cpu", 0, worker)]), {"fake": [worker]}, "n1", speech_by_level)
    job_id = new_job_id()
    beam = Decoding(beam_size=5, temperature_inc=0.2)
    store.prepare()
    store.put(job_object(job_id, JobSpec("fake", "en", "transcribe", {}, beam, "", "a.wav"), "n1"))
    store.upload_path(job_id).write_bytes(wav_bytes(float_to_pcm16(audio)))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve, 0.1)  # a file window's limit: 3 x 0.1 s
            await nursery.start(runner.serve, 1.0)
            runner.submit(job_id)
            await runner.wait(job_id)
            nursery.cancel_scope.cancel()
    job = store.get(job_id)
    assert job is not None
    assert job["status"] == Status.FINISHED, job.get("message")
    assert [w.text for w in words_of(job)] == ["one", "two"]
    assert [c.decoding for c in engine.calls] == [beam, beam, GREEDY]
    assert engine.calls[2].seconds == engine.calls[1].seconds  # the same window again
