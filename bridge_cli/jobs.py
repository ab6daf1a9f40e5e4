"""The job-side API: the seed guide's functions, for Databricks jobs to import.

    from bridge_cli.jobs import sync_insert_to_sql, wait_for_event

Inside a Databricks job (an active SparkSession) the event row is written with
`spark.sql(..., args=...)` parameter binding; elsewhere through the lake of the bridge.yaml
profile (BRIDGE_CONFIG / BRIDGE_PROFILE), i.e. databricks-sql-connector. Requests are validated
exactly as `bridge submit` validates them, and no value is ever formatted into SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge_cli import api
from bridge_cli.config import DEFAULT_EVENT_TABLE, Settings, load_settings
from bridge_cli.errors import EventNotFound
from bridge_cli.events import ALL_COLUMNS, DEFAULT_PRIORITY, Event, Operation, SubmitRequest
from bridge_cli.identifiers import parse_table_name, quote_backtick
from bridge_cli.lakes import CLAIM_ORDER, MAX_COPIES_LISTED, Lake

log = logging.getLogger("bridge")

STATUS_FIELDS = (
    "event_id", "operation", "status", "rows_expected", "rows_affected", "discrepancy", "warning",
    "error_message", "created_at", "processed_at",
)
_SPARK_TYPES = {
    "primary_keys": "ARRAY<STRING>", "priority": "INT", "rows_expected": "INT", "rows_affected": "INT",
    "discrepancy": "INT", "attempts": "INT", "created_at": "TIMESTAMP", "processed_at": "TIMESTAMP",
    "lease_expires_at": "TIMESTAMP", "next_attempt_at": "TIMESTAMP", "updated_at": "TIMESTAMP",
}


# What a job writes and reads back: every column but `details`, which only a worker writes, so a
# job keeps working on an event table that `bridge init --upgrade` has not reached yet.
JOB_COLUMNS = tuple(c for c in ALL_COLUMNS if c != "details")


class SparkEventTable:
    """The event table through a SparkSession: what a job needs to submit and to wait."""

    def __init__(self, spark: Any, event_table: str = DEFAULT_EVENT_TABLE) -> None:
        self.spark = spark
        name = parse_table_name(event_table, min_parts=2, max_parts=3, what="event_table")
        self.table = ".".join(quote_backtick(p) for p in name.parts)
        self.event_table_name = event_table

    def insert_event(self, event: Event) -> None:
        values = event.to_dict()
        args: dict[str, Any] = {}
        marks = []
        for column in JOB_COLUMNS:
            value = values[column]
            if column == "primary_keys":
                keys = list(value or [])
                # One parameter per key: array(...) of bound strings.
                marks.append("array(" + ", ".join(f"CAST(:pk{i} AS STRING)" for i in range(len(keys))) + ")"
                             if value is not None else "CAST(NULL AS ARRAY<STRING>)")
                args.update({f"pk{i}": k for i, k in enumerate(keys)})
                continue
            if isinstance(value, datetime):
                # An explicit +00:00 keeps the instant whatever the session's time zone.
                value = value.isoformat(sep=" ") + "+00:00"
            marks.append(f"CAST(:{column} AS {_SPARK_TYPES.get(column, 'STRING')})")
            args[column] = value
        columns = ", ".join(quote_backtick(c) for c in JOB_COLUMNS)
        self.spark.sql(f"INSERT INTO {self.table} ({columns}) VALUES ({', '.join(marks)})", args=args)

    def get_event(self, event_id: str) -> Event | None:
        rows = self.get_events(event_id)
        return rows[0] if rows else None

    def get_events(self, event_id: str) -> list[Event]:
        # Timestamps as UTC text: collect() would turn them into the driver's local wall time.
        columns = ", ".join(
            f"CAST(to_utc_timestamp({quote_backtick(c)}, current_timezone()) AS STRING)"
            if _SPARK_TYPES.get(c) == "TIMESTAMP" else quote_backtick(c)
            for c in JOB_COLUMNS
        )
        rows = self.spark.sql(
            f"SELECT {columns} FROM {self.table} WHERE event_id = :event_id ORDER BY {CLAIM_ORDER} "
            f"LIMIT {MAX_COPIES_LISTED}", args={"event_id": event_id}
        ).collect()
        events = []
        for row in rows:
            values = tuple(
                datetime.fromisoformat(v) if v is not None and _SPARK_TYPES.get(c) == "TIMESTAMP" else v
                for c, v in zip(JOB_COLUMNS, row, strict=True)
            )
            events.append(Event.from_row(list(JOB_COLUMNS), values))
        return events


@dataclass
class _Context:
    store: Any = None  # a Lake or a SparkEventTable
    options: dict[str, Any] = field(default_factory=dict)
    settings: Settings | None = None  # the profile whose policy a submission is checked against


_context = _Context()


def use(*, spark: Any = None, lake: Lake | None = None, event_table: str | None = None,
        config: str | None = None, profile: str | None = None, settings: Settings | None = None) -> None:
    """Choose where events go: a SparkSession, a lake, or a bridge.yaml profile (default: the
    active SparkSession if there is one, else the profile from the environment). Submissions are
    checked against `settings`, else the profile (its allowed_sources and allowed_targets)."""
    _context.settings = settings
    _context.options = {"config": config, "profile": profile}
    if spark is not None:
        _context.store = SparkEventTable(spark, event_table or DEFAULT_EVENT_TABLE)
    elif lake is not None:
        _context.store = lake
    else:
        _context.store = None


def _store() -> Any:
    if _context.store is not None:
        return _context.store
    spark = _active_spark()
    if spark is not None:
        _context.store = SparkEventTable(spark)
        return _context.store
    from bridge_cli.adapters import open_lake

    _context.store = open_lake(_settings())
    return _context.store


def _settings() -> Settings:
    """The profile (bridge.yaml and BRIDGE_* variables, or the embedded default) whose policy
    submissions are checked against, as `bridge submit` checks them."""
    if _context.settings is None:
        _context.settings = load_settings(_context.options.get("config"), _context.options.get("profile"))
    return _context.settings


def _active_spark() -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def _submit(request: SubmitRequest) -> str:
    event = api.submit_event(_store(), request, _settings())
    print(f"[{request.operation.value}] Evento creado: {event.event_id}")
    return event.event_id


def _sync_from_source(
    operation: Operation, source_table: str, target_table: str, primary_keys: list[str],
    rows_expected: int | None, priority: int, metadata: dict[str, Any] | None,
) -> str:
    return _submit(SubmitRequest(operation, target_table, tuple(primary_keys), source_table=source_table,
                                 rows_expected=rows_expected, priority=priority, metadata=metadata))


def sync_insert_to_sql(
    source_table: str,
    target_table: str,
    primary_keys: list[str],
    rows_expected: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Create an event that inserts the source's new rows into SQL Server; returns its id."""
    return _sync_from_source(Operation.INSERT, source_table, target_table, primary_keys, rows_expected,
                             priority, metadata)


def sync_update_to_sql(
    source_table: str,
    target_table: str,
    primary_keys: list[str],
    rows_expected: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Create an event that updates the rows matched by primary_keys; returns its id."""
    return _sync_from_source(Operation.UPDATE, source_table, target_table, primary_keys, rows_expected,
                             priority, metadata)


def sync_upsert_to_sql(
    source_table: str,
    target_table: str,
    primary_keys: list[str],
    rows_expected: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    metadata: dict[str, Any] | None = None,
    *,
    changed_only: bool = False,
) -> str:
    """Create an event that makes the target match the source by key: rows whose key the target
    has are updated, the others inserted, in one transaction; returns its id. `changed_only`
    updates only rows where some column differs."""
    extra = {"changed_only": True} if changed_only else {}
    return _sync_from_source(Operation.UPSERT, source_table, target_table, primary_keys, rows_expected,
                             priority, _with(metadata, extra))


def sync_replace_in_sql(
    source_table: str,
    target_table: str,
    primary_keys: list[str],
    filter_conditions: dict[str, Any],
    rows_expected: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    metadata: dict[str, Any] | None = None,
    *,
    whole_table: bool = False,
    allow_shrink: bool = False,
) -> str:
    """Create an event that reloads a slice: the target rows matching filter_conditions are
    replaced by the source's rows, in one transaction; returns its id. An empty filter_conditions
    reloads the whole table, and needs `whole_table=True`."""
    extra = {key: True for key, on in (("whole_table", whole_table), ("allow_shrink", allow_shrink)) if on}
    return _submit(SubmitRequest(Operation.REPLACE, target_table, tuple(primary_keys),
                                 source_table=source_table, filter_conditions=filter_conditions,
                                 rows_expected=rows_expected, priority=priority,
                                 metadata=_with(metadata, extra)))


def _with(metadata: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any] | None:
    return {**(metadata or {}), **extra} or None


def sync_delete_from_sql(
    target_table: str,
    primary_keys: list[str],
    filter_conditions: dict[str, Any],
    priority: int = DEFAULT_PRIORITY,
    rows_expected: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Create an event that deletes the rows matching filter_conditions; returns its id."""
    return _submit(SubmitRequest(Operation.DELETE, target_table, tuple(primary_keys),
                                 filter_conditions=filter_conditions, rows_expected=rows_expected,
                                 priority=priority, metadata=metadata))


def _status(event: Event) -> dict[str, Any]:
    values = event.to_dict()
    return {key: values[key] for key in STATUS_FIELDS}


def check_event_status(event_id: str) -> dict[str, Any] | None:
    """The event's status fields, as the seed guide returns them; None when there is no such event.
    An id written more than once reads as failed (see api.get_event)."""
    try:
        return _status(api.get_event(_store(), event_id))
    except EventNotFound:
        return None


def wait_for_event(event_id: str, timeout_seconds: float = 300, poll_interval: float = 10) -> dict[str, Any]:
    """Wait until the event is completed or failed. TimeoutError after timeout_seconds;
    ValueError when there is no such event (as in the seed guide)."""

    def progress(event: Event, elapsed: float) -> None:
        print(f"[{int(elapsed)}s] Esperando... estado: {event.status}")

    try:
        event = api.wait_for_event(_store(), event_id, timeout_seconds, poll_interval, on_poll=progress)
    except EventNotFound:
        raise ValueError(f"Evento no encontrado: {event_id}") from None
    except api.WaitTimeout:
        raise TimeoutError(f"Evento {event_id} no se procesó en {timeout_seconds}s") from None
    return _status(event)
