"""claim -> plan -> apply -> record: the worker's whole job, independent of any adapter."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from bridge_cli import logcontext
from bridge_cli.cancel import CancelWatch, describe_pauses, pause_covering
from bridge_cli.clock import Clock, SystemClock
from bridge_cli.config import Settings
from bridge_cli.errors import (
    AlreadyApplied,
    BridgeError,
    NotInitialized,
    PermanentError,
    TransientError,
    ValidationError,
    WorkerStopping,
)
from bridge_cli.events import (
    Event,
    Job,
    Operation,
    Status,
    build_job,
    duplicate_id_message,
)
from bridge_cli.heartbeat import Heartbeats, InFlight, default_worker_id
from bridge_cli.lakes import Lake, Pause
from bridge_cli.observe import WorkerObserver
from bridge_cli.outcomes import EventResult, discrepancy_warning, log_outcome, skipped_warning
from bridge_cli.planning import plan_with_stores
from bridge_cli.prefetch import read_ahead
from bridge_cli.spark.route import choose_route
from bridge_cli.targets import (
    ApplyPlan,
    ExternalStaging,
    LedgerEntry,
    Target,
    details_from_json,
    details_json,
)
from bridge_cli.worker_loop import run_worker

if TYPE_CHECKING:
    import pyarrow as pa

    from bridge_cli.lakes import SourceColumn
    from bridge_cli.spark import SparkStager

log = logging.getLogger("bridge")

ProgressCallback = Callable[[str, int], None]  # (event_id, rows read so far)
# (event_id, phase, rows): "reading" with rows_expected, "writing" with the rows staged, "deleting"
PhaseCallback = Callable[[str, str, "int | None"], None]


class DuplicateEventId(PermanentError):
    """Several rows of the event table hold the claimed event's id: none of them is applied."""


@dataclass(frozen=True)
class _Applied:
    rows_affected: int
    rows_read: int | None
    from_ledger: LedgerEntry | None = None
    note: str | None = None  # for the event's warning (e.g. it asked for Spark and could not have it)
    details: dict[str, int] | None = None


class Engine:
    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        target: Target,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_phase: PhaseCallback | None = None,
        rng: random.Random | None = None,
        wait: Callable[[threading.Event, float], object] | None = None,
        spark: SparkStager | None = None,
    ) -> None:
        self.settings = settings
        self.lake = lake
        self.target = target
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self.on_progress = on_progress
        self.on_phase = on_phase
        self.rng = rng or random.Random()
        # How the worker loop waits between polls (until `stop` is set): injectable, so that a
        # test can run an idle hour without sleeping through it.
        self.wait = wait or _wait_for_stop
        self._keeper: _LeaseKeeper | None = None  # the lease of the event in hand
        self.beats: Heartbeats | None = None  # the worker's row in the workers table (run_worker)
        self.stopping: threading.Event | None = None  # run_worker's: a Spark run is cancelled when set
        self._cancel: CancelWatch | None = None  # `bridge cancel` of the event in hand
        self._pauses_said: tuple[Pause, ...] = ()  # the pauses last logged ("paused: ...")
        self._no_control_said = False
        # Huge events stage on Spark (the profile's `spark:` section); checked at start, so a wrong
        # section stops the worker before it claims anything.
        if spark is None and settings.spark is not None:
            from bridge_cli.spark import SparkStager

            spark = SparkStager(settings)
        self.spark = spark
        # Imported here, in one thread: a first import of pyarrow in the source-reader thread
        # while another thread opens a DuckDB connection has crashed the interpreter.
        import pyarrow  # noqa: F401

    # -- claiming ----------------------------------------------------------------------------
    def claim_next_event(self, event_id: str | None = None) -> Event | None:
        """Claim the first due event by conditional update; None when there is nothing to do."""
        now = self.clock.now()
        per_target = self.settings.ordering == "per_target"
        candidates = self.lake.claimable_events(now, _CLAIM_PAGE, event_id, per_target)
        if candidates:  # nothing claimable, nothing to pause: an idle poll reads no pauses
            candidates = self._not_paused(
                candidates, lambda: self.lake.claimable_events(now, _PAUSED_LOOK_AHEAD, event_id, per_target)
            )
        for event in candidates:
            token = uuid.uuid4().hex
            changes: dict[str, Any] = {
                "status": Status.PROCESSING.value,
                "worker_id": self.worker_id,
                "claim_token": token,
                "lease_expires_at": now + timedelta(seconds=self.settings.lease_seconds),
                "attempts": (event.attempts or 0) + 1,
                "updated_at": now,
            }
            expected = {"status": event.status, "claim_token": event.claim_token}
            if self.lake.update_event_if(event.event_id, expected, changes):
                for key, value in changes.items():
                    setattr(event, key, value)
                log.info("claimed event %s (%s %s, attempt %d)", event.event_id, event.operation,
                         event.target_table, event.attempts or 1, extra={"event_id": event.event_id})
                return event
            log.debug("event %s was claimed by another worker", event.event_id)
        return None

    def _not_paused(self, candidates: list[Event], further: Callable[[], list[Event]]) -> list[Event]:
        """The candidates whose target no pause covers (`bridge pause`); `further` lists more when
        a whole page is paused, so other targets still proceed."""
        pauses = self.current_pauses()
        if not pauses:
            self._say_paused((), 0)
            return candidates
        free = [e for e in candidates if pause_covering(pauses, e.target_table) is None]
        if not free and len(candidates) >= _CLAIM_PAGE:
            candidates = further()
            free = [e for e in candidates if pause_covering(pauses, e.target_table) is None]
        self._say_paused(tuple(pauses), len(candidates) - len(free))
        return free

    def current_pauses(self) -> list[Pause]:
        """The pauses a claim obeys; none (logged once) where the control table is missing."""
        try:
            return self.lake.list_pauses()
        except NotInitialized as exc:  # an old install, this worker upgraded: never a stopped worker
            if not self._no_control_said:
                log.warning("%s; until then nothing is paused", exc)
                self._no_control_said = True
            return []

    def _say_paused(self, pauses: tuple[Pause, ...], held: int) -> None:
        """One log line per change of the pauses, not one per poll."""
        if pauses == self._pauses_said:
            return
        if pauses:
            log.info("paused: %s; %d claimable event(s) held back", describe_pauses(pauses), held)
        elif self._pauses_said:
            log.info("resumed: nothing is paused")
        self._pauses_said = pauses

    # -- processing --------------------------------------------------------------------------
    def check_cancel(self) -> None:
        """Look for a `bridge cancel` of the event in hand: one read of the control table (none
        while idle). The heartbeat thread calls it after each beat, the lease keeper on each renewal.
        The worker stops at its next checkpoint; a store error is logged, never raised."""
        watch = self._cancel
        if watch is not None:
            watch.check()

    def _cancel_checkpoint(self, fresh: bool = False) -> None:
        """Stop here (EventCancelled) when a cancel of the event in hand was seen. In a worker the
        heartbeat thread looks after each beat, off the event's path; without one (process-once)
        the checkpoint reads the control table itself now and then, and with `fresh` before the
        target transaction starts (never inside it)."""
        watch = self._cancel
        if watch is None:
            return
        if self.beats is None:
            if fresh:
                watch.check()
            else:
                watch.check_if_due()
        watch.raise_if_requested()

    def _before_commit(self) -> None:
        """Inside the target transaction, before its commit: only what was already seen."""
        if self._cancel is not None:
            self._cancel.raise_if_requested()

    def process_event(self, event: Event) -> EventResult:
        """Apply one claimed event and record the outcome; never raises for a bad event."""
        assert event.claim_token is not None, "process_event needs a claimed event"
        with logcontext.about_event(event.event_id):
            result = self._process(event)
        return result

    def _process(self, event: Event) -> EventResult:
        started = self.clock.monotonic()
        attempts = event.attempts or 1
        watch = self._cancel = CancelWatch(self.lake, event.event_id, event.claim_token or "")
        keeper = self._keeper = _LeaseKeeper(self, event)
        keeper.start()
        try:
            applied = self._apply(event)
        except TransientError as exc:
            outcome = self._retry_or_fail(event, str(exc))
        except DuplicateEventId as exc:
            outcome = self._failed(str(exc))
            self._fail_other_copies(event, outcome)
        except (PermanentError, ValidationError) as exc:
            outcome = self._failed(str(exc))
        except WorkerStopping as exc:
            outcome = self._released(event, str(exc))
        except BridgeError as exc:  # e.g. the lake went away mid-event: worth another try
            outcome = self._retry_or_fail(event, str(exc))
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C, or a signal turned into one: the session rolled back; release the claim
            # at once rather than leave the event `processing` until its lease runs out.
            keeper.stop()
            self._release_interrupted(event)
            raise
        except BaseException as exc:  # an error no adapter knows (native panics included) is
            # logged with its type and retried as a transient one: it may even have come after the
            # commit, and then the retry completes the event from the ledger. Never a dead worker.
            log.exception("unexpected error while processing %s", event.event_id)
            outcome = self._retry_or_fail(event, f"unexpected {type(exc).__name__}: {exc}")
        else:
            outcome = self._completed(event, applied)
        finally:
            keeper.stop()
            self._cancel = None
        if self.beats is not None:
            self.beats.phase("recording")
        recorded = self.lake.update_event_if(
            event.event_id, {"claim_token": event.claim_token}, outcome
        )
        if recorded:
            watch.forget()
        status = outcome["status"] if recorded else "lost"
        seconds = self.clock.monotonic() - started
        if not recorded:
            log.warning("event %s: claim lost before the result was recorded", event.event_id)
        else:
            log_outcome(event, outcome, seconds)
        return EventResult(
            event_id=event.event_id,
            operation=event.operation,
            target_table=event.target_table,
            status=status,
            rows_affected=outcome.get("rows_affected"),
            discrepancy=outcome.get("discrepancy"),
            warning=outcome.get("warning"),
            error_message=outcome.get("error_message"),
            seconds=seconds,
            attempts=attempts,
            details=details_from_json(outcome.get("details")),
        )

    def _fail_other_copies(self, event: Event, outcome: dict[str, Any]) -> None:
        """The other rows with the claimed event's id that are waiting (pending, unclaimed) fail
        with it. A copy another worker holds, or one already finished, keeps what it has: it was
        claimed while its id was still unique."""
        try:
            self.lake.update_event_if(event.event_id, {"status": Status.PENDING.value, "claim_token": None}, outcome)
        except Exception as exc:  # each copy is refused again when it is claimed
            log.warning("event %s: could not fail the other rows with its id: %s", event.event_id, exc)

    def _release_interrupted(self, event: Event) -> None:
        now = self.clock.now()
        try:
            released = self.lake.update_event_if(event.event_id, {"claim_token": event.claim_token}, {
                "status": Status.PENDING.value, "claim_token": None, "lease_expires_at": None,
                "next_attempt_at": None, "updated_at": now,
                "warning": f"attempt {event.attempts} was interrupted (Ctrl-C or a signal); "
                           "rolled back and released for a retry",
            })
        except Exception as exc:  # the lease runs out instead
            log.warning("event %s: could not release the interrupted claim: %s", event.event_id, exc)
            return
        if released:
            log.warning("event %s: interrupted; rolled back and released", event.event_id)

    def _released(self, event: Event, why: str) -> dict[str, Any]:
        """Back to the queue as it was claimed: the worker chose to stop, so no attempt is spent."""
        return {
            "status": Status.PENDING.value, "claim_token": None, "lease_expires_at": None,
            "next_attempt_at": None, "updated_at": self.clock.now(),
            "attempts": max((event.attempts or 1) - 1, 0),
            "warning": f"{why}; nothing was applied and the event was released for another worker",
        }

    def _apply(self, event: Event) -> _Applied:
        # An id names exactly one event. Delta has no unique constraint, so the claim checks: a
        # second row with this id (written by hand, or by a hostile job) could otherwise be applied
        # under the first one's id and ledger row, and both reported completed.
        copies = self.lake.get_events(event.event_id)
        if len(copies) > 1:
            raise DuplicateEventId(duplicate_id_message(event.event_id, len(copies)))
        # Exactly once: an event whose id is in the target's ledger was applied already.
        entry = self.target.ledger_entry(event.event_id)
        if entry is not None:
            return _Applied(entry.rows_affected, None, entry, details=entry.details)
        if (event.attempts or 0) > self.settings.max_attempts:
            # Its last claim ended without a result: a crash counts as an attempt, so an event
            # that kills its worker (out of memory, a native crash) cannot crash-loop forever.
            raise PermanentError(
                f"gave up after {self.settings.max_attempts} attempts: the last worker that "
                "claimed it stopped before finishing (killed, out of memory, or its lease ran "
                "out); see the worker logs"
            )
        job = build_job(event)
        plan, source_columns = plan_with_stores(job, self.lake, self.target, self.settings)
        try:
            if source_columns is None:  # a DELETE: nothing to read
                self._phase(event, "deleting", event.rows_expected)
                self._cancel_checkpoint(fresh=True)
                with self.target.session() as session:
                    self._check_lease()
                    counts = session.apply(plan, self.clock.now(), before_commit=self._before_commit)
                return _Applied(counts.rows_affected, None)
            assert job.source is not None
            route = choose_route(job, plan, self.settings, self.spark, self.lake)
            if route.spark:
                return self._apply_on_spark(event, job, plan, source_columns, route.note)
            self._phase(event, "reading", event.rows_expected)
            batches = self.lake.read_source(
                job.source, [c.name for c in source_columns], self.settings.batch_rows
            )
            # The next batches are read while the current one is written (bounded queue).
            rows_in = read_ahead(self._count(job, batches))
            try:
                with self.target.session() as session:
                    staged = session.stage_rows(plan, rows_in)
                    if staged == 0:
                        raise _no_data(job)
                    self._check_lease()
                    self._cancel_checkpoint(fresh=True)
                    self._phase(event, "writing", staged)
                    counts = session.apply(plan, self.clock.now(), before_commit=self._before_commit)
            finally:
                # A load that failed midway leaves the reader thread and the source (its file lock
                # or connection) open until collected, which the error's traceback can put off
                # indefinitely: close them now.
                for opened in (rows_in, batches):
                    close = getattr(opened, "close", None)
                    # A generator still running in the reader thread (a Ctrl-C that landed while
                    # it read) cannot be closed from here: its thread closes it. The ValueError
                    # would replace the error in flight (a KeyboardInterrupt, which must go on).
                    if close is not None:
                        with contextlib.suppress(ValueError):
                            close()
            return _Applied(counts.rows_affected, staged, note=route.note, details=counts.details)
        except AlreadyApplied:
            entry = self.target.ledger_entry(event.event_id)
            if entry is None:  # the ledger row vanished between two reads: let a retry decide
                raise TransientError("ledger conflict without a ledger row") from None
            return _Applied(entry.rows_affected, None, entry, details=entry.details)

    def _apply_on_spark(
        self, event: Event, job: Job, plan: ApplyPlan, source_columns: list[SourceColumn], note: str | None
    ) -> _Applied:
        """A Spark run loads the session's stage; the check, the apply and the ledger row are the
        worker's, as for every event."""
        stager = self.spark
        assert stager is not None
        self._phase(event, "spark", event.rows_expected)
        with self.target.session() as session:
            staged = cast(ExternalStaging, session).stage_external(
                plan, lambda stage: stager.stage(job, plan, source_columns, self.lake, stage, self._while_staging)
            )
            if staged == 0:
                raise _no_data(job)
            self._check_lease()
            self._cancel_checkpoint(fresh=True)
            self._phase(event, "writing", staged)
            counts = session.apply(plan, self.clock.now(), before_commit=self._before_commit)
        return _Applied(counts.rows_affected, staged, note=note, details=counts.details)

    def _while_staging(self) -> None:
        """Between polls of a long staging run: stop it if the lease is going or the worker is."""
        self._check_lease()
        self._cancel_checkpoint()  # the run is cancelled as for a stopping worker
        if self.stopping is not None and self.stopping.is_set():
            raise WorkerStopping("the worker stopped while Spark staged this event; the run was cancelled")

    def _phase(self, event: Event, phase: str, rows: int | None) -> None:
        if self.beats is not None:
            self.beats.phase(phase)
        if self.on_phase is not None:
            self.on_phase(event.event_id, phase, rows)

    def _check_lease(self) -> None:
        """Working on without a lease risks two workers on one event: stop (nothing applied yet;
        the session rolls back) and let the event be retried."""
        reason = self._keeper.expiring() if self._keeper is not None else None
        if reason:
            raise TransientError(f"stopped before applying anything: {reason}")

    def _count(self, job: Job, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            for batch in batches:
                self._check_lease()
                self._cancel_checkpoint()
                rows += batch.num_rows
                if self.beats is not None:
                    self.beats.rows(rows)
                if self.on_progress is not None:
                    self.on_progress(job.event_id, rows)
                yield batch
        finally:
            # The source holds its file (and lock) open: close it now, not when collected.
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    # -- outcomes ----------------------------------------------------------------------------
    def _finished(self, status: Status) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "status": status.value,
            "processed_at": now,
            "updated_at": now,
            "claim_token": None,
            "lease_expires_at": None,
            "next_attempt_at": None,
            "details": None,
        }

    def _completed(self, event: Event, applied: _Applied) -> dict[str, Any]:
        outcome = self._finished(Status.COMPLETED)
        warnings = [applied.note] if applied.note else []
        if applied.from_ledger is not None:
            warnings.append(
                f"already applied to the target at {applied.from_ledger.applied_at} "
                "(found in its ledger); not applied again"
            )
        discrepancy = None
        if event.rows_expected is not None:
            discrepancy = event.rows_expected - applied.rows_affected
            if discrepancy != 0:
                warnings.append(discrepancy_warning(event, applied.rows_affected, discrepancy, applied.details))
        elif (
            applied.rows_read is not None and applied.rows_affected < applied.rows_read
            and not applied.details  # UPSERT and REPLACE say what every source row became
        ):
            skipped = applied.rows_read - applied.rows_affected
            warnings.append(skipped_warning(event, skipped))
        outcome.update(
            rows_affected=applied.rows_affected,
            discrepancy=discrepancy,
            warning="; ".join(warnings) or None,
            error_message=None,
            details=details_json(applied.details),
        )
        return outcome

    def _failed(self, message: str) -> dict[str, Any]:
        outcome = self._finished(Status.FAILED)
        outcome.update(error_message=message, rows_affected=None, discrepancy=None)
        return outcome

    def _retry_or_fail(self, event: Event, message: str) -> dict[str, Any]:
        attempts = event.attempts or 1
        if attempts >= self.settings.max_attempts:
            return self._failed(f"{message} (gave up after {attempts} attempts)")
        delay = backoff_seconds(
            attempts, self.settings.retry_backoff, self.settings.retry_backoff_max, self.rng
        )
        now = self.clock.now()
        retry_at = now + timedelta(seconds=delay)
        return {
            "status": Status.PENDING.value,
            "updated_at": now,
            "claim_token": None,
            "lease_expires_at": None,
            "next_attempt_at": retry_at,
            "warning": (
                f"attempt {attempts} of {self.settings.max_attempts} hit a transient error; "
                f"retrying after {retry_at:%Y-%m-%d %H:%M:%S} UTC: {message}"
            ),
        }

    # -- loops -------------------------------------------------------------------------------
    def process_once(
        self, max_events: int | None = None, event_id: str | None = None,
        on_result: Callable[[EventResult], None] | None = None,
    ) -> list[EventResult]:
        """Process what is due now, then return."""
        self.target.check_ready()
        results: list[EventResult] = []
        while max_events is None or len(results) < max_events:
            event = self.claim_next_event(event_id)
            if event is None:
                break
            result = self.process_event(event)
            results.append(result)
            if on_result is not None:
                on_result(result)
            if event_id is not None:
                break
        return results

    def run_worker(
        self,
        stop: threading.Event,
        poll_interval: float | None = None,
        max_events: int | None = None,
        on_result: Callable[[EventResult], None] | None = None,
        observer: WorkerObserver | None = None,
    ) -> int:
        """Claim and process until `stop` is set (after the event in hand) or max_events: the
        long-lived worker (bridge_cli/worker_loop.py)."""
        return run_worker(self, stop, poll_interval, max_events, on_result, observer)

    def in_flight(self) -> InFlight | None:
        """The event in hand, its phase, rows so far and seconds in that phase (a running worker's
        metrics); None while idle or outside run_worker."""
        beats = self.beats
        return beats.in_flight() if beats is not None else None


_CLAIM_PAGE = 20  # candidates a claim looks at
_PAUSED_LOOK_AHEAD = 500  # ... and when every one of them is paused


def _no_data(job: Job) -> PermanentError:
    # REPLACE inserts what the source has: an empty one is refused as INSERT's is, whatever the
    # shrink guard would say (emptying a slice is a DELETE's job).
    verb = {Operation.INSERT: "insert", Operation.REPLACE: "insert", Operation.UPSERT: "upsert"}.get(
        job.operation, "update"
    )
    return PermanentError(f"No data to {verb}: source table {job.source} is empty")


def _wait_for_stop(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter, so that failing events do not retry in lockstep."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * (0.5 + rng.random() / 2)


class _LeaseKeeper:
    """Renews the claim's lease while the event is worked on, so no rescuer takes it."""

    def __init__(self, engine: Engine, event: Event) -> None:
        self.engine = engine
        self.event = event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")
        # Real elapsed time, as the renewals themselves are paced by it.
        self._renewed_at = time.monotonic()
        self._lost = False

    def expiring(self) -> str | None:
        """Why the event must stop now: its lease went to another worker, or it is about to
        expire because renewals keep failing. None while the lease is held."""
        if self._lost:
            return "its lease was taken by another worker"
        lease = self.engine.settings.lease_seconds
        unrenewed = time.monotonic() - self._renewed_at
        if unrenewed > lease * 0.8:
            return f"its lease could not be renewed for {unrenewed:.1f}s of {lease:g}s"
        return None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        lease = self.engine.settings.lease_seconds
        while not self._stop.wait(max(lease / 3, 0.05)):
            now = self.engine.clock.now()
            try:
                held = self.engine.lake.update_event_if(
                    self.event.event_id,
                    {"claim_token": self.event.claim_token},
                    {"lease_expires_at": now + timedelta(seconds=lease), "updated_at": now},
                )
            except BaseException as exc:  # the keeper outlives any store error (a native panic
                # too); the next renewal may work
                log.warning(
                    "event %s: lease renewal failed: %s: %s",
                    self.event.event_id, type(exc).__name__, exc,
                )
                continue
            if not held:
                log.warning("event %s: lease lost to another worker", self.event.event_id)
                self._lost = True
                return
            self._renewed_at = time.monotonic()
            self.engine.check_cancel()
