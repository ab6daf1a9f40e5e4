"""A worker's Prometheus metrics and health, served over HTTP (`bridge worker --metrics-port`).

GET /metrics: Prometheus text. GET /healthz: 200 while the worker loop runs and its last poll of
the lake succeeded within 3 poll intervals (the current one, which grows while idle), or while an
event is in hand; 503 otherwise, with the reason in the body.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge_cli.errors import ConfigError
from bridge_cli.events import Status
from bridge_cli.lakes import target_line

if TYPE_CHECKING:
    from bridge_cli.heartbeat import InFlight
    from bridge_cli.lakes import QueueStats
    from bridge_cli.outcomes import EventResult

log = logging.getLogger("bridge")

HEALTHY_POLLS = 3  # /healthz fails when the last good poll is older than this many poll intervals
HEALTH_FLOOR_SECONDS = 1.0  # ... and at least this: a poll itself takes a moment
_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_ROW_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)


class WorkerMetrics:
    """A WorkerObserver that keeps Prometheus metrics (in a registry of its own) and the health."""

    wants_queue_stats = True

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic,
        in_flight: Callable[[], InFlight | None] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        r = self.registry
        self.finished = Counter("bridge_events_finished", "Events that ended completed or failed",
                                ["status", "operation"], registry=r)
        self.rows_written = Counter("bridge_rows_written", "Rows affected by completed events",
                                    ["target_table"], registry=r)
        self.sync_rows = Counter("bridge_sync_rows", "What completed UPSERT and REPLACE events did "
                                 "to rows: inserted, updated, unchanged, deleted",
                                 ["operation", "outcome"], registry=r)
        self.retries = Counter("bridge_event_retries", "Event attempts that hit a transient error "
                               "and went back to pending", registry=r)
        self.claims_lost = Counter("bridge_claims_lost", "Events whose claim was lost before the "
                                   "result was recorded", registry=r)
        self.duration = Histogram("bridge_event_duration_seconds", "Seconds an event was in hand",
                                  registry=r, buckets=_DURATION_BUCKETS)
        self.rows_per_event = Histogram("bridge_event_rows", "Rows affected per completed event",
                                        registry=r, buckets=_ROW_BUCKETS)
        self.queue = Gauge("bridge_queue_events", "Events in the event table by status (at the "
                           "last poll)", ["status"], registry=r)
        self.oldest_pending = Gauge("bridge_oldest_pending_age_seconds", "Age of the oldest pending "
                                    "event (0 when none)", registry=r)
        self.oldest_pending.set_function(self._oldest_pending_age)
        self.last_poll = Gauge("bridge_last_successful_poll_timestamp_seconds", "Unix time of the "
                               "worker's last successful poll", registry=r)
        if in_flight is not None:
            r.register(_InFlightCollector(in_flight))
        self.paused = Gauge("bridge_paused", "1 for each target pattern `bridge pause` holds (at the "
                            "last poll)", ["target"], registry=r)
        self._paused: set[str] = set()
        for status in Status:
            self.queue.labels(status.value).set(0)
        self._statuses: set[str] = {s.value for s in Status}
        self._oldest_pending_at: datetime | None = None
        self._poll_interval = 0.0
        self._wait = 0.0
        self._running = False
        self._last_ok: float | None = None
        self._in_hand: str | None = None

    # -- the observer ----------------------------------------------------------------------------
    def on_start(self, poll_interval: float) -> None:
        with self._lock:
            self._running = True
            self._poll_interval = self._wait = poll_interval

    def on_poll(self, ok: bool, stats: QueueStats | None) -> None:
        with self._lock:
            self._in_hand = None
            if ok:
                self._last_ok = self._monotonic()
        if ok:
            self.last_poll.set(time.time())
        if stats is not None:
            self._statuses |= set(stats.counts)
            for status in self._statuses:
                self.queue.labels(status).set(stats.counts.get(status, 0))
            with self._lock:
                self._oldest_pending_at = stats.oldest_pending_at
            if stats.paused is not None:
                for gone in self._paused - set(stats.paused):
                    self.paused.remove(gone)
                for target in stats.paused:
                    self.paused.labels(target).set(1)
                self._paused = set(stats.paused)

    def on_event(self, event_id: str) -> None:
        with self._lock:
            self._in_hand = event_id

    def on_result(self, result: EventResult) -> None:
        with self._lock:
            self._in_hand = None
        operation = (result.operation or "?").upper()
        self.duration.observe(result.seconds)
        if result.status in (Status.COMPLETED.value, Status.FAILED.value):
            self.finished.labels(result.status, operation).inc()
        elif result.status == Status.PENDING.value:
            self.retries.inc()
        elif result.status == "lost":
            self.claims_lost.inc()
        if result.status == Status.COMPLETED.value and result.rows_affected is not None:
            table = target_line(result.target_table) or "?"
            self.rows_written.labels(table).inc(result.rows_affected)
            self.rows_per_event.observe(result.rows_affected)
            for outcome, count in (result.details or {}).items():
                self.sync_rows.labels(operation, outcome).inc(count)

    def on_wait(self, seconds: float) -> None:
        with self._lock:
            self._in_hand = None
            self._wait = seconds

    def on_stop(self) -> None:
        with self._lock:
            self._running = False

    # -- health ----------------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(healthy, why) for /healthz."""
        with self._lock:
            if not self._running:
                return False, "the worker loop is not running"
            if self._in_hand is not None:
                return True, f"ok: processing event {self._in_hand}"
            if self._last_ok is None:
                return False, "no successful poll yet"
            age = self._monotonic() - self._last_ok
            window = max(HEALTHY_POLLS * max(self._wait, self._poll_interval), HEALTH_FLOOR_SECONDS)
            if age > window:
                return False, f"last successful poll {age:.1f}s ago (more than {window:g}s)"
            return True, f"ok: last successful poll {age:.1f}s ago"

    def _oldest_pending_age(self) -> float:
        with self._lock:
            oldest = self._oldest_pending_at
        if oldest is None:
            return 0.0
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        return max(0.0, (now - oldest).total_seconds())


class _InFlightCollector(Collector):
    """The event in hand, read from the worker at each scrape: no event ids as labels (one series
    per event would grow without end), only the phase."""

    def __init__(self, in_flight: Callable[[], InFlight | None]) -> None:
        self.in_flight = in_flight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.in_flight()
        yield GaugeMetricFamily("bridge_worker_busy", "1 while the worker has an event in hand",
                                value=0 if now is None else 1)
        rows = GaugeMetricFamily("bridge_event_rows_so_far", "Rows of the event in hand read and "
                                 "staged so far (0 while idle)",
                                 value=0 if now is None or now.rows is None else now.rows)
        yield rows
        phase = GaugeMetricFamily("bridge_event_phase_seconds", "Seconds the event in hand has "
                                  "been in its current phase", labels=["phase"])
        if now is not None:
            phase.add_metric([now.phase], now.phase_seconds)
        yield phase


class MetricsServer:
    """/metrics and /healthz on a port, from a daemon thread."""

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = "") -> None:
        handler = _handler(metrics)
        server = _IPv6Server if ":" in host else ThreadingHTTPServer  # "::", "::1", an IPv6 address
        try:
            self.httpd = server((host, port), handler)
        except OSError as exc:
            where = f"{host}:{port}" if host else f"port {port}"
            raise ConfigError(f"metrics {where}: cannot listen: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("serving metrics on %s:%d (/metrics, /healthz)", self.host, self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, why = metrics.health()
                self._send(200 if healthy else 503, f"{why}\n".encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            log.debug("metrics http: " + format, *args)

    return Handler
