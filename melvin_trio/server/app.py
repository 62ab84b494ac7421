"""The server: one process, one root nursery holding the engine workers, the WebSocket server and the REST app.

`MelvinServer.serve` follows Trio's start protocol: `await nursery.start(server.serve)` returns the bound
addresses once both servers listen. `request_stop()` drains: no new clients, every open stream gets its last final
and its export within `limits.drain_seconds`, then everything stops.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Final

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio
from trio_websocket import WebSocketRequest, serve_websocket

from melvin_trio.config import Config
from melvin_trio.core.settings import StreamSettings
from melvin_trio.engine.base import Engine
from melvin_trio.server import logcontext
from melvin_trio.server.exports import ExportStore
from melvin_trio.server.filerest import register_file_api
from melvin_trio.server.jobs import JobRunner, JobStore
from melvin_trio.server.lock import (
    ROLE_RECOVERY,
    ROLE_RELEASED,
    NodeLock,
    NodeLockError,
    NodeLockHeld,
    other_node_ids,
    read_record,
    this_host,
)
from melvin_trio.server.metrics import Metrics, is_loopback, register_metrics
from melvin_trio.server.openapi import register_openapi
from melvin_trio.server.rest import create_rest_app
from melvin_trio.server.retention import purge_periodically
from melvin_trio.server.session import SessionContext, SessionSettings, handle_connection
from melvin_trio.server.tls import server_context
from melvin_trio.server.web import register_web
from melvin_trio.server.workers import EngineWorker, Seat, SeatPool

log = logging.getLogger(__name__)

LOCK_WAIT_S: Final = 15.0  # a survivor recovering this node's spools holds its lock this long at most, normally


@dataclass(frozen=True)
class ServerAddresses:
    websocket: tuple[str, int]
    rest: tuple[str, int]
    agent: tuple[str, int] | None = None


@dataclass
class EngineSection:
    """The workers of one config section (cuda or cpu) and the seats they serve."""

    kind: str
    workers: list[EngineWorker]
    seats: int


def stream_settings(config: Config) -> StreamSettings:
    return config.streaming


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
        node_lock: NodeLock | None = None,
    ) -> None:
        """`node_lock`: this node's lock, already taken (`take_node_lock`); `serve` takes it when None and
        releases it when it returns, either way."""
        self.config = config
        self.sections = sections
        logcontext.install()
        self.exports = ExportStore(config.data_dir, exports_dir=config.exports_dir, node_id=config.node)
        self.node_lock = node_lock or NodeLock(
            config.data_dir, config.node, stale_after=config.cluster.stale_after_seconds
        )
        self.seats = SeatPool(_seats(sections))
        self.tls = server_context(config)  # raises ConfigError for unusable certificate files
        self.metrics = Metrics()
        self.metrics.watch_seats({s.kind: s.seats for s in sections}, lambda: self.seats.waiting)
        for section in sections:
            for worker in section.workers:
                worker.metrics = self.metrics
        self._known_language = known_language
        by_model: dict[str, list[EngineWorker]] = {}
        for section in sections:
            for worker in section.workers:
                by_model.setdefault(worker.engine.info.model_name, []).append(worker)
        self.jobs = JobRunner(JobStore(config.data_dir), self.seats, by_model, config.node, config.streaming)
        self._multilingual = {w[0].engine.info.model_name: w[0].engine.info.multilingual for w in by_model.values()}
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
                finish_seconds=config.limits.drain_seconds,
            ),
            api_keys=self.api_keys,
            seats=self.seats,
            exports=self.exports,
            draining=self._draining,
            metrics=self.metrics,
        )

    def api_keys(self) -> frozenset[str]:
        """Read on every use, so a key added to the key file or removed from it takes effect at once."""
        return self.config.all_api_keys(self._environ)

    def _seat_counts(self) -> dict[str, int]:
        return {"total": self.seats.total, "free": self.seats.available, "waiting": self.seats.waiting}

    def _node_state(self) -> dict[str, object]:
        return {"node": self.config.node, "draining": self._draining.is_set() or self.stopping}

    def agent_reply(self) -> str:
        """What HAProxy's agent-check reads: `drain` while shutting down (no new clients, open streams go on), else
        `ready up N%` with N = 100 x seats, which on a server line of `weight 1` makes the weight the node's seat
        count. leastconn then picks the node with the fewest connections per seat: HAProxy counts every client it
        sent (seated or waiting) at once, so a full node gets a new client only when every node is full, with no
        lag. (A weight from the free seats would lag by one agent interval and, in a burst, send clients to the
        node whose report is oldest.)"""
        if self._draining.is_set() or self.stopping:
            return "drain\n"
        return f"ready up {100 * max(1, self.seats.total)}%\n"

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
        try:
            if not self.node_lock.held:
                await trio.to_thread.run_sync(take_node_lock, self.node_lock)
            await self._serve_locked(host, ws_port, rest_port, task_status)
        finally:
            self.node_lock.release()

    async def _serve_locked(
        self, host: str, ws_port: int, rest_port: int, task_status: trio.TaskStatus[ServerAddresses]
    ) -> None:
        self.exports.prepare()
        for stream_id in self.exports.recover():
            log.warning("recovered the interrupted stream %s from its spool", stream_id)
        async with trio.open_nursery() as root:
            keep_hours = self.config.keep_data_for_hours
            root.start_soon(purge_periodically, self.exports.purge_older_than, keep_hours, "export(s)")
            root.start_soon(self._keep_lock)
            agent_addr = None
            if self.config.cluster.agent_port is not None:
                agent_addr = await root.start(self._serve_agent, host, self.config.cluster.agent_port)
            await root.start(self.jobs.serve, self.config.keep_data_for_hours)
            for section in self.sections:
                for worker in section.workers:
                    await root.start(worker.serve, self.config.limits.engine_call_timeout_seconds)
            rest_stopped = trio.Event()
            rest_addr = await root.start(self._serve_rest, host, rest_port, rest_stopped)
            async with trio.open_nursery() as sessions:
                listen_scope = trio.CancelScope()
                ws_addr = await root.start(self._serve_websocket, host, ws_port, sessions, listen_scope)
                secure = "s" if self.tls else ""
                log.info("WebSocket on ws%s://%s:%d, REST on http%s://%s:%d", secure, *ws_addr, secure, *rest_addr)
                if agent_addr is not None:
                    log.info("HAProxy agent on %s:%d", *agent_addr)
                task_status.started(ServerAddresses(websocket=ws_addr, rest=rest_addr, agent=agent_addr))
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

    async def _keep_lock(self) -> None:
        """Every heartbeat_seconds: rewrite this node's heartbeat, then recover dead nodes' spools."""
        cluster = self.config.cluster
        while True:
            try:
                await trio.to_thread.run_sync(self.node_lock.heartbeat)
            except NodeLockError as exc:
                # Another node judged this one dead (its heartbeat could not be written in time) and took over.
                log.error("%s: this node no longer owns its spools; draining", exc)
                self.request_stop()
                return
            except OSError as exc:
                log.warning("could not write the heartbeat to %s: %s", self.node_lock.path, exc)
            if cluster.recover_dead_nodes:
                try:
                    for job_id in await trio.to_thread.run_sync(self._recover_dead_nodes):
                        self.jobs.submit(job_id)
                except OSError:
                    log.exception("recovering dead nodes' spools failed")
            await trio.sleep(cluster.heartbeat_seconds)

    def _recover_dead_nodes(self) -> list[str]:
        """Turn the spools of every node whose lock can be taken (its process is gone, its heartbeat stale) into
        exports, and adopt its unfinished file jobs (returned: the caller queues them). The lock is taken first, so
        a live owner's spools and jobs and a node another survivor is recovering are never touched."""
        config = self.config
        adopted: list[str] = []
        for other in other_node_ids(config.data_dir, config.node):
            # Cheapest look first (one small read): an owner on another host with a fresh heartbeat is alive.
            record = read_record(config.data_dir / "nodes" / f"{other}.lock")
            if (
                record is not None
                and record.host != this_host()
                and record.role != ROLE_RELEASED
                and record.age() < config.cluster.stale_after_seconds
            ):
                continue
            if not self.exports.has_spools(other) and not self.jobs.has_unfinished(other):
                continue
            lock = NodeLock(config.data_dir, other, stale_after=config.cluster.stale_after_seconds, role=ROLE_RECOVERY)
            try:
                previous = lock.acquire()
            except NodeLockHeld:
                continue  # alive, or being recovered by another node
            try:
                recovered = self.exports.recover_node(other)
                adopted += self.jobs.adopt(other)
            finally:
                lock.release()
            how = f"dead: {previous.describe()}" if previous else "stopped"
            for stream_id in recovered:
                log.warning("recovered the interrupted stream %s of node %s (%s) from its spool", stream_id, other, how)
        return adopted

    async def _serve_agent(
        self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """HAProxy's agent-check: one line per connection (`agent_reply`), then close."""

        async def answer(stream: trio.SocketStream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError), trio.move_on_after(5):
                async with stream:
                    await stream.send_all(self.agent_reply().encode("ascii"))

        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            task_status.started((host, bound[1]))
            await trio.serve_listeners(answer, listeners, handler_nursery=nursery)

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
                        self.tls,
                        handler_nursery=sessions,
                        max_message_size=self.config.limits.max_frame_bytes,
                        # A connection that never completes its handshake (closed or reset half-way) would
                        # otherwise be held for trio-websocket's default of 60 s.
                        connect_timeout=self.config.limits.auth_timeout_seconds,
                    )
                )
                self._websocket_port = ws_server.port
                task_status.started((host, ws_server.port))

    def build_rest_app(self, host: str) -> QuartTrio:
        """The REST app: exports and health, the live page, metrics, and the OpenAPI document of them all.
        `host` is the address it will listen on (metrics need the key off loopback unless configured)."""
        app = create_rest_app(
            self.exports,
            self.api_keys,
            self._seat_counts,
            self._node_state,
            file_api=self._register_file_api,
            streams_behind=lambda: self.metrics.behind,
        )
        register_web(app, lambda: self._websocket_port, self.config.page_websocket_url)
        require_key = self.config.metrics.require_key
        if require_key is None:
            require_key = not is_loopback(host)
        register_metrics(app, self.metrics, self.api_keys if require_key else None)
        register_openapi(app)  # last: it documents every route above
        return app

    def _register_file_api(self, app: QuartTrio, authorised: Callable[[], bool]) -> None:
        register_file_api(
            app,
            store=self.jobs.store,
            runner=self.jobs,
            exports=self.exports,
            authorised=authorised,
            max_upload_bytes=self.config.limits.max_upload_bytes,
            multilingual=lambda model: self._multilingual.get(model, False),
            known_language=self._known_language,
        )

    async def _serve_rest(
        self,
        host: str,
        port: int,
        stopped: trio.Event,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        app = self.build_rest_app(host)
        hconfig = hypercorn.config.Config()
        hconfig.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("hypercorn.error")
        hconfig.graceful_timeout = 2.0
        if self.tls is not None:
            hconfig.certfile = str(self.config.tls.certfile)
            hconfig.keyfile = str(self.config.tls.keyfile)
        async with trio.open_nursery() as inner:
            bound: list[str] = await inner.start(
                partial(hypercorn.trio.serve, app, hconfig, shutdown_trigger=stopped.wait)
            )
            bound_port = int(bound[0].rsplit(":", 1)[1])
            task_status.started((host, bound_port))


def take_node_lock(lock: NodeLock) -> None:
    """Take this node's lock before anything touches data_dir (blocking). Waits up to LOCK_WAIT_S while another
    node recovers this node's spools (a restart right after a crash); raises NodeLockHeld while a server owns it.
    Logs the take-over of a lock left by a crash."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            previous = lock.acquire()
            break
        except NodeLockHeld as exc:
            if exc.owner is None or exc.owner.role != ROLE_RECOVERY or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    if previous is not None:
        log.warning(
            "took over the lock of node %s left by %s (it did not stop cleanly)", lock.node_id, previous.describe()
        )
