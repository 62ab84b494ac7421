"""REST for files: the original Melvin ASR's `/transcriptions`, OpenAI's `/v1/audio/transcriptions` and
`/v1/audio/translations`, and subtitles of finished streams (`/export/subtitles/<id>`).

Uploads are multipart forms. Quart's form parser writes a file part past 500 KB to a temporary file as it arrives,
and it is then copied into `data_dir/jobs/`: an upload never sits in memory whole. `limits.max_upload_bytes` bounds
it (413). Every refusal of a request with a body reads and discards the body, so the next request on a kept-alive
connection is answered; when the body is more than `DISCARD_LIMIT_BYTES` or does not arrive in time, the answer
says `Connection: close` instead and the client must open a new connection (Hypercorn does not always close the
old one: the unread body can stall its reader until the client closes).
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from melvin_trio.audio import SAMPLE_RATE
from melvin_trio.audiofile import AudioFormatError, probe_audio
from melvin_trio.core.protocol import AUTO_LANGUAGE
from melvin_trio.core.words import Word, join_text, mean_log_probability
from melvin_trio.engine.base import BEAM_SIZES, TEMPERATURES
from melvin_trio.filetranscribe import segments
from melvin_trio.server.exports import ExportStore
from melvin_trio.server.jobs import JobRunner, JobSpec, JobStore, Status, job_object, new_job_id, spec_of, words_of
from melvin_trio.subtitles import render, words_from_finals

log = logging.getLogger(__name__)

DISCARD_LIMIT_BYTES: Final = 4 << 20
DISCARD_SECONDS: Final = 10.0
# whisper.cpp's own decoding settings a job may set, with their checks.
SETTINGS: Final[dict[str, tuple[type, float, float]]] = {
    "beam_size": (int, *BEAM_SIZES),
    "temperature": (float, *TEMPERATURES),
    "temperature_inc": (float, *TEMPERATURES),
    "initial_prompt": (str, 0, 2000),
}
TASKS: Final = ("transcribe", "translate")
ALIGN_TASKS: Final = ("align", "force-align")
OPENAI_FORMATS: Final = ("json", "text", "srt", "vtt", "verbose_json")
OPENAI_DEFAULT_MODEL: Final = "whisper-1"  # what OpenAI's examples send: the server's default model


class Refused(Exception):
    """A request the file API refuses: the status and the message the client gets."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass
class FileApi:
    store: JobStore
    runner: JobRunner
    exports: ExportStore
    authorised: Callable[[], bool]
    max_upload_bytes: int
    multilingual: Callable[[str], bool]  # model name -> whether it does other languages than English
    known_language: Callable[[str], bool]


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def _openai_error(status: int, message: str, param: str | None = None) -> tuple[Response, int]:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    return jsonify({"error": {"message": message, "type": kind, "param": param, "code": None}}), status


def _too_large(api: FileApi) -> Refused:
    """The refusal of an upload whose size was known only once it was read (no Content-Length)."""
    return Refused(413, f"upload larger than the limit of {api.max_upload_bytes} bytes")


async def _receive_upload(api: FileApi) -> tuple[dict[str, str], Path, str]:
    """The form's fields, and the file part copied into the job folder (its path and its name).

    Raises Refused (413 past the limit, 400 for a request that is not a multipart form with a file)."""
    length = request.content_length
    if length is not None and length > api.max_upload_bytes:
        raise Refused(413, f"upload of {length} bytes is larger than the limit of {api.max_upload_bytes} bytes")
    if request.mimetype != "multipart/form-data":
        raise Refused(400, "send the audio as a multipart/form-data form with a part named file")
    try:
        form = await request.form
        files = await request.files
    except RequestEntityTooLarge:
        raise _too_large(api) from None
    except HTTPException as exc:
        raise Refused(400, f"malformed form: {exc.description}") from None
    upload: FileStorage | None = files.get("file")
    if upload is None:
        raise Refused(400, "the form has no part named file (the audio)", "file")
    target = api.store.incoming_path()

    def copy() -> None:
        with target.open("wb") as out:
            shutil.copyfileobj(upload.stream, out, 1 << 20)
        upload.stream.close()

    await trio.to_thread.run_sync(copy)
    received = sum(len(v) for v in form.values()) + target.stat().st_size
    if received > api.max_upload_bytes:  # a chunked upload: no Content-Length said so before
        target.unlink(missing_ok=True)
        raise _too_large(api)
    fields = {k: str(v) for k, v in form.items()}
    fields["timestamp_granularities[]"] = ",".join(form.getlist("timestamp_granularities[]"))
    return fields, target, upload.filename or "upload"


async def _check_audio(path: Path, name: str) -> None:
    """Raises Refused (400) when the upload is not audio the reader can decode (its header and first second are
    read here; damage further in fails the job with a message)."""
    try:
        await trio.to_thread.run_sync(lambda: probe_audio(path, label=name))
    except AudioFormatError as exc:
        raise Refused(400, str(exc), "file") from None


def _settings(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Refused(400, f"settings: not valid JSON ({exc.msg})", "settings") from None
    except (ValueError, RecursionError):  # an integer past Python's 4300-digit limit, or nesting past recursion
        raise Refused(400, "settings: not valid JSON (a number or nesting too large)", "settings") from None
    if not isinstance(settings, dict):
        raise Refused(400, "settings: expected a JSON object", "settings")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise Refused(
            400,
            f"settings: not supported: {', '.join(unknown)} (supported: {', '.join(SETTINGS)})",
            "settings",
        )
    for key, value in settings.items():
        kind, low, high = SETTINGS[key]
        if kind is str:
            ok = isinstance(value, str) and len(value) <= high
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        if not ok:
            what = "a string" if kind is str else f"{'an integer' if kind is int else 'a number'} from {low} to {high}"
            raise Refused(400, f"settings: {key} must be {what}, got {value!r}", "settings")
    return settings


def _spec(api: FileApi, fields: dict[str, str], filename: str, *, model_status: int) -> JobSpec:
    """The job a form asks for. Raises Refused: an unknown model with `model_status` (418 for the original's API,
    as it answers), anything else with 400."""
    models = api.runner.models
    model = fields.get("model") or models[0]
    if model == OPENAI_DEFAULT_MODEL and model_status != 418:
        model = models[0]
    if model not in models:
        raise Refused(
            model_status, f"model {model!r} is not available; configured models: {', '.join(models)}", "model"
        )
    task = fields.get("task") or "transcribe"
    if task in ALIGN_TASKS:
        raise Refused(400, f"task {task!r} (forced alignment) is not supported; tasks: {', '.join(TASKS)}", "task")
    if task not in TASKS:
        raise Refused(400, f"unknown task {task!r}; tasks: {', '.join(TASKS)}", "task")
    language = (fields.get("language") or "").strip().lower() or None
    if language == AUTO_LANGUAGE:
        language = None  # detected, as when absent
    if language is not None and not api.known_language(language):
        raise Refused(400, f"unsupported language code: {language}", "language")
    if not api.multilingual(model):
        if language not in (None, "en"):
            raise Refused(400, f"model {model} is English-only and cannot transcribe language {language!r}", "language")
        if task == "translate":
            raise Refused(400, f"model {model} is English-only and cannot translate; use a multilingual model", "task")
        language = "en"
    settings = _settings(fields.get("settings"))
    job = spec_of({"model": model, "language": language, "task": task, "settings": settings, "filename": filename})
    return job


async def _create_job(api: FileApi, *, model_status: int, fields_hook: Callable[[dict[str, str]], None]) -> str:
    """Receive, check and queue a job; returns its id. Raises Refused."""
    fields, path, filename = await _receive_upload(api)
    try:
        fields_hook(fields)
        spec = _spec(api, fields, filename, model_status=model_status)
        await _check_audio(path, filename)
        job_id = new_job_id()
        path.replace(api.store.upload_path(job_id))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    api.store.put(job_object(job_id, spec, api.runner.node))
    api.runner.submit(job_id)
    log.info("job %s queued: %s, model %s, task %s", job_id, filename, spec.model, spec.task)
    return job_id


def _with_progress(api: FileApi, job: dict[str, Any]) -> dict[str, Any]:
    progress = api.runner.progress(job["transcription_id"])
    if progress is not None and job["status"] == Status.IN_PROGRESS:
        job = {**job, "progress": progress}
    return job


def _as_text(job: dict[str, Any]) -> str:
    return str((job.get("transcript") or {}).get("text", "")).strip() + "\n"


def register_file_api(
    app: QuartTrio,
    *,
    store: JobStore,
    runner: JobRunner,
    exports: ExportStore,
    authorised: Callable[[], bool],
    max_upload_bytes: int,
    multilingual: Callable[[str], bool],
    known_language: Callable[[str], bool],
) -> None:
    """Add the file routes to `app`, and the rule that a refused request's body is read or its connection closed."""
    api = FileApi(store, runner, exports, authorised, max_upload_bytes, multilingual, known_language)
    # Quart reads bodies up to this; past it, it drops the rest, and the hook below could not read a refused
    # body to keep the connection: so at least DISCARD_LIMIT_BYTES, and uploads are held to max_upload_bytes by
    # _receive_upload (by Content-Length, or by the bytes received for a chunked one).
    app.config["MAX_CONTENT_LENGTH"] = max(max_upload_bytes, DISCARD_LIMIT_BYTES)

    @app.post("/transcriptions")
    async def post_transcription() -> Any:
        """Queue a file job (multipart: file, language, model, task, settings); answers at once with the job."""
        if not api.authorised():
            return _error(401, "missing or invalid API key")
        try:
            job_id = await _create_job(api, model_status=418, fields_hook=lambda _: None)
        except Refused as exc:
            return _error(exc.status, exc.message)
        return jsonify(store.get(job_id))

    @app.get("/transcriptions")
    async def list_transcriptions() -> Any:
        """Every file job and its status."""
        if not api.authorised():
            return _error(401, "missing or invalid API key")
        return jsonify([{"transcription_id": j["transcription_id"], "status": j["status"]} for j in store.all()])

    @app.get("/transcriptions/<job_id>")
    async def get_transcription(job_id: str) -> Any:
        """A file job, with its transcript once finished (format=json|txt|srt|vtt)."""
        if not api.authorised():
            return _error(401, "missing or invalid API key")
        job = store.get(job_id)
        if job is None:
            return _error(404, "Transcription ID not found")
        fmt = request.args.get("format", "json")
        if fmt == "json":
            return jsonify(_with_progress(api, job))
        if fmt not in ("txt", "srt", "vtt"):
            return _error(400, f"unknown format {fmt!r}; formats: json, txt, srt, vtt")
        if job["status"] != Status.FINISHED:
            return _error(409, f"transcription is {job['status']}; {fmt} is available once it is finished")
        if fmt == "txt":
            return Response(_as_text(job), mimetype="text/plain")
        body = render(words_of(job), float(job.get("duration", 0.0)), fmt)
        return Response(body, mimetype="text/vtt" if fmt == "vtt" else "application/x-subrip")

    async def openai(task: str) -> Any:
        if not api.authorised():
            return _openai_error(401, "missing or invalid API key")
        holder: dict[str, str] = {}

        def openai_fields(fields: dict[str, str]) -> None:
            fields["task"] = task
            holder.update(fields)
            if fields.get("response_format", "json") not in OPENAI_FORMATS:
                raise Refused(400, f"response_format must be one of {', '.join(OPENAI_FORMATS)}", "response_format")
            settings: dict[str, Any] = {}
            if fields.get("prompt"):
                settings["initial_prompt"] = fields["prompt"]
            if fields.get("temperature"):
                try:
                    settings["temperature"] = float(fields["temperature"])
                except ValueError:
                    raise Refused(400, "temperature must be a number from 0 to 1", "temperature") from None
            fields["settings"] = json.dumps(settings)
            if task == "translate":
                fields.pop("language", None)

        try:
            job_id = await _create_job(api, model_status=404, fields_hook=openai_fields)
        except Refused as exc:
            return _openai_error(exc.status, exc.message, exc.param)
        await runner.wait(job_id)  # a client that goes away leaves the job running: GET /transcriptions has it
        job = store.get(job_id)
        if job is None or job["status"] != Status.FINISHED:
            message = (job or {}).get("message", "transcription failed")
            return _openai_error(400, str(message))
        return _openai_response(job, holder, task)

    @app.post("/v1/audio/transcriptions")
    async def openai_transcriptions() -> Any:
        """OpenAI-compatible transcription of an uploaded file (synchronous)."""
        return await openai("transcribe")

    @app.post("/v1/audio/translations")
    async def openai_translations() -> Any:
        """OpenAI-compatible translation into English of an uploaded file (synchronous)."""
        return await openai("translate")

    @app.get("/export/subtitles/<stream_id>")
    async def stream_subtitles(stream_id: str) -> Any:
        """A finished stream's transcript as subtitles (format=srt|vtt)."""
        if not api.authorised():
            return _error(401, "missing or invalid API key")
        fmt = request.args.get("format", "vtt")
        if fmt not in ("srt", "vtt"):
            return _error(400, f"unknown format {fmt!r}; formats: srt, vtt")
        transcript = exports.transcript_path(stream_id)
        audio = exports.audio_path(stream_id)
        if transcript is None or audio is None:
            return _error(404, "unknown id")
        finals = json.loads(transcript.read_text(encoding="utf-8"))
        duration = max(audio.stat().st_size - 44, 0) / (2 * SAMPLE_RATE)
        body = render(words_from_finals(finals if isinstance(finals, list) else []), duration, fmt)
        return Response(body, mimetype="text/vtt" if fmt == "vtt" else "application/x-subrip")

    @app.after_request
    async def discard_refused_body(response: Response) -> Response:
        """A refused request's body is read and dropped, so the connection can carry the next request; a body
        too large for that (or too slow) gets `Connection: close` instead: the client's next request needs a new
        connection."""
        if response.status_code < 400 or not _has_body():
            return response
        length = request.content_length
        if length is not None and length > DISCARD_LIMIT_BYTES:
            response.headers["Connection"] = "close"
            return response
        read = 0
        with trio.move_on_after(DISCARD_SECONDS) as scope:
            try:
                async for chunk in request.body:
                    read += len(chunk)
                    if read > DISCARD_LIMIT_BYTES:
                        break
            except RequestEntityTooLarge:
                read = DISCARD_LIMIT_BYTES + 1
        if scope.cancelled_caught or read > DISCARD_LIMIT_BYTES:
            response.headers["Connection"] = "close"
        return response


def _has_body() -> bool:
    length = request.content_length
    return (length is not None and length > 0) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _segment_quality(text: str, words: list[Word]) -> dict[str, float]:
    """OpenAI's per-segment quality fields. `avg_logprob`: the mean natural log of the segment's word probabilities
    (whisper.cpp's bindings give words, not the decoder's per-token log probabilities, which OpenAI averages);
    `compression_ratio`: the text's UTF-8 length over its zlib-compressed length, as openai-whisper computes it
    (whisper/utils.py); `no_speech_prob`: 0.0, not measured (the bindings do not expose it; segments are built
    from words, so each holds speech)."""
    logprob = mean_log_probability(words)
    raw = text.encode("utf-8")
    ratio = len(raw) / len(zlib.compress(raw)) if raw else 0.0
    return {"avg_logprob": round(logprob, 4), "compression_ratio": round(ratio, 4), "no_speech_prob": 0.0}


def _openai_response(job: dict[str, Any], fields: dict[str, str], task: str) -> Any:
    fmt = fields.get("response_format", "json")
    words = words_of(job)
    duration = float(job.get("duration", 0.0))
    text = join_text(words).strip()
    if fmt == "text":
        return Response(text + "\n", mimetype="text/plain")
    if fmt in ("srt", "vtt"):
        return Response(render(words, duration, fmt), mimetype="text/vtt" if fmt == "vtt" else "application/x-subrip")
    if fmt == "json":
        return jsonify({"text": text})
    granularities = {g for g in fields.get("timestamp_granularities[]", "").split(",") if g}
    body: dict[str, Any] = {
        "task": "translate" if task == "translate" else "transcribe",
        "language": job.get("language") or "",
        "duration": round(duration, 3),
        "text": text,
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": n,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                **_segment_quality(s.text, s.words),
            }
            for n, s in enumerate(segments(words))
        ]
    if "word" in granularities:
        body["words"] = [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in words]
    return jsonify(body)
