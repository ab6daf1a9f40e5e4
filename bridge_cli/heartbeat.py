"""A worker's row in the workers table: who it is, what it is doing, and how fast.

The engine tells it the event in hand, the phase and the rows so far (cheap, in memory). A writer
thread of its own puts that in the lake: at once after each change that matters (the claim, each
phase, the end of the event, each idle poll), and every `progress_seconds` while an event is in
hand. Changes that come while a write is under way are coalesced: only the latest state is
written. So an event never waits on a heartbeat (on Databricks a statement takes seconds), and a
slow or failing one never slows or fails it: a failed heartbeat is logged, never raised.
"""

from __future__ import annotations

import contextvars
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge_cli import __version__
from bridge_cli.errors import WorkerIdInUse
from bridge_cli.lakes import Lake, WorkerBeat

log = logging.getLogger("bridge")

# The engine's phases (on_phase) as the workers table names them: the source is read and staged
# into the target at the same time, so "reading" lasts until the first rows are staged.
PHASES = {"reading": "reading", "spark": "staging on spark", "writing": "applying", "deleting": "applying"}
# A busy worker not heard from for this many progress intervals is gone (killed, host down).
MISSED_BEATS = 3


def default_worker_id() -> str:
    """hostname:pid:random. In a container the pid is 1 and the hostname may be shared (two
    containers run with one --hostname): the random part keeps ids apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class InFlight:
    """The event in hand as the worker sees it now (for its metrics): no event ids as labels."""

    event_id: str
    phase: str
    rows: int | None
    phase_seconds: float


class Heartbeats:
    def __init__(
        self, lake: Lake, worker_id: str, now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic, progress_seconds: float = 15.0,
    ) -> None:
        self.lake = lake
        self.worker_id = worker_id
        self.progress = progress_seconds
        self.now = now
        self.monotonic = monotonic
        self.started_at = now()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # Called by the writer thread after each beat while an event is in hand (a cancel
        # request is looked for then); what it raises is logged, never the worker's death.
        self.after_busy_beat: Callable[[], None] | None = None
        self._changed = threading.Condition()
        self._event: str | None = None
        self._phase: str | None = None
        self._phase_since = monotonic()
        self._rows: int | None = None
        self._since: float | None = None  # when the first rows of the event in hand were read
        self._idle_wait = 0.0
        self._dirty = False  # a change not yet written
        self._stopping = False
        self._writing = False  # the writer thread is writing a beat now
        self._last_write: float | None = None
        self._failing = False
        self._registered = False  # a heartbeat went through: there is a row to remove
        self._thread: threading.Thread | None = None
        self.id_checked = False  # claim_id went through

    # -- the worker id ----------------------------------------------------------------------------
    def claim_id(self) -> None:
        """Refuse to run under an id a live worker holds (WorkerIdInUse); else write the first beat.
        Read back after writing: of two workers starting at the same moment under one id, the one
        whose row was overwritten sees it and refuses too. A gone worker's row is taken over (a
        restarted pod keeps its name)."""
        self._refuse_if_taken(alive_only=True)
        self.beat()
        if not self._registered:
            return  # the beat failed (logged): checked again at the next poll
        self._refuse_if_taken(alive_only=False)
        self.id_checked = True

    def _refuse_if_taken(self, alive_only: bool) -> None:
        now = self.now()
        for other in self.lake.list_workers():
            if other.worker_id != self.worker_id or self._is_me(other):
                continue
            if alive_only and not other.alive(now):
                continue
            self._registered = False  # the row is the other worker's: never delete it
            raise WorkerIdInUse(
                f"worker id {self.worker_id!r} is in use by a live worker (host {other.host}, pid "
                f"{other.pid}, last seen {other.last_seen:%Y-%m-%d %H:%M:%S} UTC): give each worker "
                "its own id (--worker-id, the profile's worker_id or BRIDGE_WORKER_ID), or stop "
                "the other one first"
            )

    def _is_me(self, row: WorkerBeat) -> bool:
        started = row.started_at.replace(tzinfo=None) if row.started_at is not None else None
        mine = self.started_at.replace(tzinfo=None)
        return (row.host == self.host and row.pid == self.pid and started is not None
                and abs((started - mine).total_seconds()) < 0.001)

    # -- what the engine says (in memory) -------------------------------------------------------
    def event(self, event_id: str | None) -> None:
        with self._changed:
            self._event = event_id
            self._set_phase("claimed" if event_id is not None else None)
            self._rows = None
            self._since = None
            self._mark()

    def phase(self, phase: str) -> None:
        with self._changed:
            self._set_phase(PHASES.get(phase, phase))
            if self._phase == "reading":
                self._since = self.monotonic()
            self._mark()

    def rows(self, rows: int) -> None:
        """Rows so far: written with the next periodic beat, except the first (a phase change)."""
        with self._changed:
            self._rows = rows
            if self._phase == "reading":
                self._set_phase("staging")
                self._mark()

    def idle(self, idle_wait: float) -> None:
        """An idle poll: one beat, saying when the next poll comes."""
        with self._changed:
            self._idle_wait = idle_wait
            self._mark()

    def _set_phase(self, phase: str | None) -> None:
        if phase != self._phase:
            self._phase = phase
            self._phase_since = self.monotonic()
            log.debug("phase: %s", phase or "idle")

    def _mark(self) -> None:
        self._dirty = True
        self._changed.notify_all()

    def in_flight(self) -> InFlight | None:
        with self._changed:
            if self._event is None:
                return None
            return InFlight(self._event, self._phase or "claimed", self._rows,
                            self.monotonic() - self._phase_since)

    # -- what reaches the lake --------------------------------------------------------------------
    def snapshot(self) -> WorkerBeat:
        now = self.now()
        with self._changed:
            rate = None
            if self._rows is not None and self._since is not None:
                elapsed = self.monotonic() - self._since
                rate = round(self._rows / elapsed, 1) if elapsed > 0 else None
            # Gone when not heard from in time: while busy, MISSED_BEATS progress intervals (a
            # killed worker shows as gone within that); while idle, its next poll's wait on top.
            if self._event is not None:
                grace = MISSED_BEATS * self.progress
            else:
                grace = self._idle_wait + MISSED_BEATS * self.progress
            return WorkerBeat(
                worker_id=self.worker_id, host=self.host, pid=self.pid, version=__version__,
                started_at=self.started_at, last_seen=now,
                expires_at=now + timedelta(seconds=grace),
                event_id=self._event, phase=self._phase, rows=self._rows, rows_per_second=rate,
            )

    def beat(self) -> None:
        """Write the worker's row now, in the caller's thread."""
        with self._changed:
            self._dirty = False
        beat = self.snapshot()
        try:
            self.lake.heartbeat(beat)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a native panic too: the worker and its event live on
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "heartbeat failed (the worker carries on): %s: %s", type(exc).__name__, exc)
            self._failing = True
            return
        finally:
            with self._changed:
                self._last_write = self.monotonic()
        self._failing = False
        self._registered = True

    def start(self) -> None:
        """Start the writer thread (claim_id wrote the first beat; the loop's changes follow)."""
        with self._changed:
            self._stopping = False
        context = contextvars.copy_context()  # its log lines name the worker
        self._thread = threading.Thread(target=context.run, args=(self._write_beats,), daemon=True,
                                        name="heartbeat")
        self._thread.start()

    def _due(self) -> float | None:
        """Seconds until the next beat is due (0: now); None: nothing to write until a change."""
        if self._dirty:
            return 0.0
        if self._event is None or self._last_write is None:
            return None
        return max(0.0, self._last_write + self.progress - self.monotonic())

    def _write_beats(self) -> None:
        while True:
            with self._changed:
                while not self._stopping and (wait := self._due()) != 0.0:
                    self._changed.wait(wait)
                if self._stopping:
                    return
                busy = self._event is not None
                self._writing = True
            try:
                self.beat()
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()
            hook = self.after_busy_beat
            if busy and hook is not None:
                try:
                    hook()
                except BaseException as exc:  # a native panic too: this thread must outlive it
                    log.warning("after a heartbeat: %s: %s", type(exc).__name__, exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change so far is written (or its write failed); False on timeout. For
        tests that run a worker on an injected clock, where polls come faster than writes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._dirty or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        """Stop the writer thread (a beat under way ends first)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def forget(self) -> None:
        """A clean stop: the worker's row goes."""
        self.stop()
        if not self._registered:
            return
        try:
            self.lake.forget_worker(self.worker_id)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            log.warning("removing this worker's heartbeat row failed: %s: %s", type(exc).__name__, exc)
