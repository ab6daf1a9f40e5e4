"""What people, scripts and Databricks jobs ask of bridge: init, submit, status, wait, requeue,
cancel, pause, resume and prune.

The CLI and the job-side functions both call these; none of them prints anything.
"""

from __future__ import annotations

import getpass
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bridge_cli.cancel import cancel_message, pause_holds, pause_pattern
from bridge_cli.clock import Clock, SystemClock
from bridge_cli.config import Settings
from bridge_cli.errors import (
    BridgeError,
    EventNotFound,
    NotInitialized,
    PermanentError,
    RefusedError,
    ValidationError,
)
from bridge_cli.events import (
    TERMINAL_STATUSES,
    Event,
    Status,
    SubmitRequest,
    build_job,
    event_from_request,
)
from bridge_cli.identifiers import TableName
from bridge_cli.lakes import CancelRequest, EventFilter, Lake, Pause, WorkerBeat, claim_order_key, target_line
from bridge_cli.patterns import NamePattern
from bridge_cli.planning import check_reach, plan_with_stores
from bridge_cli.targets import Target


class WaitTimeout(BridgeError, TimeoutError):
    """The event did not finish within the timeout."""

    def __init__(self, event: Event, timeout: float) -> None:
        super().__init__(
            f"event {event.event_id} not processed within {timeout:g}s (status: {event.status})"
        )
        self.event = event


def init_stores(lake: Lake, target: Target, upgrade: bool = False) -> list[str]:
    """Create the event table and the target ledger; safe to run twice."""
    return [*lake.init_event_table(upgrade), *target.init_ledger()]


def submit_event(
    lake: Lake,
    request: SubmitRequest,
    settings: Settings,
    clock: Clock | None = None,
    check_with: Target | None = None,
) -> Event:
    """Validate as the worker will (the event itself, and the profile's allowed_sources,
    allowed_targets and protected tables; with `check_with`, every check against the real source
    and target too) and write a pending event."""
    event = event_from_request(request)
    job = build_job(event)
    try:
        check_reach(job, settings)
        if check_with is not None:
            plan_with_stores(job, lake, check_with, settings)
    except PermanentError as exc:  # the worker would fail it: refused before it is written
        raise ValidationError(str(exc)) from None
    now = (clock or SystemClock()).now()
    event.created_at = now
    event.updated_at = now
    lake.insert_event(event)
    return event


def get_event(lake: Lake, event_id: str) -> Event:
    """The event with this id. An id that several rows hold names no single event: what is read
    then is the first row, as `failed` once every row is finished (the worker refuses to apply
    any of them), with the reason as its error_message; `get_event_rows` lists them all."""
    rows = get_event_rows(lake, event_id)
    if len(rows) == 1:
        return rows[0]
    message = copies_message(event_id, rows)
    unfinished = [row for row in rows if row.status not in TERMINAL_STATUSES]
    if unfinished:
        return replace(unfinished[0], error_message=message)
    return replace(rows[0], status=Status.FAILED.value, rows_affected=None, discrepancy=None,
                   warning=None, error_message=message)


def copies_message(event_id: str, rows: list[Event]) -> str:
    """What several rows with one id are, e.g. "event_id X appears 2 times in the event table
    (1 completed, 1 failed); `bridge status X` lists them"."""
    statuses = Counter(str(row.status) for row in rows)
    listed = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return (f"event_id {event_id} appears {len(rows)} times in the event table ({listed}); "
            f"`bridge status {event_id}` lists them")


def get_event_rows(lake: Lake, event_id: str) -> list[Event]:
    """Every row of the event table with this id (one, unless it was written twice)."""
    rows = lake.get_events(event_id)
    if not rows:
        raise EventNotFound(f"no event with id {event_id!r}")
    return rows


def recent_events(
    lake: Lake,
    status: str | None,
    limit: int,
    *,
    target: str | None = None,
    operation: str | None = None,
    within: timedelta | None = None,
    worker_id: str | None = None,
    clock: Clock | None = None,
) -> list[Event]:
    """The newest `limit` events, narrowed by status, target table (compared as the worker compares
    targets), operation, age (created within `within` of now) and the worker that claimed them."""
    since = None if within is None else (clock or SystemClock()).now() - within
    return lake.list_events(status, limit, EventFilter(target, operation, since, worker_id))


def events_ahead(lake: Lake, event: Event, limit: int = 1000) -> list[Event]:
    """The unfinished events for the same target that per-target order makes `event` wait for:
    one being processed, or earlier in claim order. Looks at the newest `limit` of each status."""
    line = target_line(event.target_table)
    if line is None:
        return []
    ahead = []
    for status in (Status.PROCESSING.value, Status.PENDING.value):
        for other in lake.list_events(status, limit):
            if other.event_id == event.event_id or target_line(other.target_table) != line:
                continue
            if other.status == Status.PROCESSING.value or claim_order_key(other) < claim_order_key(event):
                ahead.append(other)
    return sorted(ahead, key=claim_order_key)


def wait_for_event(
    lake: Lake,
    event_id: str,
    timeout: float = 300,
    interval: float = 10,
    clock: Clock | None = None,
    on_poll: Callable[[Event, float], None] | None = None,
) -> Event:
    """Poll until the event is completed or failed; WaitTimeout after `timeout` seconds."""
    clock = clock or SystemClock()
    start = clock.monotonic()
    while True:
        event = get_event(lake, event_id)
        if event.status in TERMINAL_STATUSES:
            return event
        elapsed = clock.monotonic() - start
        if elapsed >= timeout:
            raise WaitTimeout(event, timeout)
        if on_poll is not None:
            on_poll(event, elapsed)
        clock.sleep(min(interval, max(timeout - elapsed, 0.0)))


@dataclass(frozen=True)
class WorkerState:
    """A worker as its last heartbeat left it: alive, or gone (not heard from in time: killed,
    or its host or network down)."""

    beat: WorkerBeat
    alive: bool


def list_workers(lake: Lake, clock: Clock | None = None) -> list[WorkerState]:
    """Every worker in the workers table, alive ones first."""
    now = (clock or SystemClock()).now()
    states = [WorkerState(beat, beat.alive(now)) for beat in lake.list_workers()]
    return sorted(states, key=lambda s: (not s.alive, s.beat.worker_id))


def forget_gone_workers(
    lake: Lake, older_than: timedelta = timedelta(0), clock: Clock | None = None
) -> list[WorkerState]:
    """Delete the rows of workers gone for longer than `older_than`, and return them. Their events
    are untouched (`requeue --stale` is for those); a worker heard from meanwhile keeps its row."""
    now = (clock or SystemClock()).now()
    cutoff = now - older_than
    gone = [s for s in list_workers(lake, clock) if not s.alive and s.beat.expires_at < cutoff]
    for state in gone:
        lake.forget_worker(state.beat.worker_id, expired_before=cutoff)
    return gone


def event_progress(lake: Lake, event: Event, clock: Clock | None = None) -> WorkerState | None:
    """The worker on a processing event, with its phase and rows so far; None when the event is
    not being processed or its worker's heartbeat does not name it (yet)."""
    if event.status != Status.PROCESSING.value or event.worker_id is None:
        return None
    try:
        states = list_workers(lake, clock)
    except NotInitialized:  # an install from before the workers table: no progress to show
        return None
    for state in states:
        if state.beat.worker_id == event.worker_id and state.beat.event_id == event.event_id:
            return state
    return None


@dataclass(frozen=True)
class QueueView:
    """What `bridge top` shows at one moment: counts by status, the workers, the events in hand."""

    taken_at: datetime
    counts: dict[str, int]
    workers: list[WorkerState]
    in_flight: list[tuple[Event, WorkerState | None]]  # processing events, each with its worker
    pauses: list[Pause] | None = None  # None: no control table (an install from before it)


def queue_view(lake: Lake, clock: Clock | None = None, limit: int = 50) -> QueueView:
    """Four queries: the counts, the workers table, the processing events and the pauses."""
    clock = clock or SystemClock()
    counts = lake.count_by_status()
    try:
        workers = list_workers(lake, clock)
    except NotInitialized:  # an install from before the workers table: no workers to show
        workers = []
    by_event = {w.beat.event_id: w for w in workers if w.beat.event_id is not None}
    in_flight = []
    for event in lake.list_events(Status.PROCESSING.value, limit):
        state = by_event.get(event.event_id)
        in_flight.append((event, state if state and state.beat.worker_id == event.worker_id else None))
    return QueueView(clock.now(), counts, workers, in_flight, current_pauses(lake))


@dataclass(frozen=True)
class RequeueResult:
    event_id: str
    previous_status: str | None
    requeued: bool
    reason: str


def _is_stale(event: Event, clock: Clock) -> bool:
    return event.status == Status.PROCESSING.value and (
        event.lease_expires_at is None or event.lease_expires_at < clock.now()
    )


def requeue_events(
    lake: Lake,
    event_ids: list[str],
    *,
    failed: bool = False,
    stale: bool = False,
    dry_run: bool = False,
    clock: Clock | None = None,
    limit: int = 10000,
) -> list[RequeueResult]:
    """Move failed (or stale processing) events back to pending; completed ones never."""
    clock = clock or SystemClock()
    chosen: dict[str, Event] = {}
    results: list[RequeueResult] = []
    for event_id in event_ids:
        event = lake.get_event(event_id)
        if event is None:
            results.append(RequeueResult(event_id, None, False, "no such event"))
        else:
            chosen[event_id] = event
    if failed:
        for event in lake.list_events(Status.FAILED.value, limit):
            chosen.setdefault(event.event_id, event)
    if stale:
        for event in lake.list_events(Status.PROCESSING.value, limit):
            if _is_stale(event, clock):
                chosen.setdefault(event.event_id, event)
    for event in chosen.values():
        refusal = _refusal(event, clock)
        if refusal:
            results.append(RequeueResult(event.event_id, event.status, False, refusal))
            continue
        if dry_run:
            results.append(RequeueResult(event.event_id, event.status, False, "would requeue"))
            continue
        now = clock.now()
        changed = lake.update_event_if(
            event.event_id,
            {"status": event.status, "claim_token": event.claim_token},
            {
                "status": Status.PENDING.value, "attempts": 0, "error_message": None,
                "warning": None, "rows_affected": None, "discrepancy": None,
                "processed_at": None, "next_attempt_at": None, "claim_token": None,
                "lease_expires_at": None, "worker_id": None, "updated_at": now,
            },
        )
        reason = "requeued" if changed else "changed by someone else meanwhile; not requeued"
        results.append(RequeueResult(event.event_id, event.status, changed, reason))
    return results


def _refusal(event: Event, clock: Clock) -> str | None:
    if event.status == Status.COMPLETED.value:
        return "completed events are never requeued: they were applied (submit a new event)"
    if event.status == Status.PENDING.value:
        retry_at = event.next_attempt_at
        if retry_at is None or retry_at <= clock.now():
            return "already pending"
        return None  # waiting out a retry delay: requeue means now
    if event.status == Status.PROCESSING.value and not _is_stale(event, clock):
        return f"being processed by {event.worker_id} (lease until {event.lease_expires_at})"
    return None


def require_requeued(results: list[RequeueResult]) -> None:
    refused = [r for r in results if not r.requeued and r.reason != "would requeue"]
    if refused:
        raise RefusedError("; ".join(f"{r.event_id}: {r.reason}" for r in refused))


@dataclass(frozen=True)
class CancelResult:
    event_id: str
    previous_status: str | None
    cancelled: bool
    reason: str
    # cancelled; refused (or finished first); requested (not waited for); waiting (still
    # processing when the wait ended: the request stands); missing (no such event)
    outcome: str = "cancelled"


def who_and_where() -> str:
    """USER@HOST of the person cancelling, as the cancelled event's error_message names them."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def cancel_events(
    lake: Lake, event_ids: list[str], clock: Clock | None = None, by: str | None = None, *,
    wait: float | None = 60.0, interval: float = 1.0,
) -> list[CancelResult]:
    """Cancel events, saying "cancelled by USER@HOST at TIME".

    A pending, unclaimed event moves to failed by the same conditional update a claim uses: when a
    worker claims it at the same moment, exactly one of the two wins. A processing event gets a
    cancel request for its claim in the control table; its worker stops at its next checkpoint,
    rolls the target back and fails the event with that message. Then this waits up to `wait`
    seconds (None: not at all) for the event to finish: it may have completed first (the request
    is deleted; nothing changed) or still be processing (the request stands)."""
    clock = clock or SystemClock()
    by = by or who_and_where()
    results: dict[str, CancelResult] = {}
    requested: dict[str, CancelRequest] = {}
    for event_id in dict.fromkeys(event_ids):  # each id once, in the order given
        event = lake.get_event(event_id)
        if event is None:
            results[event_id] = CancelResult(event_id, None, False, "no such event", "missing")
        elif event.status == Status.PENDING.value:
            results[event_id] = _cancel_pending(lake, event, clock, by)
        elif event.status == Status.PROCESSING.value and event.claim_token:
            request = CancelRequest(event_id, event.claim_token, by, clock.now().replace(microsecond=0))
            lake.request_cancel(request)
            requested[event_id] = request
            results[event_id] = CancelResult(
                event_id, event.status, False,
                f"cancel requested of worker {event.worker_id}: it stops at its next checkpoint, "
                "applying nothing (`bridge wait` follows it)", "requested",
            )
        else:
            results[event_id] = CancelResult(event_id, event.status, False, _cancel_refusal(event), "refused")
    if requested and wait is not None:
        results.update(_await_cancels(lake, requested, clock, by, wait, interval))
    return list(results.values())


def _cancel_pending(lake: Lake, event: Event, clock: Clock, by: str) -> CancelResult:
    now = clock.now()
    message = cancel_message(by, now)
    changed = lake.update_event_if(
        event.event_id,
        {"status": Status.PENDING.value, "claim_token": None},
        {"status": Status.FAILED.value, "error_message": message, "processed_at": now,
         "next_attempt_at": None, "lease_expires_at": None, "updated_at": now},
    )
    if changed:
        return CancelResult(event.event_id, event.status, True, message)
    current = lake.get_event(event.event_id)
    now_status = current.status if current is not None else "deleted"
    return CancelResult(
        event.event_id, event.status, False,
        f"changed by someone else meanwhile (now {now_status}); not cancelled", "refused",
    )


def _await_cancels(
    lake: Lake, requested: dict[str, CancelRequest], clock: Clock, by: str, wait: float, interval: float,
) -> dict[str, CancelResult]:
    """Follow each requested event until it ends, or `wait` seconds pass."""
    start = clock.monotonic()
    results: dict[str, CancelResult] = {}
    waiting = dict(requested)
    while True:
        for event_id, request in list(waiting.items()):
            ended = _cancel_ended(lake, request, clock, by)
            if isinstance(ended, CancelRequest):  # claimed again (its worker had died): follow the new claim
                waiting[event_id] = ended
            elif ended is not None:
                results[event_id] = ended
                del waiting[event_id]
        elapsed = clock.monotonic() - start
        if not waiting or elapsed >= wait:
            break
        clock.sleep(min(interval, max(wait - elapsed, 0.0)))
    for event_id in waiting:
        results[event_id] = CancelResult(
            event_id, Status.PROCESSING.value, False,
            f"still processing after {wait:g}s: the cancel request stands, and its worker stops at "
            "its next checkpoint (`bridge wait` follows it)", "waiting",
        )
    return results


def _cancel_ended(lake: Lake, request: CancelRequest, clock: Clock, by: str) -> CancelResult | CancelRequest | None:
    """What became of a processing event asked to stop: a result, a new request (the event was
    claimed again), or None (still processing under the same claim)."""
    was = Status.PROCESSING.value
    event = lake.get_event(request.event_id)
    if event is None:
        return CancelResult(request.event_id, was, False, "deleted meanwhile", "refused")
    if event.status == Status.PROCESSING.value:
        if event.claim_token == request.claim_token or not event.claim_token:
            return None
        lake.forget_cancel_request(request.event_id, request.claim_token)
        renewed = replace(request, claim_token=event.claim_token)
        lake.request_cancel(renewed)
        return renewed
    message = cancel_message(request.requested_by, request.requested_at)
    if event.status == Status.FAILED.value and event.error_message == message:
        return CancelResult(request.event_id, was, True, message)  # its worker deleted the request
    lake.forget_cancel_request(request.event_id, request.claim_token)
    if event.status == Status.COMPLETED.value:
        return CancelResult(request.event_id, was, False,
                            "completed before its worker saw the cancel; nothing was changed", "refused")
    if event.status == Status.PENDING.value:  # sent back for a retry meanwhile: cancel it there
        return replace(_cancel_pending(lake, event, clock, by), previous_status=was)
    return CancelResult(request.event_id, was, False,
                        f"{event.status} before its worker saw the cancel: {event.error_message}", "refused")


def _cancel_refusal(event: Event) -> str:
    if event.status == Status.PROCESSING.value:
        return "processing without a claim token: it cannot be asked to stop"
    if event.status == Status.COMPLETED.value:
        return "already completed: it was applied (submit a new event to undo it)"
    if event.status == Status.FAILED.value:
        return "already failed: nothing to cancel"
    return f"status {event.status!r} is neither pending nor processing: nothing to cancel"


def require_cancelled(results: list[CancelResult]) -> None:
    """EventNotFound when an id is unknown, else RefusedError naming each event not cancelled
    (refused, or finished first), else CancelTimeout when one was still processing when the wait
    ended. A request not waited for (`requested`) counts as done."""
    missing = [r.event_id for r in results if r.outcome == "missing"]
    if missing:
        raise EventNotFound(f"no event with id {', '.join(map(repr, missing))}")
    refused = [r for r in results if r.outcome == "refused"]
    if refused:
        raise RefusedError("; ".join(f"{r.event_id}: {r.reason}" for r in refused))
    waiting = [r for r in results if r.outcome == "waiting"]
    if waiting:
        raise CancelTimeout("; ".join(f"{r.event_id}: {r.reason}" for r in waiting))


class CancelTimeout(BridgeError, TimeoutError):
    """A processing event asked to stop was still processing when the wait ended."""


def current_pauses(lake: Lake) -> list[Pause] | None:
    """What is paused; None on an install from before the control table."""
    try:
        return lake.list_pauses()
    except NotInitialized:
        return None


def _pattern_key(pattern: NamePattern) -> tuple[tuple[str, bool], ...]:
    """Patterns that name the same tables compare equal: `users` and `dbo.users`, `*` and `*.*`."""
    if pattern.allows_any:
        return (("*", True),)
    return tuple((p.text, p.is_wildcard or (not p.quoted and "*" in p.text)) for p in pattern.parts)


@dataclass(frozen=True)
class PauseResult:
    pause: Pause
    replaced: list[Pause]  # earlier pauses of the same pattern (their reason and time are gone)


def pause_targets(
    lake: Lake, target: str | None = None, reason: str | None = None, clock: Clock | None = None,
    by: str | None = None,
) -> PauseResult:
    """Workers stop claiming events for targets matching `target` (a pattern as in
    allowed_targets; None: every target) within one poll; an event in hand finishes."""
    pattern = pause_pattern(target if target is not None else "*")
    key = _pattern_key(pattern)
    same = [p for p in lake.list_pauses() if _parsed_key(p.target) == key]
    lake.remove_pauses([p.target for p in same])
    pause = Pause("*" if pattern.allows_any else pattern.text, reason or None, by or who_and_where(),
                  (clock or SystemClock()).now().replace(microsecond=0))
    lake.add_pause(pause)
    return PauseResult(pause, same)


def _parsed_key(text: str) -> tuple[tuple[str, bool], ...] | None:
    try:
        return _pattern_key(pause_pattern(text))
    except ValidationError:
        return None


@dataclass(frozen=True)
class ResumeResult:
    target: str | None  # the pattern asked for; None: everything
    resumed: list[Pause]
    still_paused_by: list[Pause]  # pauses left that still cover every table of `target`


def resume_targets(lake: Lake, target: str | None = None) -> ResumeResult:
    """Remove the pause of `target` (None: every pause), and say which pauses still hold it."""
    pauses = lake.list_pauses()
    if target is None:
        lake.remove_pauses([p.target for p in pauses])
        return ResumeResult(None, pauses, [])
    pattern = pause_pattern(target)
    key = _pattern_key(pattern)
    chosen = [p for p in pauses if _parsed_key(p.target) == key]
    lake.remove_pauses([p.target for p in chosen])
    left = [p for p in pauses if p not in chosen]
    if pattern.allows_any:
        holding = [p for p in left if _parsed_key(p.target) == (("*", True),)]
    else:  # the pattern's parts as a name: `dbo.*` still holds `dbo.stg_*`
        named = TableName(tuple(x.text for x in pattern.parts))
        holding = [p for p in left if pause_holds(p, named)]
    return ResumeResult(pattern.text, chosen, holding)


@dataclass(frozen=True)
class PruneResult:
    before: datetime  # events that finished before this (naive UTC)
    statuses: tuple[str, ...]
    event_ids: list[str]  # deleted, or with dry_run those that would be
    ledger_rows: int
    dry_run: bool


def prune_events(
    lake: Lake,
    target: Target,
    older_than: timedelta,
    *,
    failed: bool = False,
    dry_run: bool = False,
    clock: Clock | None = None,
) -> PruneResult:
    """Delete completed (with `failed`, also failed) events that finished more than `older_than`
    ago, then their ledger rows. Pending and processing events are never touched.

    The order keeps exactly-once: an event row first, its ledger row after. The ledger row is what
    stops an event from being applied twice, so it may only go once its event can never be claimed
    again, i.e. once the event row is gone: a failed event can be requeued, and the lake deletes
    only rows still finished when it deletes them (one requeued meanwhile stays, with its ledger
    row). A crash between the two steps leaves ledger rows of deleted events: harmless, since no
    event with those ids remains (ids are never reused) and a ledger row alone applies nothing.
    The reverse order would, after such a crash or beside a requeue, leave a failed event whose
    change was committed without the ledger row that says so: requeued, it would apply twice."""
    statuses = (Status.COMPLETED.value, Status.FAILED.value) if failed else (Status.COMPLETED.value,)
    before = (clock or SystemClock()).now() - older_than
    target.check_ready()  # an unreachable target stops here, before any event row is deleted
    event_ids = lake.delete_finished_events(before, statuses, dry_run)
    ledger_rows = target.delete_ledger_entries(event_ids, dry_run) if event_ids else 0
    return PruneResult(before, statuses, event_ids, ledger_rows, dry_run)

