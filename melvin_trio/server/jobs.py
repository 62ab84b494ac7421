"""File jobs: the original Melvin ASR's `/transcriptions`, run on the engine workers the live streams use.

Each job is `data_dir/jobs/<id>.json` (the job object the API shows, rewritten atomically on every change) and,
until it ends, `data_dir/jobs/<id>.upload` (the uploaded file). The folder is shared by every node on the data_dir, so
any node answers for any job; each job names the node that runs it (`node`). A restart finds every job of its own
node that had not ended and runs it again from the start (its upload is still there), so status and result survive;
a job whose upload is gone is marked `error`. Another node's jobs are left to it, unless that node is dead: the node
that takes the dead node's lock adopts its unfinished jobs (`JobRunner.adopt`), so no job runs twice. Finished jobs
are deleted after `keep_data_for_hours`.

Live streams come first: a job's windows run only while no stream holds a seat or waits for one
(`SeatPool.idle`), one window per engine call, and a stream's request that arrives meanwhile aborts the window
(`EngineWorker.submit_background`), which then runs again once the engines are free.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import trio

from melvin_trio.audiofile import AudioFormatError, read_audio
from melvin_trio.core.events import Detected, DetectRequest
from melvin_trio.core.settings import StreamSettings
from melvin_trio.core.words import Word
from melvin_trio.engine.base import Decoding, EngineError, EngineTimedOut
from melvin_trio.filetranscribe import FileTranscription, greedy_of, transcript_json, words_from_transcript
from melvin_trio.server.retention import purge_periodically
from melvin_trio.server.workers import EngineWorker, SeatPool

log = logging.getLogger(__name__)

JOB_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
IDLE_POLL_SECONDS: Final = 0.2


class Status:
    IN_QUERY: Final = "in_query"
    IN_PROGRESS: Final = "in_progress"
    FINISHED: Final = "finished"
    ERROR: Final = "error"


def is_job_id(value: str) -> bool:
    return JOB_ID.fullmatch(value) is not None


def new_job_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class JobSpec:
    """What a job asks for, checked by the REST layer."""

    model: str
    language: str | None
    task: str  # transcribe or translate
    settings: dict[str, Any]
    decoding: Decoding
    initial_prompt: str
    filename: str


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "jobs"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def upload_path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.upload"

    def incoming_path(self) -> Path:
        """Where an upload is written while it arrives (renamed to the job's upload once accepted)."""
        self.prepare()
        return self.dir / f"incoming-{uuid.uuid4().hex}.part"

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job object, or None for an unknown or malformed id (never a path outside the job folder)."""
        if not is_job_id(job_id):
            return None
        try:
            data = json.loads(self._path(job_id).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, job: dict[str, Any]) -> None:
        self.prepare()
        target = self._path(job["transcription_id"])
        tmp = target.with_suffix(".json.part")
        with tmp.open("w", encoding="utf-8") as out:
            json.dump(job, out, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)

    def all(self) -> list[dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        jobs = []
        for path in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            job = self.get(path.stem)
            if job is not None:
                jobs.append(job)
        return jobs

    def purge_older_than(self, hours: float, now: float | None = None) -> list[str]:
        """Delete ended jobs (and stale partial uploads) older than `hours`; returns the jobs' ids."""
        cutoff = (time.time() if now is None else now) - hours * 3600
        purged: list[str] = []
        if not self.dir.is_dir():
            return purged
        for path in self.dir.glob("*.json"):
            job = self.get(path.stem)
            if job is None or job["status"] not in (Status.FINISHED, Status.ERROR):
                continue
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                self.upload_path(path.stem).unlink(missing_ok=True)
                purged.append(path.stem)
        for part in self.dir.glob("incoming-*.part"):
            if part.stat().st_mtime < cutoff:
                part.unlink(missing_ok=True)
        return purged


def job_object(job_id: str, spec: JobSpec, node: str) -> dict[str, Any]:
    """A new job as the original answers it, with this server's additions (`progress`, `filename`, and `node`,
    the node that runs it)."""
    return {
        "transcription_id": job_id,
        "status": Status.IN_QUERY,
        "start_time": utc_now(),
        "settings": spec.settings,
        "model": spec.model,
        "task": spec.task,
        "language": spec.language,
        "progress": 0.0,
        "filename": spec.filename,
        "node": node,
    }


def spec_of(job: dict[str, Any]) -> JobSpec:
    settings = dict(job.get("settings") or {})
    return JobSpec(
        model=job["model"],
        language=job.get("language"),
        task=job["task"],
        settings=settings,
        decoding=decoding_of(settings, job["task"]),
        initial_prompt=str(settings.get("initial_prompt") or ""),
        filename=str(job.get("filename") or ""),
    )


def decoding_of(settings: dict[str, Any], task: str) -> Decoding:
    """The decoding a job's settings ask for; FILE_DECODING otherwise (beam 5, fallback)."""
    from melvin_trio.engine.base import FILE_DECODING

    return Decoding(
        beam_size=int(settings.get("beam_size", FILE_DECODING.beam_size)),
        temperature=float(settings.get("temperature", FILE_DECODING.temperature)),
        temperature_inc=float(settings.get("temperature_inc", FILE_DECODING.temperature_inc)),
        translate=task == "translate",
    )


class JobRunner:
    """Runs queued jobs one at a time, in the order they came, on the workers of the requested model."""

    def __init__(
        self,
        store: JobStore,
        seats: SeatPool,
        workers: dict[str, list[EngineWorker]],
        node: str,
        speech: StreamSettings | None = None,
    ) -> None:
        self.store = store
        self.speech = speech or StreamSettings()  # the speech detector and its thresholds: the streams' (config)
        self.node = node  # this server's node_id: the jobs it queues and re-runs carry it
        self.seats = seats
        self.workers = workers  # model name -> its workers
        self._queue_send, self._queue_receive = trio.open_memory_channel[str](float("inf"))
        self._progress: dict[str, float] = {}
        self._ended: dict[str, trio.Event] = {}

    @property
    def models(self) -> list[str]:
        return list(self.workers)

    def submit(self, job_id: str) -> None:
        self._queue_send.send_nowait(job_id)

    def progress(self, job_id: str) -> float | None:
        return self._progress.get(job_id)

    async def wait(self, job_id: str) -> None:
        """Return once the job has ended (finished or error)."""
        event = self._ended.setdefault(job_id, trio.Event())
        job = self.store.get(job_id)
        if job is None or job["status"] in (Status.FINISHED, Status.ERROR):
            self._ended.pop(job_id, None)
            return
        await event.wait()

    def _unfinished(self, node: str) -> list[dict[str, Any]]:
        """Jobs of `node` that had not ended (a job without `node` predates nodes: it is this server's)."""
        return [
            job
            for job in self.store.all()
            if job["status"] in (Status.IN_QUERY, Status.IN_PROGRESS) and job.get("node", self.node) == node
        ]

    def recover(self) -> None:
        """Queue every job this node left unfinished; mark those whose upload is gone as errors. Jobs of other
        nodes sharing the data_dir are theirs (they may be running them now)."""
        for job in self._unfinished(self.node):
            self._requeue(job, "was interrupted by a restart: it runs again")

    def has_unfinished(self, node: str) -> bool:
        return bool(self._unfinished(node))

    def adopt(self, node: str) -> list[str]:
        """Take over the unfinished jobs of dead `node` (call only while holding its lock): they become this
        node's and run again. Returns their ids; thread-safe (it queues nothing: the caller calls `submit`)."""
        adopted = []
        for job in self._unfinished(node):
            job["node"] = self.node
            if self._requeue(job, f"of dead node {node} is adopted: it runs again here", submit=False):
                adopted.append(job["transcription_id"])
        return adopted

    def _requeue(self, job: dict[str, Any], why: str, *, submit: bool = True) -> bool:
        job_id = job["transcription_id"]
        if self.store.upload_path(job_id).is_file() and job.get("model") in self.workers:
            log.warning("job %s %s", job_id, why)
            job.update(status=Status.IN_QUERY, progress=0.0)
            self.store.put(job)
            if submit:
                self.submit(job_id)
            return True
        job.update(status=Status.ERROR, message="the server restarted and the upload is gone")
        self.store.put(job)
        return False

    async def serve(self, keep_hours: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run jobs until cancelled (a job cut off by cancellation stays in_progress and runs again next start)."""
        self.store.prepare()
        self.recover()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(purge_periodically, self.store.purge_older_than, keep_hours, "job(s)")
            task_status.started()
            async for job_id in self._queue_receive:
                await self._run(job_id)

    async def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job["status"] not in (Status.IN_QUERY, Status.IN_PROGRESS):
            return
        try:
            transcript, language, duration = await self._transcribe(job)
        except (AudioFormatError, EngineError, OSError) as exc:
            log.warning("job %s failed: %s", job_id, exc)
            job.update(status=Status.ERROR, message=str(exc))
        else:
            job.update(status=Status.FINISHED, progress=1.0, language=language, transcript=transcript)
            job["duration"] = round(duration, 3)
        job["end_time"] = utc_now()
        self._progress.pop(job_id, None)
        self.store.put(job)
        self.store.upload_path(job_id).unlink(missing_ok=True)
        if (event := self._ended.pop(job_id, None)) is not None:
            event.set()

    async def _transcribe(self, job: dict[str, Any]) -> tuple[dict[str, Any], str | None, float]:
        job_id = job["transcription_id"]
        spec = spec_of(job)
        workers = self.workers.get(spec.model)
        if not workers:
            raise EngineError(f"model {spec.model} is no longer configured")
        label = spec.filename or "the upload"
        audio, info = await trio.to_thread.run_sync(lambda: read_audio(self.store.upload_path(job_id), label=label))
        if (note := info.truncation(label)) is not None:
            log.warning("job %s: %s", job_id, note)
        plan = await trio.to_thread.run_sync(
            FileTranscription, audio, spec.language, spec.decoding, spec.initial_prompt, self.speech
        )  # the speech detector runs over the whole file: not in the event loop
        while (request := plan.next_request()) is not None:
            if isinstance(request, DetectRequest):
                outcome = await self._background(workers, job, request)
                if not isinstance(outcome, Detected):
                    raise EngineError(f"language detection failed: {outcome}")
                plan.detected(outcome.language, outcome.probability)
                log.info("job %s: detected language %s (p=%.2f)", job_id, outcome.language, outcome.probability)
                continue
            outcome = await self._background(workers, job, request)
            if isinstance(outcome, EngineTimedOut) and request.decoding != (greedy := greedy_of(request.decoding)):
                # Past the worker's limit (a loaded machine, a window beam search loops on): one greedy pass.
                log.warning("job %s: window %d %s; it is decoded again greedily", job_id, request.index, outcome)
                request = dataclasses.replace(request, decoding=greedy)
                outcome = await self._background(workers, job, request)
            if isinstance(outcome, EngineError):
                raise outcome
            if not isinstance(outcome, list):
                raise EngineError(f"unexpected engine answer {outcome!r}")
            plan.add(request, outcome)
            self._progress[job_id] = round(plan.progress, 3)
        words: list[Word] = plan.words
        return transcript_json(words), plan.language, float(np.float64(plan.duration))

    async def _background(
        self, workers: list[EngineWorker], job: dict[str, Any], request: Any
    ) -> list[Word] | Detected | EngineError:
        """One engine call of a job, run when no live stream needs the engines; repeated when preempted. The job
        is in_progress from its first call on."""
        job_id = job["transcription_id"]
        while True:
            while not self.seats.idle():  # noqa: ASYNC110 (the seat pool has no event for "idle"; a poll is cheap)
                await trio.sleep(IDLE_POLL_SECONDS)
            if job["status"] == Status.IN_QUERY:
                job.update(status=Status.IN_PROGRESS, progress=0.0)
                self.store.put(job)
                self._progress[job_id] = 0.0
            worker = workers[0]
            outcome = await worker.submit_background(job_id, request)
            if outcome is not None:
                return outcome
            log.debug("job %s: a window was preempted by a live stream; it runs again later", job_id)


def words_of(job: dict[str, Any]) -> list[Word]:
    return words_from_transcript(job.get("transcript") or {})
