"""Where events and source tables live: the Lake protocol every lake adapter implements."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bridge_cli.errors import NotInitialized
from bridge_cli.events import DEFAULT_PRIORITY, LIFECYCLE_COLUMNS, Event, Status
from bridge_cli.identifiers import TableName

if TYPE_CHECKING:
    import pyarrow as pa


# get_events lists at most this many rows of one id (a flood of copies is still refused, whole).
MAX_COPIES_LISTED = 100


@dataclass(frozen=True)
class LakeCapabilities:
    # Whether UPDATE reports affected rows; when not, claims are confirmed by reading back.
    reliable_row_counts: bool
    # Whether two processes can write the event table at the same moment (else: waits for a lock).
    concurrent_writers: bool


@dataclass(frozen=True)
class QueueStats:
    """The queue at a glance, from one query: events by status and when the oldest pending event
    was created (naive UTC; None when nothing is pending)."""

    counts: dict[str, int]
    oldest_pending_at: datetime | None
    paused: tuple[str, ...] | None = None  # the paused target patterns; None: not read


@dataclass(frozen=True)
class WorkerBeat:
    """One worker's row in the workers table, as its last heartbeat wrote it (times naive UTC)."""

    worker_id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen: datetime
    # When the worker counts as gone unless it is heard from again: last_seen + lease_seconds
    # while it works (3 missed lease renewals), + its next idle wait too while idle.
    expires_at: datetime
    event_id: str | None = None  # the event in hand; None while idle
    phase: str | None = None  # claimed, reading, staging, applying... (see heartbeat.py)
    rows: int | None = None  # rows read and staged so far
    rows_per_second: float | None = None

    def alive(self, now: datetime) -> bool:
        return now <= self.expires_at


# The workers table's columns, in order, as WorkerBeat's fields; `rows` is `rows_done` in SQL.
WORKER_COLUMNS = (
    "worker_id", "host", "pid", "version", "started_at", "last_seen", "expires_at", "event_id",
    "phase", "rows_done", "rows_per_second",
)


def beat_values(beat: WorkerBeat) -> list[Any]:
    return [beat.worker_id, beat.host, beat.pid, beat.version, beat.started_at, beat.last_seen,
            beat.expires_at, beat.event_id, beat.phase, beat.rows, beat.rows_per_second]


def beat_from_row(row: Sequence[Any]) -> WorkerBeat:
    (worker_id, host, pid, version, started, seen, expires, event_id, phase, rows, rate) = row
    return WorkerBeat(
        str(worker_id), str(host or ""), int(pid or 0), str(version or ""), started, seen,
        expires if expires is not None else seen, event_id, phase,
        None if rows is None else int(rows), None if rate is None else float(rate),
    )


def workers_table_name(event_table: TableName) -> TableName:
    """The workers table beside the event table: `bridge_events` -> `bridge_workers`; any other
    event table name gets `_workers` appended, so each queue has its own workers table."""
    name = event_table.table
    ends = name.lower().endswith("events")
    workers = name[: -len("events")] + "workers" if ends else f"{name}_workers"
    return TableName((*event_table.parts[:-1], workers))


def control_table_name(event_table: TableName) -> TableName:
    """The control table beside the event table (pauses and cancel requests): `bridge_events` ->
    `bridge_control`; any other event table name gets `_control` appended."""
    name = event_table.table
    ends = name.lower().endswith("events")
    control = name[: -len("events")] + "control" if ends else f"{name}_control"
    return TableName((*event_table.parts[:-1], control))


@dataclass(frozen=True)
class Pause:
    """A row of the control table: workers claim no event whose target matches `target` (a pattern
    as in allowed_targets; `*` is everything). Times naive UTC."""

    target: str
    reason: str | None
    paused_by: str  # USER@HOST
    paused_at: datetime


@dataclass(frozen=True)
class CancelRequest:
    """A row of the control table: the worker holding this claim of the event stops it."""

    event_id: str
    claim_token: str
    requested_by: str  # USER@HOST
    requested_at: datetime


# The control table's columns: kind 'pause' (target, reason) or 'cancel' (event_id, claim_token).
CONTROL_COLUMNS = ("kind", "target", "event_id", "claim_token", "reason", "requested_by", "requested_at")
PAUSE_SELECT = "SELECT target, reason, requested_by, requested_at FROM {table} WHERE kind = 'pause' ORDER BY target"


def pause_values(pause: Pause) -> list[Any]:
    return ["pause", pause.target, None, None, pause.reason, pause.paused_by, pause.paused_at]


def cancel_values(request: CancelRequest) -> list[Any]:
    return ["cancel", None, request.event_id, request.claim_token, None, request.requested_by,
            request.requested_at]


def control_missing(event_table: TableName) -> NotInitialized:
    return NotInitialized(
        f"control table {control_table_name(event_table)} does not exist: run `bridge init` (an "
        "existing install keeps its events and gains the table)"
    )


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: str


class Lake(Protocol):
    capabilities: LakeCapabilities
    event_table_name: str

    def init_event_table(self, upgrade: bool) -> list[str]:
        """Create the event table (or add missing lifecycle columns) and the workers and control
        tables beside it (see `workers_table_name`, `control_table_name`); return what was done."""
        ...

    def insert_event(self, event: Event) -> None: ...

    def get_event(self, event_id: str) -> Event | None: ...

    def get_events(self, event_id: str) -> list[Event]:
        """Every row with this event_id, in claim order (at most MAX_COPIES_LISTED): one, unless
        someone wrote the id twice (Delta has no unique constraint)."""
        ...

    def list_events(
        self, status: str | None, limit: int, where: EventFilter | None = None
    ) -> list[Event]:
        """Newest first; `where` narrows the list (see `list_conditions`)."""
        ...

    def count_by_status(self) -> dict[str, int]: ...

    def queue_stats(self) -> QueueStats:
        """Counts by status and the oldest pending event's created_at, in one query (a worker's
        metrics refresh it once per poll)."""
        ...

    def delete_finished_events(
        self, before: datetime, statuses: Sequence[str], dry_run: bool
    ) -> list[str]:
        """Delete the events in `statuses` (completed and/or failed only) that finished before
        `before` (processed_at, or created_at when it is empty); return the ids deleted, or with
        `dry_run` those that would be, deleting nothing. A row whose status changed meanwhile (a
        failed event requeued) is left alone and not returned."""
        ...

    def claimable_events(
        self, now: datetime, limit: int, event_id: str | None, per_target: bool = True
    ) -> list[Event]:
        """Pending and due, or processing with an expired lease; in claim order. With per_target,
        only events at the head of their target's line (see `first_in_line_condition`)."""
        ...

    def update_event_if(
        self, event_id: str, expected: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> bool:
        """Conditional update: set `changes` only where every `expected` column still holds
        (None means IS NULL). True when this call changed the row (confirmed by reading back
        where row counts are unreliable)."""
        ...

    def heartbeat(self, beat: WorkerBeat) -> None:
        """Insert or replace the worker's row in the workers table (one statement)."""
        ...

    def list_workers(self) -> list[WorkerBeat]:
        """Every row of the workers table, alive or gone, by worker id."""
        ...

    def forget_worker(self, worker_id: str, expired_before: datetime | None = None) -> None:
        """Delete the worker's row: a worker that stops cleanly, or with `expired_before` a gone
        one (`bridge workers --forget-gone`), only while its row says it expired before then (a
        worker heard from meanwhile keeps its row)."""
        ...

    def list_pauses(self) -> list[Pause]:
        """The pauses in the control table, by target (NotInitialized when it does not exist)."""
        ...

    def add_pause(self, pause: Pause) -> None:
        """Record a pause, replacing one with the same `target` text."""
        ...

    def remove_pauses(self, targets: Sequence[str]) -> None:
        """Delete the pauses with these `target` texts."""
        ...

    def request_cancel(self, request: CancelRequest) -> None:
        """Record a cancel request for one claim of an event."""
        ...

    def cancel_request(self, event_id: str, claim_token: str) -> CancelRequest | None:
        """The cancel request for this claim, if any (one statement)."""
        ...

    def forget_cancel_request(self, event_id: str, claim_token: str) -> None:
        """Delete the cancel request for this claim."""
        ...

    def source_columns(self, table: TableName) -> list[SourceColumn]:
        """The source's columns; PermanentError naming the table when it does not exist."""
        ...

    def read_source(
        self, table: TableName, columns: list[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """Stream the listed columns in batches of at most batch_rows rows."""
        ...

    def count_rows(self, table: TableName) -> int:
        """The source's row count (asked only when a profile sets spark_min_rows; Delta answers
        it from the table's metadata)."""
        ...


def lifecycle_columns_to_add(event_table: str, existing: set[str], upgrade: bool) -> list[str]:
    """The lifecycle columns an existing event table lacks (e.g. one made from the seed guide);
    without --upgrade that is an error saying how to fix it."""
    missing = [c for c in LIFECYCLE_COLUMNS if c not in existing]
    if missing and not upgrade:
        raise NotInitialized(
            f"event table {event_table} lacks lifecycle columns {', '.join(missing)}: run `bridge init --upgrade`"
        )
    return missing


def event_table_problem(event_table: str, existing: set[str] | None, cause: object) -> NotInitialized:
    """Why an event table a query failed on cannot be used, as `bridge init` would say it: it is
    missing, it lacks the lifecycle columns (made from the guide), or it is otherwise out of date."""
    if not existing:
        return NotInitialized(f"event table {event_table} does not exist: run `bridge init`")
    try:
        lifecycle_columns_to_add(event_table, existing, upgrade=False)
    except NotInitialized as missing:
        return missing
    return NotInitialized(f"event table {event_table} is out of date ({cause}): run `bridge init --upgrade`")


def claimable_condition(now_mark: str, due_only: bool = True) -> str:
    """Which events a worker may claim, in any lake's SQL: pending and due, or processing with an
    expired lease (its worker died). `now_mark` is the placeholder for the current time. Without
    `due_only` (an event asked for by id) a pending event's retry delay is not waited out."""
    pending = "status = 'pending'"
    if due_only:
        pending += f" AND (next_attempt_at IS NULL OR next_attempt_at <= {now_mark})"
    return f"(({pending}) OR (status = 'processing' AND lease_expires_at < {now_mark}))"


# Claim order: lower priority number first (a missing priority counts as the default), then oldest.
CLAIM_ORDER = f"coalesce(priority, {DEFAULT_PRIORITY}), created_at NULLS LAST, event_id"


def target_key(column: str) -> str:
    """A target table name as one key in any lake's SQL: case-insensitive (as SQL Server's default
    collation is), backticks dropped, and a bare table name meaning dbo.table (as the worker reads it)."""
    bare = f"lower(replace(trim({column}), '`', ''))"
    return f"(CASE WHEN instr({bare}, '.') > 0 THEN {bare} ELSE concat('dbo.', {bare}) END)"


def target_line(target_table: str | None) -> str | None:
    """`target_key` in Python, for messages about which event waits for which."""
    if target_table is None:
        return None
    bare = target_table.strip().replace("`", "").lower()
    return bare if "." in bare else f"dbo.{bare}"


@dataclass(frozen=True)
class EventFilter:
    """What `bridge status` may narrow a list of events to, besides the status; None means any."""

    target: str | None = None  # compared as the worker compares targets (`target_key`)
    operation: str | None = None  # INSERT, UPDATE or DELETE, in any case
    since: datetime | None = None  # created at or after (naive UTC)
    worker_id: str | None = None


def list_conditions(status: str | None, where: EventFilter | None) -> list[tuple[str, str, Any]]:
    """The conditions of a list of events, in any lake's SQL: (condition with `{mark}` where its
    value's placeholder goes, parameter name, value). Values always travel as parameters."""
    where = where or EventFilter()
    conditions: list[tuple[str, str, Any]] = []
    if status is not None:
        conditions.append(("status = {mark}", "status", status))
    if where.target is not None:
        conditions.append((f"{target_key('target_table')} = {{mark}}", "target", target_line(where.target)))
    if where.operation is not None:
        conditions.append(("upper(operation) = {mark}", "operation", where.operation.upper()))
    if where.since is not None:
        conditions.append(("created_at >= {mark}", "since", where.since))
    if where.worker_id is not None:
        conditions.append(("worker_id = {mark}", "worker_id", where.worker_id))
    return conditions


# When a finished event finished: a cancelled or failed event has processed_at, and a row written
# by hand may not.
FINISHED_AT = "coalesce(processed_at, created_at)"


def finished_statuses(statuses: Sequence[str]) -> tuple[str, ...]:
    """The statuses `delete_finished_events` may delete: completed and failed, never one a worker
    may still claim (pending, processing)."""
    chosen = tuple(dict.fromkeys(statuses))
    if not chosen or not set(chosen) <= {Status.COMPLETED.value, Status.FAILED.value}:
        raise ValueError(f"only completed and failed events are ever deleted, not {chosen!r}")
    return chosen


def claim_order_key(event: Event) -> tuple[Any, ...]:
    """CLAIM_ORDER in Python."""
    created = event.created_at
    return (
        DEFAULT_PRIORITY if event.priority is None else event.priority,
        created is None,
        created.timestamp() if created is not None else 0.0,
        event.event_id,
    )


def first_in_line_condition(table: str) -> str:
    """Per-target order: events for one target table form a line, and only its head may be claimed.
    The head is the target's processing event when there is one (one at a time), else its first
    unfinished event in claim order, due or not: a retry waiting out its backoff keeps its place.
    Events for different targets never wait for each other. `table` is the quoted event table."""
    line = f"coalesce({target_key('target_table')}, event_id)"  # no target: a line of its own
    return (
        "event_id IN (SELECT event_id FROM (SELECT event_id, row_number() OVER ("
        f"PARTITION BY {line} ORDER BY CASE WHEN status = 'processing' THEN 0 ELSE 1 END, "
        f"{CLAIM_ORDER}) AS place FROM {table} WHERE status IN ('pending', 'processing')) AS line "
        "WHERE place = 1)"
    )


# One query for QueueStats, in any lake's SQL: (status, count, oldest created_at) per status.
QUEUE_STATS_SELECT = "SELECT coalesce(status, '?'), count(*), min(created_at) FROM {table} GROUP BY 1"


def queue_stats_from_rows(rows: list[Any]) -> QueueStats:
    counts = {str(s): int(n) for s, n, _ in rows}
    oldest = next((o for s, _, o in rows if s == "pending"), None)
    return QueueStats(counts, oldest)
