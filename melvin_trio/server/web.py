"""The live captioning page at `/`: static files shipped in the package (`melvin_trio/web/`), no CDN, no build step.

The page streams to the WebSocket server, which listens on another port than this REST app: `/web/config.json`
tells the page that port (the page derives `ws://` or `wss://` from its own address; its URL field overrides).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from quart import Response, jsonify, send_file
from quart_trio import QuartTrio

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"
_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
    ".md": "text/plain",
}
# The page talks to its own origin (REST) and to the WebSocket port, which is another origin: ws: and wss: allowed.
PAGE_POLICY: Final = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# ReDoc styles inline and runs its search in a worker made from a blob.
DOCS_POLICY: Final = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def register_web(app: QuartTrio, websocket_port: Callable[[], int | None], websocket_url: str | None = None) -> None:
    """Serve the page at `/`, its files at `/web/<name>` and `/web/config.json`. `websocket_port` is read per
    request: the WebSocket server binds after the REST app is built. `websocket_url`, when set, is the address the
    page connects to instead (a reverse proxy's)."""
    files = {p.name: p for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}

    async def _file(name: str) -> Any:
        path = files.get(name)
        if path is None:
            return jsonify({"error": "not found"}), 404
        response: Response = await send_file(path, mimetype=_TYPES[path.suffix])
        response.headers["Cache-Control"] = "no-cache"
        if name == "index.html":
            response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    @app.get("/")
    async def page() -> Any:
        """The live captioning page."""
        return await _file("index.html")

    @app.get("/web/config.json")
    async def web_config() -> Any:
        """What the page needs to know about this server: the WebSocket port."""
        return jsonify({"websocket_port": websocket_port(), "websocket_url": websocket_url})

    @app.get("/web/<name>")
    async def web_file(name: str) -> Any:
        """The page's scripts and style sheet."""
        return await _file(name)
