"""Prometheus metrics: one `Metrics` object per server, on its own `CollectorRegistry` (never the global one, so
several servers in one process do not collide), served at `GET /metrics`.

The rest of the server calls a few plain methods here (`stream_started`, `final_sent`, `engine_pass`, ...); the
names, labels and buckets live only in this module. Seats are read when scraped, not counted twice.
"""

from __future__ import annotations

import ipaddress
import platform
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from melvin_trio.core import protocol

if TYPE_CHECKING:
    from quart_trio import QuartTrio

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Engine passes take 0.1-3 s on a CPU; final latency (stream time) is a few seconds, more under load.
PASS_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS: Final = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)

# Every label value refused logins can carry: a closed set, so no client can add a series.
REFUSAL_REASONS: Final = (*protocol.AUTH_REASONS, "timeout")  # "language": also a language the model cannot do


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


class _SeatCollector(Collector):
    """Seats by kind ("cpu", "cuda"): configured, and free (configured minus taken); streams waiting for one."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.taken: dict[str, int] = {}
        self.waiting: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total = GaugeMetricFamily("melvin_seats_total", "Worker seats configured", labels=["kind"])
        free = GaugeMetricFamily("melvin_seats_free", "Worker seats free now", labels=["kind"])
        for kind, n in sorted(self.totals.items()):
            total.add_metric([kind], n)
            free.add_metric([kind], n - self.taken.get(kind, 0))
        yield total
        yield free
        yield GaugeMetricFamily("melvin_streams_waiting", "Streams waiting for a seat", value=self.waiting())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._seats = _SeatCollector()
        r.register(self._seats)
        self.streams_active = Gauge(
            "melvin_streams_active", "Streams connected and authorised, seated or not", registry=r
        )
        self.streams = Counter("melvin_streams", "Streams started", registry=r)
        self.behind = 0  # streams behind now: /health reads it, and the gauge below
        self.streams_behind = Gauge(
            "melvin_streams_behind",
            "Streams whose untranscribed audio reached streaming.behind_seconds (overload: partial passes paused)",
            registry=r,
        )
        self.streams_behind.set_function(lambda: self.behind)
        self.refused = Counter(
            "melvin_logins_refused", "Connections refused before a stream began", ["reason"], registry=r
        )
        self.passes = Counter("melvin_engine_passes", "Engine calls", ["model", "kind", "outcome"], registry=r)
        self.pass_seconds = Histogram(
            "melvin_engine_pass_seconds", "Duration of one engine call", ["model"], buckets=PASS_BUCKETS, registry=r
        )
        self.audio_received = Counter("melvin_audio_received_seconds", "Stream audio received", registry=r)
        self.audio_transcribed = Counter(
            "melvin_audio_transcribed_seconds", "Stream audio covered by engine passes (each second once)", registry=r
        )
        self.final_latency = Histogram(
            "melvin_final_latency_seconds",
            "From a word's end to its final being sent, in stream time (audio received meanwhile)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.words = Counter("melvin_words_emitted", "Words sent in finals", registry=r)
        self.finals = Counter("melvin_finals_sent", "Final messages sent", registry=r)
        self.exports = Counter("melvin_exports_written", "Exports written", ["outcome"], registry=r)
        self.file_jobs = Counter(
            "melvin_file_jobs", "File transcription jobs by the status they reached", ["status"], registry=r
        )
        self.build = Info("melvin_build", "Version of the server and its engine", registry=r)
        self.build.info(
            {
                "version": _version("melvin-trio"),
                "pywhispercpp": _version("pywhispercpp"),
                "python": platform.python_version(),
            }
        )

    # --- what the server calls ---------------------------------------------------------------------------------

    def watch_seats(self, totals: dict[str, int], waiting: Callable[[], int]) -> None:
        """Seats configured per kind, and how to read the number of streams waiting (read when scraped)."""
        self._seats.totals = dict(totals)
        self._seats.waiting = waiting

    def seat_taken(self, kind: str) -> None:
        self._seats.taken[kind] = self._seats.taken.get(kind, 0) + 1

    def seat_returned(self, kind: str) -> None:
        self._seats.taken[kind] = self._seats.taken.get(kind, 0) - 1

    def login_refused(self, reason: str) -> None:
        """`reason`: one of REFUSAL_REASONS (protocol.AuthFailed.reason, language, timeout). Raises ValueError
        for another value rather than let a free text become a label."""
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.refused.labels(reason).inc()

    def stream_started(self) -> None:
        self.streams.inc()
        self.streams_active.inc()

    def stream_ended(self) -> None:
        self.streams_active.dec()

    def stream_behind(self, behind: bool) -> None:
        """A stream fell behind (True) or caught up (False)."""
        self.behind += 1 if behind else -1

    def audio_in(self, seconds: float) -> None:
        self.audio_received.inc(seconds)

    def audio_covered(self, seconds: float) -> None:
        if seconds > 0:
            self.audio_transcribed.inc(seconds)

    def engine_pass(self, model: str, kind: str, seconds: float, ok: bool) -> None:
        """kind: transcribe or detect."""
        self.passes.labels(model, kind, "ok" if ok else "error").inc()
        self.pass_seconds.labels(model).observe(seconds)

    def final_sent(self, word_ends: list[float], stream_seconds: float) -> None:
        """A final with words ending at `word_ends` went out when `stream_seconds` of audio had arrived."""
        self.finals.inc()
        self.words.inc(len(word_ends))
        for end in word_ends:
            self.final_latency.observe(max(0.0, stream_seconds - end))

    def export_written(self, ok: bool = True) -> None:
        self.exports.labels("ok" if ok else "failed").inc()

    def file_job(self, status: str) -> None:
        """For file jobs: call once per status a job reaches (queued, running, done, failed)."""
        self.file_jobs.labels(status).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def register_metrics(app: QuartTrio, metrics: Metrics, api_keys: Callable[[], frozenset[str]] | None) -> None:
    """`GET /metrics` in Prometheus' text format; with `api_keys`, only for a request with a valid key."""

    from quart import Response

    from melvin_trio.server.rest import _authorised as authorised

    @app.get("/metrics")
    async def scrape() -> Any:
        """Prometheus metrics (text exposition format)."""
        if api_keys is not None and not authorised(api_keys()):
            return Response('{"error": "missing or invalid API key"}', 401, content_type="application/json")
        return Response(metrics.exposition(), 200, content_type=CONTENT_TYPE)
