"""The server: one process, one root nursery holding the engine workers, the WebSocket server and the REST app.

`MelvinServer.serve` follows Trio's start protocol: `await nursery.start(server.serve)` returns the bound
addresses once both servers listen. `request_stop()` drains: no new clients, every open stream gets its last final
and its export within `limits.drain_seconds`, then everything stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Final

import hypercorn.config
import hypercorn.trio
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from melvin_trio.config import Config
from melvin_trio.core.stream import StreamSettings
from melvin_trio.core.vad import VadSettings
from melvin_trio.engine.base import Engine
from melvin_trio.server.exports import ExportStore
from melvin_trio.server.rest import create_rest_app
from melvin_trio.server.session import SessionContext, SessionSettings, handle_connection
from melvin_trio.server.web import register_web
from melvin_trio.server.workers import EngineWorker, Seat, SeatPool

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S: Final = 600.0


@dataclass(frozen=True)
class ServerAddresses:
    websocket: tuple[str, int]
    rest: tuple[str, int]


@dataclass
class EngineSection:
    """The workers of one config section (cuda or cpu) and the seats they serve."""

    kind: str
    workers: list[EngineWorker]
    seats: int


def stream_settings(config: Config) -> StreamSettings:
    st = config.streaming
    return StreamSettings(
        window_seconds=st.window_seconds,
        trim_seconds=st.trim_seconds,
        min_new_audio_seconds=st.min_new_audio_seconds,
        final_after_words=st.final_after_words,
        final_after_seconds=st.final_after_seconds,
        prompt_chars=st.prompt_chars,
        pause_seconds=st.pause_seconds,
        short_pause_seconds=st.short_pause_seconds,
        vad=VadSettings(
            absolute_floor_db=st.vad_absolute_floor_db,
            margin_db=st.vad_margin_db,
            pause_margin_db=st.vad_pause_margin_db,
            min_speech_seconds=st.vad_min_speech_seconds,
        ),
    )


def _seats(sections: list[EngineSection]) -> list[Seat]:
    seats = []
    for section in sections:
        for index in range(section.seats):
            seats.append(Seat(section.kind, index, section.workers[index % len(section.workers)]))
    return seats


class MelvinServer:
    def __init__(
        self,
        config: Config,
        sections: list[EngineSection],
        *,
        known_language: Callable[[str], bool],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.sections = sections
        self.exports = ExportStore(config.data_dir)
        self.seats = SeatPool(_seats(sections))
        self._environ = environ
        engines: list[Engine] = [w.engine for s in sections for w in s.workers]
        self._draining = trio.Event()
        self._stop = trio.Event()
        self._websocket_port: int | None = None  # known once the WebSocket server listens
        self._context = SessionContext(
            settings=SessionSettings(
                stream=stream_settings(config),
                default_language=config.transcription_default.language,
                english_only=any(not e.info.multilingual for e in engines),
                auth_timeout=config.limits.auth_timeout_seconds,
                waiting_notice_interval=config.limits.waiting_notice_seconds,
                known_language=known_language,
                max_backlog_seconds=config.limits.max_backlog_seconds,
                ping_interval=config.limits.ping_interval_seconds,
                ping_timeout=config.limits.ping_timeout_seconds,
            ),
            api_keys=self.api_keys,
            seats=self.seats,
            exports=self.exports,
            draining=self._draining,
        )

    def api_keys(self) -> frozenset[str]:
        """Read on every use, so a key added to the key file or removed from it takes effect at once."""
        return self.config.all_api_keys(self._environ)

    def _seat_counts(self) -> dict[str, int]:
        return {"total": self.seats.total, "free": self.seats.available, "waiting": self.seats.waiting}

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        self._stop.set()

    async def serve(
        self,
        *,
        host: str | None = None,
        websocket_port: int | None = None,
        rest_port: int | None = None,
        task_status: trio.TaskStatus[ServerAddresses] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until `request_stop()` (then drain) or cancellation. Raises OSError if a port cannot be bound."""
        host = host or self.config.host
        ws_port = self.config.websocket_port if websocket_port is None else websocket_port
        rest_port = self.config.rest_port if rest_port is None else rest_port
        self.exports.prepare()
        for stream_id in self.exports.recover():
            log.warning("recovered the interrupted stream %s from its spool", stream_id)
        async with trio.open_nursery() as root:
            root.start_soon(self._purge_old_exports)
            for section in self.sections:
                for worker in section.workers:
                    await root.start(worker.serve, self.config.limits.engine_call_timeout_seconds)
            rest_stopped = trio.Event()
            rest_addr = await root.start(self._serve_rest, host, rest_port, rest_stopped)
            async with trio.open_nursery() as sessions:
                listen_scope = trio.CancelScope()
                ws_addr = await root.start(self._serve_websocket, host, ws_port, sessions, listen_scope)
                log.info("WebSocket on ws://%s:%d, REST on http://%s:%d", *ws_addr, *rest_addr)
                task_status.started(ServerAddresses(websocket=ws_addr, rest=rest_addr))
                await self._stop.wait()
                log.info("shutting down: no new clients; open streams get %.0f s", self.config.limits.drain_seconds)
                listen_scope.cancel()
                self._draining.set()
                sessions.cancel_scope.deadline = trio.current_time() + self.config.limits.drain_seconds
            rest_stopped.set()
            for section in self.sections:
                for worker in section.workers:
                    log.info("worker %s: %d calls, busy %.2f s", worker.name, worker.calls, worker.busy_seconds)
            root.cancel_scope.cancel()

    async def _purge_old_exports(self) -> None:
        """Delete exports older than keep_data_for_hours, at start and then every RETENTION_INTERVAL_S."""
        hours = self.config.keep_data_for_hours
        while True:
            try:
                purged = self.exports.purge_older_than(hours)
            except OSError:
                log.exception("deleting old exports failed")
            else:
                if purged:
                    log.info("deleted %d export(s) older than %g hours", len(purged), hours)
            await trio.sleep(min(RETENTION_INTERVAL_S, hours * 3600 / 4))

    async def _serve_websocket(
        self,
        host: str,
        port: int,
        sessions: trio.Nursery,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def handler(request: WebSocketRequest) -> None:
            await handle_connection(request, self._context)

        with scope:
            async with trio.open_nursery() as listener:
                ws_server = await listener.start(
                    partial(
                        serve_websocket,
                        handler,
                        host,
                        port,
                        None,
                        handler_nursery=sessions,
                        max_message_size=self.config.limits.max_frame_bytes,
                    )
                )
                self._websocket_port = ws_server.port
                task_status.started((host, ws_server.port))

    async def _serve_rest(
        self,
        host: str,
        port: int,
        stopped: trio.Event,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        app = create_rest_app(self.exports, self.api_keys, self._seat_counts)
        register_web(app, lambda: self._websocket_port)
        hconfig = hypercorn.config.Config()
        hconfig.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("hypercorn.error")
        hconfig.graceful_timeout = 2.0
        async with trio.open_nursery() as inner:
            bound: list[str] = await inner.start(
                partial(hypercorn.trio.serve, app, hconfig, shutdown_trigger=stopped.wait)
            )
            bound_port = int(bound[0].rsplit(":", 1)[1])
            task_status.started((host, bound_port))
