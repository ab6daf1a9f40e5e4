"""The event row, its statuses and operations, and the validation of untrusted event input."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from bridge_cli.errors import ValidationError
from bridge_cli.identifiers import (
    TableName,
    check_identifier,
    parse_source_table,
    parse_target_table,
)


class Operation(str, Enum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class Status(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATUSES = (Status.COMPLETED.value, Status.FAILED.value)
KNOWN_STATUSES = frozenset(s.value for s in Status)


def split_counts(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Counts by status -> (the four statuses, statuses bridge does not know: never claimed)."""
    known = {k: v for k, v in sorted(counts.items()) if k in KNOWN_STATUSES}
    unknown = {k: v for k, v in sorted(counts.items()) if k not in KNOWN_STATUSES}
    return known, unknown

# The seed guide's columns, in its order: what existing Databricks jobs write.
SEED_COLUMNS = (
    "event_id", "operation", "source_table", "target_table", "primary_keys", "priority",
    "status", "rows_expected", "rows_affected", "discrepancy", "warning", "error_message",
    "filter_conditions", "metadata", "created_at", "processed_at",
)
# Added by `bridge init` / `bridge init --upgrade`; all nullable, never required of old writers.
LIFECYCLE_COLUMNS = (
    "attempts", "worker_id", "claim_token", "lease_expires_at", "next_attempt_at", "updated_at",
)
ALL_COLUMNS = SEED_COLUMNS + LIFECYCLE_COLUMNS

DEFAULT_PRIORITY = 5
FilterValue = str | int | float | bool | None


@dataclass
class Event:
    """One row of bridge_events, as stored (untrusted: fields may hold anything)."""

    event_id: str
    operation: str | None = None
    source_table: str | None = None
    target_table: str | None = None
    primary_keys: list[str] | None = None
    priority: int | None = None
    status: str | None = None
    rows_expected: int | None = None
    rows_affected: int | None = None
    discrepancy: int | None = None
    warning: str | None = None
    error_message: str | None = None
    filter_conditions: str | None = None
    metadata: str | None = None
    created_at: datetime | None = None
    processed_at: datetime | None = None
    attempts: int | None = None
    worker_id: str | None = None
    claim_token: str | None = None
    lease_expires_at: datetime | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, columns: list[str], row: tuple[Any, ...]) -> Event:
        values = dict(zip(columns, row, strict=True))
        known: dict[str, Any] = {k: values.get(k) for k in ALL_COLUMNS}
        if known["primary_keys"] is not None:
            known["primary_keys"] = [str(k) for k in known["primary_keys"]]
        return cls(**known)


@dataclass(frozen=True)
class Job:
    """A validated event: what the engine will do, with every name parsed and checked."""

    event_id: str
    operation: Operation
    source: TableName | None
    target: TableName
    primary_keys: tuple[str, ...]
    rows_expected: int | None
    filters: dict[str, FilterValue | list[FilterValue]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def identity_insert(self) -> bool:
        return self.metadata.get("identity_insert") is True

    @property
    def engine(self) -> str | None:
        """metadata {"engine": "spark"} stages through the profile's Spark job, "worker" in the
        worker's own process; None lets the profile's spark_min_rows decide."""
        value = self.metadata.get("engine")
        return None if value is None else str(value).lower()


def new_event_id(operation: Operation) -> str:
    # Same shape as the seed's helpers: insert-1a2b3c4d5e6f
    return f"{operation.value.lower()}-{uuid.uuid4().hex[:12]}"


def parse_operation(value: object) -> Operation:
    text = str(value or "").strip().upper()
    try:
        return Operation(text)
    except ValueError:
        raise ValidationError(
            f"unknown operation {value!r}: use INSERT, UPDATE or DELETE"
        ) from None


def parse_filter_conditions(text: str | dict[str, Any] | None) -> dict[str, FilterValue | list[FilterValue]]:
    """filter_conditions: a JSON object {column: value}; a JSON list means IN."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"filter_conditions is not valid JSON: {exc.msg}") from None
    else:
        data = text
    if not isinstance(data, dict):
        raise ValidationError('filter_conditions must be a JSON object like {"column": "value"}')
    result: dict[str, FilterValue | list[FilterValue]] = {}
    for key, value in data.items():
        check_identifier(str(key), "filter_conditions column")
        if isinstance(value, list):
            if not value:
                raise ValidationError(f"filter_conditions[{key!r}] is an empty list")
            for item in value:
                _check_scalar(key, item)
        else:
            _check_scalar(key, value)
        result[str(key)] = value
    return result


def _check_scalar(key: str, value: object) -> None:
    if not (value is None or isinstance(value, str | int | float | bool)):
        raise ValidationError(
            f"filter_conditions[{key!r}] must be a string, number, boolean, null or a list of them"
        )


# metadata {"engine": ...}: where an event's rows are staged. Metadata is the jobs' own free JSON
# (the guide's contract), so another value is noted on the event, never a reason to fail it.
ENGINES = ("spark", "worker")


def parse_metadata(text: str | dict[str, Any] | None) -> dict[str, Any]:
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, dict):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"metadata is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValidationError("metadata must be a JSON object")
    return data


def _check_priority(priority: int | None) -> int:
    if priority is None:
        return DEFAULT_PRIORITY
    if not 1 <= int(priority) <= 10:
        raise ValidationError(f"priority must be between 1 and 10, got {priority}")
    return int(priority)


def build_job(event: Event) -> Job:
    """Validate a stored event; raises ValidationError with a message fit for error_message."""
    operation = parse_operation(event.operation)
    if not event.target_table:
        raise ValidationError("target_table is empty")
    target = parse_target_table(event.target_table)
    keys = tuple(event.primary_keys or ())
    for key in keys:
        check_identifier(key, "primary key column")
    filters = parse_filter_conditions(event.filter_conditions)
    metadata = parse_metadata(event.metadata)
    if event.rows_expected is not None and event.rows_expected < 0:
        raise ValidationError(f"rows_expected must not be negative, got {event.rows_expected}")
    source: TableName | None = None
    if operation is Operation.DELETE:
        if not filters:
            raise ValidationError(
                "DELETE needs filter_conditions, e.g. {\"username\": \"usuario_a_eliminar\"}"
            )
    else:
        if not event.source_table:
            raise ValidationError(f"{operation.value} needs a source_table")
        source = parse_source_table(event.source_table)
        if not keys:
            raise ValidationError(f"{operation.value} needs primary_keys to match rows by")
    return Job(
        event_id=event.event_id,
        operation=operation,
        source=source,
        target=target,
        primary_keys=keys,
        rows_expected=event.rows_expected,
        filters=filters,
        metadata=metadata,
    )


@dataclass(frozen=True)
class SubmitRequest:
    """What `bridge submit` and the job-side API ask for, before it becomes an event row."""

    operation: Operation
    target_table: str
    primary_keys: tuple[str, ...]
    source_table: str | None = None
    rows_expected: int | None = None
    priority: int = DEFAULT_PRIORITY
    filter_conditions: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    event_id: str | None = None


def event_from_request(request: SubmitRequest) -> Event:
    """Validate a submission exactly as the worker will, so a bad one is refused up front."""
    if request.operation is Operation.DELETE and request.source_table:
        raise ValidationError("DELETE takes no source table: give --filter instead")
    if request.rows_expected is not None and request.rows_expected < 0:
        raise ValidationError("rows_expected must not be negative")
    filters = parse_filter_conditions(request.filter_conditions)
    if request.operation is Operation.DELETE:
        missing = [k for k in request.primary_keys if k not in filters]
        if missing:
            raise ValidationError(
                f"DELETE primary keys must appear in the filter: {', '.join(missing)} missing"
            )
    elif filters:
        raise ValidationError("--filter is only for DELETE")
    event = Event(
        event_id=request.event_id or new_event_id(request.operation),
        operation=request.operation.value,
        source_table=request.source_table or ("" if request.operation is Operation.DELETE else None),
        target_table=request.target_table,
        primary_keys=list(request.primary_keys),
        priority=_check_priority(request.priority),
        status=Status.PENDING.value,
        rows_expected=request.rows_expected,
        filter_conditions=json.dumps(filters) if filters else None,
        metadata=json.dumps(request.metadata) if request.metadata else None,
        attempts=0,
    )
    build_job(event)
    return event
