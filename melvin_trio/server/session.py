"""One client connection, from the first message to the export.

Each connection has its own task group: a reader (audio and control frames in), a transcriber (turns on an
engine worker, events from the core) and a writer (messages out, in order). The decisions are the core's
(`StreamCore`); this module only moves bytes and waits.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from melvin_trio.audio import SAMPLE_RATE, SAMPLE_WIDTH, StreamResampler
from melvin_trio.core import protocol
from melvin_trio.core.stream import (
    Detected,
    Event,
    SendFinal,
    SendPartial,
    StreamCore,
    StreamSettings,
    TranscribeRequest,
)
from melvin_trio.engine.base import EngineError
from melvin_trio.server.exports import ExportStore, Recording
from melvin_trio.server.metrics import Metrics
from melvin_trio.server.workers import SeatPool

log = logging.getLogger(__name__)

OUTBOX_SIZE: Final = 16  # messages waiting for a slow client; beyond it the transcriber waits (back-pressure)
EXPORT_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class SessionSettings:
    stream: StreamSettings
    default_language: str | None
    english_only: bool  # some model a client may be seated on is English-only
    auth_timeout: float
    waiting_notice_interval: float
    known_language: Callable[[str], bool]
    max_backlog_seconds: float = 300.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0


@dataclass
class SessionContext:
    settings: SessionSettings
    api_keys: Callable[[], frozenset[str]]
    seats: SeatPool
    exports: ExportStore
    draining: trio.Event
    metrics: Metrics = field(default_factory=Metrics)


async def handle_connection(request: WebSocketRequest, ctx: SessionContext) -> None:
    """Serve one client. Never raises (except Cancelled): a failure ends this connection only."""
    ws = await request.accept()
    try:
        await _serve(ws, ctx)
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("connection failed")
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            await ws.aclose()


async def _serve(ws: WebSocketConnection, ctx: SessionContext) -> None:
    settings = ctx.settings
    with trio.move_on_after(settings.auth_timeout) as waited:
        first = await ws.get_message()
    if waited.cancelled_caught:
        log.info("closing a connection that sent no first message within %.0f s", settings.auth_timeout)
        ctx.metrics.login_refused("timeout")
        return
    auth = protocol.parse_auth(first, ctx.api_keys())
    if isinstance(auth, protocol.AuthFailed):
        ctx.metrics.login_refused(auth.message)
        await ws.send_message(auth.message)
        return
    language = protocol.choose_language(
        auth.language, settings.default_language, english_only=settings.english_only, known=settings.known_language
    )
    if isinstance(language, protocol.LanguageRefused):
        ctx.metrics.login_refused("language")
        await ws.send_message(language.message)
        return
    await Session(ws, ctx, StreamCore(settings.stream, language), sample_rate=auth.sample_rate).run()


class Session:
    def __init__(
        self, ws: WebSocketConnection, ctx: SessionContext, core: StreamCore, *, sample_rate: int = SAMPLE_RATE
    ) -> None:
        self.ws = ws
        self.ctx = ctx
        self.core = core
        self.stream_id = uuid.uuid4().hex
        # The export keeps the bytes as received, at the declared rate; the core hears them at 16 kHz.
        self.recording: Recording = ctx.exports.open_recording(self.stream_id, sample_rate)
        self._resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self._audio_arrived = trio.Event()
        self._eof_received = False
        self._client_gone = False
        self._error: str | None = None
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[str](OUTBOX_SIZE)
        self._writer_done = trio.Event()
        self._progress = trio.Event()  # set when the transcriber consumed audio
        self._covered_until = 0  # sample up to which engine passes have seen the audio (for the metrics)

    async def run(self) -> None:
        log.info("stream %s started (%d Hz audio)", self.stream_id, self.recording.sample_rate)
        self.ctx.metrics.stream_started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                nursery.start_soon(self._read, nursery.cancel_scope)
                nursery.start_soon(self._watch_drain)
                nursery.start_soon(self._keep_alive, nursery.cancel_scope)
                await self._transcribe()
                # The transcriber is done: every final is in the outbox. Let the writer send them, then stop.
                await self._outbox_send.aclose()
                await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(EXPORT_TIMEOUT_S) as scope:
                scope.shield = True
                self._export()
                self.ctx.metrics.stream_ended()
                if not self._client_gone:
                    await self._send_id()
                elif self._client_gone:
                    log.info("stream %s: client left without eof; exported as %s", self.stream_id, self.stream_id)

    def _export(self) -> None:
        try:
            self.recording.finish()
        except OSError:
            # The spool stays; the next start turns it into an export (ExportStore.recover).
            log.exception("stream %s: export failed; its spool is kept for recovery", self.stream_id)
            self.ctx.metrics.export_written(ok=False)
            with contextlib.suppress(OSError):
                self.recording.abandon()
            return
        self.ctx.metrics.export_written()
        log.info(
            "stream %s exported: %d bytes of audio, %d finals",
            self.stream_id,
            self.recording.audio_bytes,
            len(self.recording.finals),
        )

    async def _send_id(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send_message(self.stream_id)

    # --- reader ------------------------------------------------------------------------------------------------

    async def _read(self, session_scope: trio.CancelScope) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    if self._eof_received:
                        continue  # audio after eof is not part of the stream
                    if message:
                        await self._wait_for_room()
                        try:
                            self.recording.write_audio(message)
                        except OSError as exc:
                            await self._storage_failed(exc)
                            return
                        self.core.feed(self._resampler.feed(message) if self._resampler else message)
                        self.ctx.metrics.audio_in(len(message) / (self.recording.sample_rate * SAMPLE_WIDTH))
                        self._wake()
                elif protocol.is_eof(message):
                    self._end_input()
                else:
                    await self._outbox_send.send(protocol.CONTROL_UNKNOWN)
        except ConnectionClosed:
            if not self._eof_received:
                # The client vanished: nobody is left to read a final. Stop and export what arrived.
                self._client_gone = True
                session_scope.cancel()

    def _wake(self) -> None:
        self._audio_arrived.set()

    async def _wait_for_room(self) -> None:
        """Stop reading (TCP back-pressure on the client) while too much audio waits to be transcribed."""
        while self.core.buffered_seconds > self.ctx.settings.max_backlog_seconds and not self.core.finished:
            await self._progress.wait()
            self._progress = trio.Event()

    async def _storage_failed(self, error: OSError) -> None:
        """The disk refused the audio: end the stream cleanly, keeping what was written."""
        log.error("stream %s: cannot store audio: %s", self.stream_id, error)
        self._error = f"storage error: {error.strerror or error}"
        await self._outbox_send.send(protocol.storage_error(str(error.strerror or error)))
        self._end_input()

    def _end_input(self) -> None:
        """No more audio (eof, the server draining, a storage failure): the core gets what the resampler still
        holds, then the end of the stream. Idempotent."""
        if self._eof_received:
            return
        self._eof_received = True
        if self._resampler is not None:
            self.core.feed(self._resampler.flush())
        self.core.end_of_stream()
        self._wake()

    async def _wait_for_audio(self) -> None:
        await self._audio_arrived.wait()
        self._audio_arrived = trio.Event()

    async def _keep_alive(self, session_scope: trio.CancelScope) -> None:
        """Ping the client; one that does not answer in time is treated as gone."""
        settings = self.ctx.settings
        while True:
            await trio.sleep(settings.ping_interval)
            with trio.move_on_after(settings.ping_timeout) as waited:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    return
            if waited.cancelled_caught:
                log.info("stream %s: no answer to a ping within %.0f s; closing", self.stream_id, settings.ping_timeout)
                self._client_gone = True
                session_scope.cancel()
                return

    async def _watch_drain(self) -> None:
        await self.ctx.draining.wait()
        if not self._eof_received:
            log.info("stream %s: server shutting down, finishing the stream", self.stream_id)
            self._end_input()

    # --- writer ------------------------------------------------------------------------------------------------

    async def _write(self) -> None:
        try:
            async with self._outbox_receive:
                async for message in self._outbox_receive:
                    try:
                        await self.ws.send_message(message)
                    except ConnectionClosed:
                        self._client_gone = not self._eof_received
                        # Keep draining so the transcriber is never blocked by a client that left after eof.
        finally:
            self._writer_done.set()

    # --- transcriber -------------------------------------------------------------------------------------------

    async def _send_waiting_notices(self) -> None:
        """Runs while the stream waits for a seat; cancelled once it is seated."""
        log.info("stream %s waits for a seat (%d waiting)", self.stream_id, self.ctx.seats.waiting)
        while True:
            await self._outbox_send.send(protocol.WAITING_FOR_SEAT)
            await trio.sleep(self.ctx.settings.waiting_notice_interval)

    async def _transcribe(self) -> None:
        async with self.ctx.seats.open_seat(self._send_waiting_notices) as seat:
            log.info("stream %s seated on %s seat %d", self.stream_id, seat.kind, seat.index)
            self.ctx.metrics.seat_taken(seat.kind)
            try:
                while True:
                    await self._send_events(self.core.poll())
                    if self.core.finished:
                        break
                    if not self.core.pass_due():
                        await self._wait_for_audio()
                        continue
                    result = await seat.worker.submit(self, self.core.next_request)
                    if result is None:
                        self._progress.set()  # silence may have been dropped
                        continue
                    request, outcome = result
                    if isinstance(outcome, EngineError):
                        await self._fail(outcome)
                        return
                    if isinstance(outcome, Detected):
                        log.info(
                            "stream %s: language %s (p=%.2f)", self.stream_id, outcome.language, outcome.probability
                        )
                    elif isinstance(request, TranscribeRequest):
                        self.ctx.metrics.audio_covered((request.end_sample - self._covered_until) / SAMPLE_RATE)
                        self._covered_until = max(self._covered_until, request.end_sample)
                    await self._send_events(self.core.apply(request, outcome))
                    self._progress.set()
            finally:
                self.ctx.metrics.seat_returned(seat.kind)

    async def _fail(self, error: EngineError) -> None:
        log.error("stream %s: transcription failed: %s", self.stream_id, error)
        self._error = str(error)
        await self._outbox_send.send(protocol.transcription_failed(error))

    async def _send_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SendFinal):
                payload = protocol.final_payload(event.words)
                self.recording.add_final(payload)
                self.ctx.metrics.final_sent([w.end for w in event.words], self.core.received_seconds)
                await self._outbox_send.send(protocol.final_message(payload))
            elif isinstance(event, SendPartial):
                await self._outbox_send.send(protocol.partial_message(event.text))
