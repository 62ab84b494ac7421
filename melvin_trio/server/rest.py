"""The REST exports, on Quart-Trio: `/export/transcript/<id>`, `/export/audio/<id>`, `/health`.

Built by a factory with explicit dependencies (no app at import time). An id that is not 32 lower-case hex
characters is a 404 before any file-system access, so no path can leave `data_dir`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from quart import Response, jsonify, request, send_file
from quart_trio import QuartTrio
from quart_trio.wrappers.response import TrioFileBody

from melvin_trio.server.exports import ExportStore
from melvin_trio.server.ranges import Unsatisfiable, requested_range


def _presented_key(header: str | None) -> str | None:
    """The key from `Authorization: <key>` (the original's form) or `Authorization: Bearer <key>`."""
    if not header:
        return None
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def _authorised(keys: frozenset[str]) -> bool:
    presented = _presented_key(request.headers.get("Authorization"))
    if presented is None:
        return False
    encoded = presented.encode("utf-8", errors="surrogatepass")
    found = False
    for key in keys:  # constant time per key, and every key is tried
        found |= hmac.compare_digest(encoded, key.encode("utf-8", errors="surrogatepass"))
    return found


def _private(response: Response) -> Response:
    """Exports are one client's recordings: no shared cache may keep or hand them on."""
    response.headers["Cache-Control"] = "private, no-store"
    response.headers.pop("Expires", None)
    return response


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def create_rest_app(
    store: ExportStore,
    api_keys: Callable[[], frozenset[str]],
    seats: Callable[[], dict[str, int]] | None = None,
    node: Callable[[], dict[str, object]] | None = None,
    file_api: Callable[[QuartTrio, Callable[[], bool]], None] | None = None,
    streams_behind: Callable[[], int] | None = None,
) -> QuartTrio:
    """`seats` reports the worker seats for /health (total, free, waiting): what a load balancer or an operator
    needs to know, and nothing secret; `streams_behind` how many streams trail their audio by
    `streaming.behind_seconds` or more (the server is overloaded).
    `node` gives the node's id and whether it drains; a draining node answers
    /health with 503, so a load balancer sends it nothing new."""
    app = QuartTrio("melvin_trio")
    app.config["MAX_CONTENT_LENGTH"] = 1024  # nothing here accepts a body

    @app.get("/health")
    async def health() -> Any:
        state = node() if node else {}
        draining = bool(state.get("draining"))
        body: dict[str, object] = {"status": "draining" if draining else "ok", **({"seats": seats()} if seats else {})}
        if streams_behind is not None:
            body["streams_behind"] = streams_behind()
        if "node" in state:
            body["node"] = state["node"]
        return jsonify(body), 503 if draining else 200

    @app.get("/export/transcript/<stream_id>")
    async def transcript(stream_id: str) -> Any:
        if not _authorised(api_keys()):
            return _error(401, "missing or invalid API key")
        path = store.transcript_path(stream_id)
        if path is None:
            return _error(404, "unknown id")
        return _private(await send_file(path, mimetype="application/json"))

    @app.route("/export/audio/<stream_id>", methods=["GET", "HEAD"])
    async def audio(stream_id: str) -> Any:
        if not _authorised(api_keys()):
            return _error(401, "missing or invalid API key")
        path = store.audio_path(stream_id)
        if path is None:
            return _error(404, "unknown id")
        size = path.stat().st_size
        wanted = requested_range(request.headers.get("Range"), size)
        if isinstance(wanted, Unsatisfiable):
            refused = Response(b"", status=416, headers={"Content-Range": wanted.content_range(size)})
            refused.headers["Accept-Ranges"] = "bytes"
            return _private(refused)
        if request.method == "HEAD":
            # Answered without a file body: under Hypercorn a HEAD response's body is never read, and a file
            # opened for it would stay open.
            response = Response(b"", headers={"Content-Type": "audio/wav"})
            response.content_length = size
        else:
            response = await send_file(path, mimetype="audio/wav", add_etags=True)
        response.headers["Content-Disposition"] = f"attachment; filename={stream_id}.wav"
        response.headers["Accept-Ranges"] = "bytes"
        if_range = request.headers.get("If-Range")
        if wanted is not None and (if_range is None or if_range == response.headers.get("ETag")):
            response.status_code = 206
            response.headers["Content-Range"] = wanted.content_range(size)
            if request.method != "HEAD":
                body = response.response
                assert isinstance(body, TrioFileBody)  # what QuartTrio's send_file makes
                body.begin, body.end = wanted.first, wanted.last + 1
            response.content_length = wanted.length
        return _private(response)

    if file_api is not None:  # /transcriptions, /v1/audio/*, /export/subtitles (server/filerest.py)
        file_api(app, lambda: _authorised(api_keys()))

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Any:
        return _error(404, "not found")

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Any:
        return _error(405, "method not allowed")

    return app
