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
    shown,
)
from bridge_cli.untrusted import printable, strict_json


class Operation(str, Enum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    UPSERT = "UPSERT"  # update the keys the target has, insert the others
    REPLACE = "REPLACE"  # delete the slice named by filter_conditions, insert the source

    @property
    def reads_source(self) -> bool:
        return self is not Operation.DELETE


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
    # What an UPSERT or REPLACE did, as JSON: {"inserted": n, "updated": n, "unchanged": n} or
    # {"deleted": n, "inserted": n}.
    "details",
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
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, columns: list[str], row: tuple[Any, ...]) -> Event:
        values = dict(zip(columns, row, strict=True))
        known: dict[str, Any] = {k: values.get(k) for k in ALL_COLUMNS}
        if known["primary_keys"] is not None and isinstance(known["primary_keys"], list | tuple):
            # A NULL element stays None: build_job refuses it, rather than a column named 'None'.
            known["primary_keys"] = [None if k is None else str(k) for k in known["primary_keys"]]
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
    def changed_only(self) -> bool:
        """UPSERT: update only the rows where some column really differs."""
        return self.metadata.get("changed_only") is True

    @property
    def allow_shrink(self) -> bool:
        """REPLACE: let a reload bring fewer than replace_min_ratio of the rows it replaces."""
        return self.metadata.get("allow_shrink") is True

    @property
    def engine(self) -> str | None:
        """metadata {"engine": "spark"} stages through the profile's Spark job, "worker" in the
        worker's own process; None lets the profile's spark_min_rows decide."""
        value = self.metadata.get("engine")
        return None if value is None else str(value).lower()


def duplicate_id_message(event_id: str, copies: int) -> str:
    """Why an event whose id several rows hold is not applied (an id names exactly one event)."""
    return f"event_id {event_id} appears {copies} times in the event table; nothing was applied"


def new_event_id(operation: Operation) -> str:
    # Same shape as the seed's helpers: insert-1a2b3c4d5e6f
    return f"{operation.value.lower()}-{uuid.uuid4().hex[:12]}"


def parse_operation(value: object) -> Operation:
    text = str(value or "").strip().upper()
    try:
        return Operation(text)
    except ValueError:
        raise ValidationError(
            f"unknown operation {shown(str(value))}: use INSERT, UPDATE, DELETE, UPSERT or REPLACE"
        ) from None


# Limits on what an event row may hold, so that a malformed or hostile row fails at once, with one
# line naming the field, instead of exhausting memory or the stack (README, "Security").
MAX_JSON_CHARS = 65536  # filter_conditions, metadata
MAX_JSON_DEPTH = 32
MAX_EVENT_ID_CHARS = 200  # the ledger's event_id column is NVARCHAR(200)
MAX_FILTER_VALUES = 10000  # values in one IN list
_INT64 = 2**63


def text_problem(text: str) -> str | None:
    """Why a text from an event row cannot be used as is: lone surrogates (bytes that were not
    UTF-8) or NUL; None when it is fine."""
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def _nesting(text: str) -> int:
    """How deeply the JSON text nests arrays and objects (strings skipped), without parsing it:
    the parser would recurse once per level and a row of 100,000 '[' would overflow the stack."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _strict_int(text: str) -> int:
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"number {text[:40]} is out of range (64-bit integers only)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key[:40]!r} appears twice")
        result[key] = value
    return result


def parse_json_field(text: str, field: str) -> Any:
    """Strict JSON from an event row: ValidationError naming the field when the text is too long,
    nests too deeply, is not valid UTF-8, has NaN or Infinity, a number out of range or a
    repeated key. bridge never reads or writes anything but strict JSON."""
    if len(text) > MAX_JSON_CHARS:
        raise ValidationError(f"{field} is {len(text):,} characters long; at most {MAX_JSON_CHARS:,}")
    problem = text_problem(text)
    if problem:
        raise ValidationError(f"{field} {problem}")
    if _nesting(text) > MAX_JSON_DEPTH:
        raise ValidationError(f"{field} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return strict_json(text, parse_int=_strict_int, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{field} is not valid JSON: {exc.msg} (char {exc.pos})") from None
    except ValueError as exc:
        raise ValidationError(f"{field} is not valid JSON: {exc}") from None


def parse_filter_conditions(text: str | dict[str, Any] | None) -> dict[str, FilterValue | list[FilterValue]]:
    """filter_conditions: a JSON object {column: value}; a JSON list means IN."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, str):
        data = parse_json_field(text, "filter_conditions")
    else:
        data = parse_json_field(_to_json(text, "filter_conditions"), "filter_conditions")
    if not isinstance(data, dict):
        raise ValidationError('filter_conditions must be a JSON object like {"column": "value"}')
    result: dict[str, FilterValue | list[FilterValue]] = {}
    for key, value in data.items():
        check_identifier(str(key), "filter_conditions column")
        if isinstance(value, list):
            if not value:
                raise ValidationError(f"filter_conditions[{key!r}] is an empty list")
            if len(value) > MAX_FILTER_VALUES:
                raise ValidationError(
                    f"filter_conditions[{key!r}] lists {len(value):,} values; at most "
                    f"{MAX_FILTER_VALUES:,} (split the event)"
                )
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


# metadata keys bridge reads, with the JSON type each must have when present; any other key is
# the job's own and left alone.
METADATA_TYPES: dict[str, tuple[type, str]] = {
    "identity_insert": (bool, "true or false"),
    "engine": (str, 'a string ("spark" or "worker")'),
    "changed_only": (bool, "true or false"),
    "whole_table": (bool, "true or false"),
    "allow_shrink": (bool, "true or false"),
}


def parse_metadata(text: str | dict[str, Any] | None) -> dict[str, Any]:
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    source = text if isinstance(text, str) else _to_json(text, "metadata")
    data = parse_json_field(source, "metadata")
    if not isinstance(data, dict):
        raise ValidationError("metadata must be a JSON object")
    for key, (wanted, expected) in METADATA_TYPES.items():
        if key in data and not isinstance(data[key], wanted):
            raise ValidationError(f"metadata {key!r} must be {expected}, got {json.dumps(data[key])[:40]}")
    return data


def _to_json(value: Any, field: str) -> str:
    """A submitted dict as the JSON text the event row will hold (checked as a stored row is)."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{field} cannot be stored as JSON: {exc}") from None


def _check_priority(priority: int | None) -> int:
    if priority is None:
        return DEFAULT_PRIORITY
    if not 1 <= int(priority) <= 10:
        raise ValidationError(f"priority must be between 1 and 10, got {priority}")
    return int(priority)


def build_job(event: Event) -> Job:
    """Validate a stored event; raises ValidationError with a message fit for error_message.

    The row is untrusted: any fault in it (a wrong type, bytes that are not text, a value out of
    range) is a ValidationError here, so the event fails on its first attempt, never as a retry."""
    try:
        return _build_job(event)
    except ValidationError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, UnicodeError, AttributeError) as exc:
        raise ValidationError(f"malformed event row: {type(exc).__name__}: {str(exc)[:200]}") from None


def check_event_id(event_id: object) -> str:
    if not isinstance(event_id, str) or not event_id.strip():
        raise ValidationError("event_id is empty")
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise ValidationError(f"event_id is {len(event_id):,} characters long; at most {MAX_EVENT_ID_CHARS}")
    problem = text_problem(event_id)
    if problem is None and printable(event_id) != event_id:  # it could not be shown as it is
        problem = "holds control or bidirectional-override characters"
    if problem:
        raise ValidationError(f"event_id {problem}")
    return event_id


def _check_replace_slice(filters: dict[str, Any], metadata: dict[str, Any]) -> None:
    """REPLACE reloads the slice filter_conditions names; the whole table only when asked for
    by name, so that a job which forgot its filter cannot empty a table."""
    whole = metadata.get("whole_table") is True
    if not filters and not whole:
        raise ValidationError(
            'REPLACE needs filter_conditions naming the slice to reload, e.g. {"month": "2026-03"}; '
            'to reload the whole table give {} with metadata {"whole_table": true}'
        )
    if filters and whole:
        raise ValidationError(
            'REPLACE with metadata {"whole_table": true} takes empty filter_conditions ({}); '
            "leave out one of the two"
        )


def _build_job(event: Event) -> Job:
    check_event_id(event.event_id)
    for name in ("operation", "source_table", "target_table"):
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{name} must be text, got {type(value).__name__}")
        if isinstance(value, str) and (problem := text_problem(value)):
            raise ValidationError(f"{name} {problem}")
    operation = parse_operation(event.operation)
    if not event.target_table:
        raise ValidationError("target_table is empty")
    target = parse_target_table(event.target_table)
    if event.primary_keys is not None and not isinstance(event.primary_keys, list | tuple):
        raise ValidationError("primary_keys must be an array of column names")
    keys = tuple(event.primary_keys or ())
    if len(keys) > 64:
        raise ValidationError(f"primary_keys lists {len(keys)} columns; at most 64")
    for key in keys:
        if not isinstance(key, str):
            raise ValidationError("primary_keys holds a null or a non-text value")
        check_identifier(key, "primary key column")
    if len(set(k.lower() for k in keys)) != len(keys):
        raise ValidationError("primary_keys names a column twice")
    filters = parse_filter_conditions(event.filter_conditions)
    metadata = parse_metadata(event.metadata)
    if event.rows_expected is not None and (
        isinstance(event.rows_expected, bool) or not isinstance(event.rows_expected, int)
    ):
        raise ValidationError("rows_expected must be an integer")
    if event.rows_expected is not None and event.rows_expected < 0:
        raise ValidationError(f"rows_expected must not be negative, got {event.rows_expected}")
    source: TableName | None = None
    if operation is Operation.DELETE and not filters:
        raise ValidationError(
            "DELETE needs filter_conditions, e.g. {\"username\": \"usuario_a_eliminar\"}"
        )
    if operation is Operation.REPLACE:
        _check_replace_slice(filters, metadata)
    if operation is Operation.UPSERT and filters:
        # INSERT and UPDATE ignore a stored filter, as they always have; an UPSERT is new, so a
        # filter on one (perhaps meant as a REPLACE's slice) is refused rather than ignored.
        raise ValidationError("UPSERT takes no filter_conditions (a slice to reload is a REPLACE)")
    if operation.reads_source:
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
    elif filters and request.operation is not Operation.REPLACE:
        raise ValidationError("--filter is only for DELETE and REPLACE")
    event = Event(
        event_id=request.event_id or new_event_id(request.operation),
        operation=request.operation.value,
        source_table=request.source_table or ("" if request.operation is Operation.DELETE else None),
        target_table=request.target_table,
        primary_keys=list(request.primary_keys),
        priority=_check_priority(request.priority),
        status=Status.PENDING.value,
        rows_expected=request.rows_expected,
        filter_conditions=_to_json(filters, "filter_conditions") if filters else None,
        metadata=_to_json(request.metadata, "metadata") if request.metadata else None,
        attempts=0,
    )
    build_job(event)
    return event
