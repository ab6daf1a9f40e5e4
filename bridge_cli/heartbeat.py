"""A worker's row in the workers table: who it is, what it is doing, and how fast.

The engine tells it the event in hand, the phase and the rows so far (cheap, in memory); a
statement reaches the lake only on `beat`: at start, on each idle poll, and with each lease
renewal while an event is in hand (at most one per lease_seconds / 3). A failed heartbeat is logged,
never raised: it must not stop the worker or the event.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from bridge_cli import __version__
from bridge_cli.lakes import Lake, WorkerBeat

log = logging.getLogger("bridge")

# The engine's phases (on_phase) as the workers table names them: the source is read and staged
# into the target at the same time, so "reading" lasts until the first rows are staged.
PHASES = {"reading": "reading", "spark": "staging on spark", "writing": "applying", "deleting": "applying"}


class Heartbeats:
    def __init__(
        self, lake: Lake, worker_id: str, lease_seconds: float, now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lake = lake
        self.worker_id = worker_id
        self.lease = lease_seconds
        self.now = now
        self.monotonic = monotonic
        self.started_at = now()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._event: str | None = None
        self._phase: str | None = None
        self._rows: int | None = None
        self._since: float | None = None  # when the first rows of the event in hand were read
        self._last_beat: float | None = None
        self._failing = False
        self._registered = False  # a heartbeat went through: there is a row to remove

    # -- what the engine says (in memory) -------------------------------------------------------
    def event(self, event_id: str | None) -> None:
        with self._lock:
            self._event = event_id
            self._phase = "planning" if event_id is not None else None
            self._rows = None
            self._since = None

    def phase(self, phase: str) -> None:
        with self._lock:
            self._phase = PHASES.get(phase, phase)
            if self._phase == "reading":
                self._since = self.monotonic()

    def rows(self, rows: int) -> None:
        with self._lock:
            self._rows = rows
            if self._phase == "reading":
                self._phase = "staging"

    # -- what reaches the lake --------------------------------------------------------------------
    def snapshot(self, idle_wait: float = 0.0) -> WorkerBeat:
        now = self.now()
        with self._lock:
            rate = None
            if self._rows is not None and self._since is not None:
                elapsed = self.monotonic() - self._since
                rate = round(self._rows / elapsed, 1) if elapsed > 0 else None
            return WorkerBeat(
                worker_id=self.worker_id, host=self.host, pid=self.pid, version=__version__,
                started_at=self.started_at, last_seen=now,
                expires_at=now + timedelta(seconds=self.lease + idle_wait),
                event_id=self._event, phase=self._phase, rows=self._rows, rows_per_second=rate,
            )

    def beat(self, idle_wait: float = 0.0) -> None:
        """Write the worker's row now; `idle_wait`: the idle worker's wait before its next poll."""
        beat = self.snapshot(idle_wait)
        try:
            self.lake.heartbeat(beat)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a native panic too: the worker and its event live on
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "heartbeat failed (the worker carries on): %s: %s", type(exc).__name__, exc)
            self._failing = True
            return
        self._failing = False
        self._registered = True
        with self._lock:
            self._last_beat = self.monotonic()

    def beat_if_due(self) -> None:
        """A heartbeat while an event is in hand: at most one per lease renewal interval."""
        with self._lock:
            last = self._last_beat
        if last is None or self.monotonic() - last >= self.lease / 3 * 0.9:
            self.beat()

    def forget(self) -> None:
        """A clean stop: the worker's row goes."""
        if not self._registered:
            return
        try:
            self.lake.forget_worker(self.worker_id)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.warning("removing this worker's heartbeat row failed: %s: %s", type(exc).__name__, exc)
