"""The job store on disk: what a restart finds, retention, ids that cannot leave the job folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from melvin_trio.engine.base import GREEDY
from melvin_trio.engine.fake import FakeEngine
from melvin_trio.server.jobs import JobRunner, JobSpec, JobStore, Status, job_object, new_job_id
from melvin_trio.server.workers import EngineWorker, Seat, SeatPool


def _spec() -> JobSpec:
    return JobSpec("fake", "en", "transcribe", {}, GREEDY, "", "a.wav")


def _runner(store: JobStore) -> JobRunner:
    worker = EngineWorker(FakeEngine(), "w")
    return JobRunner(store, SeatPool([Seat("cpu", 0, worker)]), {"fake": [worker]})


def test_a_restart_requeues_unfinished_jobs_and_fails_those_without_upload(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    waiting, running, orphan, done = (new_job_id() for _ in range(4))
    for job_id, status in ((waiting, Status.IN_QUERY), (running, Status.IN_PROGRESS), (orphan, Status.IN_PROGRESS)):
        store.put({**job_object(job_id, _spec()), "status": status})
    store.put({**job_object(done, _spec()), "status": Status.FINISHED, "transcript": {"text": "", "segments": []}})
    store.upload_path(waiting).write_bytes(b"x")
    store.upload_path(running).write_bytes(b"x")
    runner = _runner(store)
    runner.recover()
    queued = []
    while True:
        try:
            queued.append(runner._queue_receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert sorted(queued) == sorted([waiting, running])
    assert store.get(running)["status"] == Status.IN_QUERY  # type: ignore[index]
    orphaned = store.get(orphan)
    assert orphaned is not None
    assert orphaned["status"] == Status.ERROR
    assert "upload" in orphaned["message"]
    assert store.get(done)["status"] == Status.FINISHED  # type: ignore[index]


def test_ended_jobs_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    old, fresh, unfinished = new_job_id(), new_job_id(), new_job_id()
    store.put({**job_object(old, _spec()), "status": Status.FINISHED})
    store.put({**job_object(fresh, _spec()), "status": Status.ERROR, "message": "x"})
    store.put({**job_object(unfinished, _spec()), "status": Status.IN_QUERY})
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
