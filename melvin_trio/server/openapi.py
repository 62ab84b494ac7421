"""The REST API described as OpenAPI 3.1 at `/openapi.json` (quart-schema, over every route in the app's url_map),
and a docs page at `/docs` rendered by ReDoc, vendored in `melvin_trio/web/` (MIT; no CDN, edge boxes are offline).

JSON shapes are dataclasses declared here once; routes that validate their bodies (`quart_schema.validate_request`,
`validate_response`) are documented by those same declarations. The routes of `rest.py` and of the page answer
with files or hand-built JSON, so this module attaches their documentation by endpoint name (`_DOCUMENTED`). A route
nobody documented still appears, with no responses: `tests/test_openapi.py` fails on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

import msgspec
from quart import Response, send_file
from quart_schema import QuartSchema, document_response, hide, security_scheme
from quart_schema.conversion import MSGSPEC_REF_TEMPLATE
from quart_schema.openapi import OpenAPIProvider
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
    QUART_SCHEMA_RESPONSE_ATTRIBUTE,
)
from quart_trio import QuartTrio
from werkzeug.routing import Rule

from melvin_trio.server.web import DOCS_POLICY, WEB_DIR

KEY_SCHEME: Final = "apiKey"


@dataclass
class SeatCounts:
    total: int
    free: int
    waiting: int


@dataclass
class Health:
    """The server is up (200), or draining: it takes no new clients (503)."""

    status: str
    seats: SeatCounts | None = None
    streams_behind: int | None = None  # streams trailing their audio by streaming.behind_seconds: overloaded
    node: str | None = None


@dataclass
class ErrorBody:
    """What went wrong."""

    error: str


@dataclass
class FinalWord:
    conf: float
    start: float  # seconds from the stream's first audio byte
    end: float
    word: str


@dataclass
class FinalMessage:
    """The stream's finals exactly as sent on the WebSocket, in order (a JSON array of these)."""

    result: list[FinalWord]
    text: str


@dataclass
class PageConfig:
    """What the live page needs: the WebSocket port (null until the WebSocket server listens), and the URL to use
    instead when the operator configured one (page_websocket_url)."""

    websocket_port: int | None
    websocket_url: str | None


@dataclass
class Job:
    """A file transcription job (the original Melvin ASR's shape; more fields once it is finished)."""

    transcription_id: str
    status: str
    start_time: str
    model: str
    task: str
    language: str | None
    progress: float
    filename: str
    node: str  # the node_id of the server that runs it
    settings: dict[str, Any]


@dataclass
class JobSummary:
    """One job of the list."""

    transcription_id: str
    status: str


@dataclass
class OpenAIErrorDetail:
    message: str
    type: str
    param: str | None
    code: str | None


@dataclass
class OpenAIError:
    """An error in OpenAI's shape."""

    error: OpenAIErrorDetail


@dataclass
class OpenAITranscription:
    """`response_format=json` (text, srt and vtt are plain text; verbose_json adds segments and words)."""

    text: str


_SUBTITLES: Final = ("text/vtt", "application/x-subrip")
# Non-JSON answers: (description, media types of the 200 answer) per endpoint; quart-schema documents JSON only.
_RAW: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "audio": ("The stream's audio exactly as received (16-bit PCM WAV); byte ranges answered with 206", ("audio/wav",)),
    "scrape": ("Prometheus text exposition format", ("text/plain",)),
    "page": ("The live captioning page", ("text/html",)),
    "web_file": ("A file of the page (script, style sheet, worklet, licence)", ("application/octet-stream",)),
    "docs": ("This documentation (ReDoc, served from this server)", ("text/html",)),
    "openapi": ("This OpenAPI document", ("application/json",)),
    "stream_subtitles": ("Subtitles of a finished stream", _SUBTITLES),
    "get_transcription": ("The job (format=json), or its text or subtitles once finished", ("text/plain", *_SUBTITLES)),
    "openai_transcriptions": ("The transcript in the asked response_format", ("text/plain", *_SUBTITLES)),
    "openai_translations": ("The English translation in the asked response_format", ("text/plain", *_SUBTITLES)),
}
# JSON answers by endpoint: status -> model.
_DOCUMENTED: Final[dict[str, dict[int, type]]] = {
    "health": {200: Health, 503: Health},
    "transcript": {200: FinalMessage, 401: ErrorBody, 404: ErrorBody},
    "audio": {401: ErrorBody, 404: ErrorBody},
    "scrape": {401: ErrorBody},
    "web_config": {200: PageConfig},
    "web_file": {404: ErrorBody},
    # The file API (server/filerest.py).
    "post_transcription": {200: Job, 400: ErrorBody, 401: ErrorBody, 413: ErrorBody, 418: ErrorBody},
    "list_transcriptions": {200: JobSummary, 401: ErrorBody},
    "get_transcription": {200: Job, 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody},
    "openai_transcriptions": {200: OpenAITranscription, 400: OpenAIError, 401: OpenAIError, 404: OpenAIError},
    "openai_translations": {200: OpenAITranscription, 400: OpenAIError, 401: OpenAIError, 404: OpenAIError},
    "stream_subtitles": {400: ErrorBody, 401: ErrorBody, 404: ErrorBody},
}
_ARRAYS: Final = frozenset({"transcript", "list_transcriptions"})  # 200 is a JSON array of the model
_SECURED: Final = frozenset(
    {
        "transcript",
        "audio",
        "scrape",
        "post_transcription",
        "list_transcriptions",
        "get_transcription",
        "openai_transcriptions",
        "openai_translations",
        "stream_subtitles",
    }
)
# Summaries of views without a docstring.
_SUMMARIES: Final = {
    "health": "Liveness and worker seats, for load balancers and operators (no key)",
    "transcript": "The transcript export of a finished stream: its finals as sent",
    "audio": "The audio export of a finished stream (GET, HEAD, byte ranges)",
    "post_transcription": "Upload an audio file to transcribe (the original Melvin ASR's file API)",
    "list_transcriptions": "Every file transcription job and its status",
    "get_transcription": "One job: its status, progress and transcript (format=json, txt, srt or vtt)",
    "openai_transcriptions": "Transcribe an uploaded file (OpenAI's API; waits for the result)",
    "openai_translations": "Translate an uploaded file into English text (OpenAI's API; waits for the result)",
    "stream_subtitles": "Subtitles of a finished stream (format=vtt or srt)",
}
_FILE_PART: Final = {"type": "string", "format": "binary", "description": "the audio (any format the server reads)"}
_STRING: Final = {"type": "string"}
# Multipart forms: endpoint -> (properties, required).
_FORMS: Final[dict[str, dict[str, Any]]] = {
    "post_transcription": {
        "file": _FILE_PART,
        "model": _STRING,
        "language": _STRING,
        "task": {"type": "string", "enum": ["transcribe", "translate"]},
        "settings": {"type": "string", "description": "JSON: beam_size, temperature, temperature_inc, initial_prompt"},
    },
    **{
        endpoint: {
            "file": _FILE_PART,
            "model": _STRING,
            "language": _STRING,
            "prompt": _STRING,
            "temperature": {"type": "number"},
            "response_format": {"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"]},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
        }
        for endpoint in ("openai_transcriptions", "openai_translations")
    },
}
_QUERY: Final[dict[str, list[dict[str, Any]]]] = {
    "get_transcription": [
        {"in": "query", "name": "format", "schema": {"type": "string", "enum": ["json", "txt", "srt", "vtt"]}}
    ],
    "stream_subtitles": [{"in": "query", "name": "format", "schema": {"type": "string", "enum": ["vtt", "srt"]}}],
}


class _Provider(OpenAPIProvider):
    """quart-schema's document, plus the non-JSON answers, forms, query parameters, arrays, and the nested models'
    definitions (quart-schema 0.25 drops them when msgspec builds the schema)."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        models: list[Any] = []
        for func in self._app.view_functions.values():
            for _, (model, headers) in getattr(func, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {}).items():
                models += [model] if headers is None else [model, headers]
            for name in (QUART_SCHEMA_REQUEST_ATTRIBUTE, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE):
                attached = getattr(func, name, None)
                if attached is not None:
                    models.append(attached[0] if isinstance(attached, tuple) else attached)
        if models:
            _, definitions = msgspec.json.schema_components(models, ref_template=MSGSPEC_REF_TEMPLATE)
            document["components"]["schemas"] = {**definitions, **document["components"]["schemas"]}
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        endpoint = rule.endpoint
        for operations in paths.values():
            for operation in operations.values():
                if not operation.get("summary") and endpoint in _SUMMARIES:
                    operation["summary"] = _SUMMARIES[endpoint]
                responses = operation["responses"]
                if endpoint in _ARRAYS:
                    ok = responses[200]["content"]["application/json"]
                    if ok["schema"].get("type") != "array":  # operations of one rule share their answers
                        ok["schema"] = {"type": "array", "items": ok["schema"]}
                if endpoint in _RAW:
                    description, media_types = _RAW[endpoint]
                    answer = responses.setdefault(200, {"description": description, "content": {}})
                    answer["description"] = description
                    for media_type in media_types:
                        answer["content"].setdefault(media_type, {"schema": {}})
                if endpoint in _FORMS:
                    operation["requestBody"] = {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {"type": "object", "properties": _FORMS[endpoint], "required": ["file"]}
                            }
                        },
                    }
                if endpoint in _QUERY:
                    operation["parameters"] = [*operation["parameters"], *_QUERY[endpoint]]
                operation["responses"] = {str(k): v for k, v in sorted(responses.items(), key=lambda kv: str(kv[0]))}
        return paths, components


def register_openapi(app: QuartTrio) -> None:
    """Add `/openapi.json` and `/docs`. Call it after every other route is registered (the document itself is built
    per request, so later routes appear too)."""
    hide(app.send_static_file.__func__)  # type: ignore[attr-defined]  # Quart's unused static/ route, as quart-schema does
    for endpoint, responses in _DOCUMENTED.items():
        func = app.view_functions.get(endpoint)
        if func is None:
            continue
        for status, model in responses.items():
            func = document_response(model, status)(func)
        if endpoint in _SECURED:
            security_scheme([{KEY_SCHEME: []}])(func)
    schema = QuartSchema(
        app,
        openapi_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info={"title": "melvin-trio REST API", "version": _version()},
        security_schemes={KEY_SCHEME: {"type": "apiKey", "in_": "header", "name": "Authorization"}},
        conversion_preference="msgspec",
        openapi_provider_class=_Provider,
    )
    provider: Callable[[], dict[str, Any]] = schema.openapi_provider.schema

    @app.get("/openapi.json")
    async def openapi() -> Any:
        """The OpenAPI 3.1 document of this REST API."""
        return provider()

    @app.get("/docs")
    async def docs() -> Any:
        """The API documentation page (ReDoc, served by this server; no external request)."""
        response: Response = await send_file(WEB_DIR / "docs.html", mimetype="text/html")
        response.headers["Content-Security-Policy"] = DOCS_POLICY
        return response


def _version() -> str:
    try:
        return metadata.version("melvin-trio")
    except metadata.PackageNotFoundError:
        return "0"
