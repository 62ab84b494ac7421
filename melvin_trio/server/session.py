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
from melvin_trio.engine.base import EngineError, EngineTimedOut
from melvin_trio.server import logcontext
from melvin_trio.server.exports import ExportStore, Recording
from melvin_trio.server.metrics import Metrics
from melvin_trio.server.workers import SeatPool

log = logging.getLogger(__name__)

SPOOL_READ_BYTES: Final = 1 << 16  # audio read back from the spool per step when the core catches up
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
    # The limits below have their defaults in config.py (the one source); the server passes every one.
    max_backlog_seconds: float
    ping_interval: float
    ping_timeout: float
    # A seated stream whose client left without eof gets this long to transcribe the audio it received
    # (limits.drain_seconds: the time any ending stream gets for its last final and export).
    finish_seconds: float


@dataclass
class SessionContext:
    settings: SessionSettings
    api_keys: Callable[[], frozenset[str]]
    seats: SeatPool
    exports: ExportStore
    draining: trio.Event
    metrics: Metrics = field(default_factory=Metrics)


async def handle_connection(request: WebSocketRequest, ctx: SessionContext) -> None:
    """Serve one client. Never raises (except Cancelled): a failure ends this connection only. A client gone during
    the handshake (reset after its upgrade request) is no error of the server's: an OSError escaping here would end
    the WebSocket server and with it every other client."""
    try:
        logcontext.set_client(logcontext.client_address(request))
        ws = await request.accept()
    except (ConnectionClosed, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.info("client gone during the handshake: %s", exc)
        return
    except Exception:
        log.exception("handshake failed")
        return
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
        ctx.metrics.login_refused(auth.reason)
        log.warning("connection refused: %s", auth.message)  # the reason, never the key
        await ws.send_message(auth.message)
        return
    language = protocol.choose_language(
        auth.language, settings.default_language, english_only=settings.english_only, known=settings.known_language
    )
    if isinstance(language, protocol.LanguageRefused):
        ctx.metrics.login_refused("language")
        log.info("connection refused: %s", language.message)
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
        logcontext.set_stream(self.stream_id)
        # The export keeps the bytes as received, at the declared rate; the core hears them at 16 kHz.
        self.recording: Recording = ctx.exports.open_recording(self.stream_id, sample_rate)
        self._resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self._fed_bytes = 0  # bytes of the received audio handed to the core; the rest waits in the spool
        self._input_ended = False  # the core was told the stream ended
        self._audio_arrived = trio.Event()
        self._eof_received = False
        self._client_gone = False
        self._seated = False
        self._session_scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None  # the writer's current send
        self._error: str | None = None
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[str](OUTBOX_SIZE)
        self._writer_done = trio.Event()
        self._progress = trio.Event()  # set when the transcriber consumed audio
        self._covered_until = 0  # sample up to which engine passes have seen the audio (for the metrics)
        self._behind = False  # the core trails its audio by streaming.behind_seconds (reported once per change)

    async def run(self) -> None:
        log.info("stream %s started (%d Hz audio)", self.stream_id, self.recording.sample_rate)
        self.ctx.metrics.stream_started()
        try:
            async with trio.open_nursery() as nursery:
                self._session_scope = nursery.cancel_scope
                nursery.start_soon(self._write)
                nursery.start_soon(self._read)
                nursery.start_soon(self._watch_drain)
                nursery.start_soon(self._keep_alive)
                nursery.start_soon(self._catch_up_on_progress)
                await self._transcribe()
                # The transcriber is done: every final is in the outbox. Let the writer send them, then stop.
                await self._outbox_send.aclose()
                await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            if self._client_gone and self._seated and self._error is None and not self.core.finished:
                log.warning(
                    "stream %s: the client left and the last %.1f s of its audio were not transcribed within "
                    "limits.drain_seconds (%.0f s)",
                    self.stream_id,
                    self.core.lag_seconds,
                    self.ctx.settings.finish_seconds,
                )
            with trio.move_on_after(EXPORT_TIMEOUT_S) as scope:
                scope.shield = True
                self._export()
                self.ctx.metrics.stream_ended()
                if not self._client_gone:
                    await self._send_id()
                else:
                    log.info("stream %s: the client disconnected without eof; exported", self.stream_id)

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

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    if self._eof_received:
                        continue  # audio after eof is not part of the stream
                    if message:
                        try:
                            self.recording.write_audio(message)
                            self._catch_up()
                        except OSError as exc:
                            await self._storage_failed(exc)
                            return
                        self.ctx.metrics.audio_in(len(message) / (self.recording.sample_rate * SAMPLE_WIDTH))
                elif protocol.is_eof(message):
                    self._end_input()
                else:
                    await self._outbox_send.send(protocol.CONTROL_UNKNOWN)
        except ConnectionClosed:
            self._client_left()

    def _client_left(self) -> None:
        """The client is gone (closed, reset, or silent to pings). Nobody reads the finals any more, but the
        transcript export must hold the words of all the audio received, as it would after eof: a seated stream
        ends its input and finishes transcribing what it has, within `finish_seconds` (the seat is held that
        long at most); one still waiting for a seat gives up its place at once (live clients come first) and
        exports its audio only."""
        if not self._eof_received:
            self._client_gone = True
        if self._send_scope is not None:
            self._send_scope.cancel()  # a send to a peer that no longer reads must not hold up the finals
        assert self._session_scope is not None
        if not self._seated:
            self._session_scope.cancel()
            return
        self._end_input()
        deadline = trio.current_time() + self.ctx.settings.finish_seconds
        self._session_scope.deadline = min(self._session_scope.deadline, deadline)

    def _wake(self) -> None:
        self._audio_arrived.set()

    def _catch_up(self) -> None:
        """Hand the core the received audio it has not had yet, as far as its in-memory backlog allows
        (`max_backlog_seconds`). Past that the audio waits in the spool, which holds every byte anyway, and is read
        back as the transcriber makes room: the client is always read (so it always answers pings), memory stays
        bounded and nothing is dropped. Raises OSError (reading the spool back)."""
        limit = self.ctx.settings.max_backlog_seconds
        while self._fed_bytes < self.recording.audio_bytes and self.core.buffered_seconds <= limit:
            pcm = self.recording.read_audio(self._fed_bytes, SPOOL_READ_BYTES)
            if not pcm:
                break
            self.core.feed(self._resampler.feed(pcm) if self._resampler else pcm)
            self._fed_bytes += len(pcm)
            self._wake()
        self._end_core_input_if_fed()

    async def _catch_up_on_progress(self) -> None:
        while True:
            await self._progress.wait()
            self._progress = trio.Event()
            try:
                self._catch_up()
            except OSError as exc:
                await self._storage_failed(exc)
                return

    async def _storage_failed(self, error: OSError) -> None:
        """The disk refused the audio (or reading it back): end the stream cleanly, keeping what was written; the
        core ends with what it has had."""
        log.error("stream %s: cannot store audio: %s", self.stream_id, error)
        self._error = f"storage error: {error.strerror or error}"
        if self._fed_bytes < self.recording.audio_bytes:
            log.error(
                "stream %s: %d bytes of audio in the spool will not be transcribed",
                self.stream_id,
                self.recording.audio_bytes - self._fed_bytes,
            )
            self._fed_bytes = self.recording.audio_bytes
        self._end_input()
        await self._outbox_send.send(protocol.storage_error(str(error.strerror or error)))

    def _end_input(self) -> None:
        """No more audio (eof, the server draining, a storage failure). The core hears of it once it has had all
        the audio (some may still wait in the spool). Idempotent."""
        self._eof_received = True
        self._end_core_input_if_fed()

    def _end_core_input_if_fed(self) -> None:
        if self._input_ended or not self._eof_received or self._fed_bytes < self.recording.audio_bytes:
            return
        self._input_ended = True
        if self._resampler is not None:
            self.core.feed(self._resampler.flush())
        self.core.end_of_stream()
        self._wake()

    async def _wait_for_audio(self) -> None:
        await self._audio_arrived.wait()
        self._audio_arrived = trio.Event()

    async def _keep_alive(self) -> None:
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
                self._client_left()
                return

    async def _watch_drain(self) -> None:
        await self.ctx.draining.wait()
        if not self._eof_received:
            log.info("stream %s: server shutting down, finishing the stream", self.stream_id)
            self._end_input()
            # The client may go on sending (its audio is no longer read): tell it how much was taken, so that it
            # does not take its file as streamed in full (a fresh tester's client exited 0 after 15 of 33.7 s).
            seconds = self.recording.audio_bytes / (self.recording.sample_rate * SAMPLE_WIDTH)
            await self._outbox_send.send(protocol.server_stopping(seconds))

    # --- writer ------------------------------------------------------------------------------------------------

    async def _write(self) -> None:
        try:
            async with self._outbox_receive:
                async for message in self._outbox_receive:
                    if self._client_gone:
                        continue  # keep draining: the transcriber must never wait for a client that left
                    try:
                        with trio.CancelScope() as self._send_scope:
                            await self.ws.send_message(message)
                    except ConnectionClosed:
                        if not self._eof_received:
                            self._client_gone = True
                    finally:
                        self._send_scope = None
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
            self._seated = True
            log.info("stream %s seated on %s seat %d", self.stream_id, seat.kind, seat.index)
            self.ctx.metrics.seat_taken(seat.kind)
            timed_out_last = False  # the previous engine call passed its time limit
            debug = log.isEnabledFor(logging.DEBUG)
            try:
                while True:
                    await self._send_events(self.core.poll())
                    self._note_lag()
                    if self.core.finished:
                        break
                    if not self.core.pass_due():
                        await self._wait_for_audio()
                        continue
                    result = await seat.worker.submit(self, self.core.next_request, lambda: self.core.lag_seconds)
                    if result is None:
                        self._progress.set()  # silence may have been dropped
                        continue
                    request, outcome = result
                    if isinstance(outcome, EngineTimedOut) and (outcome.starved or not timed_out_last):
                        # A starved pass (a busy box), or one slow pass, is not a stuck engine: its audio is covered
                        # by the next pass, and the stream goes on behind. Two in a row that used the CPU end it.
                        log.warning("stream %s: %s; the pass is retried", self.stream_id, outcome)
                        self.core.abandon(request)
                        timed_out_last = True
                        continue
                    if isinstance(outcome, EngineError):
                        await self._fail(outcome)
                        return
                    timed_out_last = False
                    if isinstance(outcome, Detected):
                        log.info(
                            "stream %s: language %s (p=%.2f)", self.stream_id, outcome.language, outcome.probability
                        )
                    elif isinstance(request, TranscribeRequest) and not request.preview:  # a preview covers nothing
                        self.ctx.metrics.audio_covered((request.end_sample - self._covered_until) / SAMPLE_RATE)
                        self._covered_until = max(self._covered_until, request.end_sample)
                    if isinstance(request, TranscribeRequest) and isinstance(outcome, list) and debug:
                        # What whisper said of each window, at debug level: a fault seen in the field (a word's
                        # time, a word lost) is traced to its pass and replayed alone from the recording.
                        log.debug("stream %s: %s", self.stream_id, request.describe(outcome))
                    await self._send_events(self.core.apply(request, outcome))
                    self._progress.set()
            finally:
                if self._behind:
                    self.ctx.metrics.stream_behind(False)
                self.ctx.metrics.seat_returned(seat.kind)

    def _note_lag(self) -> None:
        """Log and count the moments the stream falls behind its audio and catches up (overload)."""
        behind = self.core.behind
        if behind == self._behind:
            return
        self._behind = behind
        self.ctx.metrics.stream_behind(behind)
        if behind:
            log.warning(
                "stream %s is behind: %.1f s of audio wait for the engine; partial passes paused until it catches up",
                self.stream_id,
                self.core.lag_seconds,
            )
        else:
            log.info("stream %s caught up (%.1f s behind)", self.stream_id, self.core.lag_seconds)

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
