"""The Databricks lake: the event table and source tables in a SQL warehouse.

Talks to the warehouse through databricks-sql-connector with native named parameters (`:name`);
identifiers are parsed and backtick-quoted. DML row counts are not trusted (not every server
returns them): a conditional update is confirmed by reading the row back. A concurrent-modification
error (Delta's ConcurrentModificationException family, Iceberg's ValidationException) is a lost
race, retried for our own writes and "not claimed" for claims.

TIMESTAMP values are instants: they are read time-zone aware and handed to the target converted
to UTC wall time (or to the profile's `timestamp_zone`), since SQL Server DATETIME2 has no zone.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from bridge_cli.clock import to_naive_utc
from bridge_cli.config import DEFAULT_EVENT_TABLE, ConfigError, Settings
from bridge_cli.errors import BridgeError, ConnectionFailure, NotInitialized, PermanentError, TransientError
from bridge_cli.events import ALL_COLUMNS, Event
from bridge_cli.identifiers import TableName, parse_table_name, quote_backtick
from bridge_cli.lakes import (
    CLAIM_ORDER,
    CONTROL_COLUMNS,
    FINISHED_AT,
    MAX_COPIES_LISTED,
    PAUSE_SELECT,
    QUEUE_STATS_SELECT,
    WORKER_COLUMNS,
    CancelRequest,
    EventFilter,
    LakeCapabilities,
    Pause,
    QueueStats,
    SourceColumn,
    WorkerBeat,
    beat_from_row,
    beat_values,
    cancel_values,
    claimable_condition,
    control_missing,
    control_table_name,
    event_table_problem,
    finished_statuses,
    first_in_line_condition,
    lifecycle_columns_to_add,
    list_conditions,
    pause_values,
    queue_stats_from_rows,
    workers_table_name,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("bridge")

COLUMN_TYPES = {
    "event_id": "STRING", "operation": "STRING", "source_table": "STRING", "target_table": "STRING",
    "primary_keys": "ARRAY<STRING>", "priority": "INT", "status": "STRING", "rows_expected": "INT",
    "rows_affected": "INT", "discrepancy": "INT", "warning": "STRING", "error_message": "STRING",
    "filter_conditions": "STRING", "metadata": "STRING", "created_at": "TIMESTAMP",
    "processed_at": "TIMESTAMP", "attempts": "INT", "worker_id": "STRING", "claim_token": "STRING",
    "lease_expires_at": "TIMESTAMP", "next_attempt_at": "TIMESTAMP", "updated_at": "TIMESTAMP",
    "details": "STRING",
}
assert tuple(COLUMN_TYPES) == ALL_COLUMNS

WORKER_TYPES = {
    "worker_id": "STRING", "host": "STRING", "pid": "INT", "version": "STRING",
    "started_at": "TIMESTAMP", "last_seen": "TIMESTAMP", "expires_at": "TIMESTAMP",
    "event_id": "STRING", "phase": "STRING", "rows_done": "BIGINT", "rows_per_second": "DOUBLE",
}
assert tuple(WORKER_TYPES) == WORKER_COLUMNS

CONTROL_TYPES = {
    "kind": "STRING", "target": "STRING", "event_id": "STRING", "claim_token": "STRING",
    "reason": "STRING", "requested_by": "STRING", "requested_at": "TIMESTAMP",
}
assert tuple(CONTROL_TYPES) == CONTROL_COLUMNS

_CONFLICT_MARKERS = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
    "ProtocolChangedException", "DELTA_CONCURRENT", "ConcurrentModificationException",
    "org.apache.iceberg.exceptions.ValidationException", "CommitFailedException",
    # Iceberg (the stand-in's tables): a row-level UPDATE whose scan snapshot was replaced by a
    # concurrent commit (seen with 2 workers recording results at once).
    "has been concurrently modified",
)
_MISSING_MARKERS = ("TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND", "UNRESOLVED_COLUMN", "NoSuchTableException")
_IDS_PER_STATEMENT = 200  # event ids bound as parameters in one DELETE or SELECT
_ERROR_CLASS = re.compile(r"\[([A-Z_]+(?:\.[A-Z_]+)?)\]")
_MAX_MESSAGE = 600


def _names_missing_object(exc: BaseException) -> bool:
    """The warehouse says a table, schema or column does not exist."""
    return any(marker in str(exc) for marker in _MISSING_MARKERS)


class LostRace(BridgeError):
    """Another writer changed the same data at the same moment (a concurrent-modification error)."""


def short_message(exc: BaseException) -> str:
    """The server's first line, without the Java stack trace the warehouse appends."""
    text = str(exc)
    for marker in ("Error running query: ",):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.split("\n\tat ", 1)[0].split("\n", 1)[0].strip()
    return text[:_MAX_MESSAGE]


def sort_error(exc: BaseException, what: str) -> BridgeError:
    text = str(exc)
    if any(marker in text for marker in _CONFLICT_MARKERS):
        return LostRace(f"{what}: concurrent modification ({short_message(exc)})")
    found = _ERROR_CLASS.search(text)
    error_class = found.group(1) if found else ""
    name = type(exc).__name__
    if name in ("ServerOperationError", "ProgrammingError", "NotSupportedError") or error_class:
        return PermanentError(f"{what}: {short_message(exc)}")
    # RequestError, OperationalError, network and timeout errors: worth another try.
    return TransientError(f"{what}: {name}: {short_message(exc)}")


def _param(value: Any) -> Any:
    if isinstance(value, datetime):  # naive UTC inside bridge; the warehouse gets the instant
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    return value


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_naive_utc(value)
    if value is not None and hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return list(value.tolist())  # ARRAY columns arrive as numpy arrays
    return value


class DatabricksLake:
    capabilities = LakeCapabilities(reliable_row_counts=False, concurrent_writers=True)

    def __init__(self, settings: Settings, patient: bool = False) -> None:
        config = settings.lake
        self.source = config.source
        missing = [k for k in ("server_hostname", "http_path") if not config.get(k)]
        if missing:
            raise ConfigError(f"{config.source}: missing {', '.join(missing)} for kind databricks")
        self.server_hostname = str(config.get("server_hostname")).removeprefix("https://").rstrip("/")
        self.http_path = str(config.get("http_path"))
        self.port = int(config.get("port") or 443)
        self.token = config.get("token") or None
        self.auth_profile = config.get("profile")
        self.auth_timeout = int(config.get("auth_timeout", 60))
        name = str(config.get("event_table") or DEFAULT_EVENT_TABLE)
        self.event_table = parse_table_name(name, min_parts=3, max_parts=3, what="event_table")
        self.event_table_name = name
        self.fetch_rows = int(config.get("fetch_rows") or settings.batch_rows)
        self.buffer_bytes = int(config.get("buffer_bytes") or 16 * 1024 * 1024)
        self.catalog = config.get("catalog")
        self.schema = config.get("schema")
        session = config.get("session_configuration") or {}
        if not isinstance(session, dict):
            raise ConfigError(f"{config.source}.session_configuration: must be a mapping")
        self.session_configuration = {str(k): str(v) for k, v in session.items()}
        self.timestamp_zone = str(config.get("timestamp_zone") or "UTC")
        self.conflict_retries = int(config.get("conflict_retries", 8))
        # How long the connector retries one request to an unreachable or busy warehouse before the
        # error reaches bridge (its own default is 900 s: a worker hung on a read, a lease renewal or
        # a claim for 15 minutes). bridge retries an event, a claim and a renewal itself.
        retry_seconds = config.get("retry_seconds", 120)
        try:
            self.retry_seconds = float(retry_seconds)
        except (TypeError, ValueError):
            self.retry_seconds = -1.0
        if isinstance(retry_seconds, bool) or not 1 <= self.retry_seconds <= 86400:
            raise ConfigError(f"{config.source}.retry_seconds: expected seconds from 1 to 86400, got {retry_seconds!r}")
        # A person or a script waiting (status, submit, wait, init...) gets an answer within
        # connect_timeout; a worker (patient) rides outages out for retry_seconds.
        connect_timeout = config.get("connect_timeout", 30)
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int | float) or not (
            1 <= connect_timeout <= 3600
        ):
            raise ConfigError(
                f"{config.source}.connect_timeout: expected seconds from 1 to 3600, got {connect_timeout!r}"
            )
        self.budget = self.retry_seconds if patient else min(float(connect_timeout), self.retry_seconds)
        self._local = threading.local()

    def __repr__(self) -> str:  # the token never appears
        return f"DatabricksLake({self.server_hostname}{self.http_path})"

    # -- connections -------------------------------------------------------------------------
    def _connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"server_hostname": self.server_hostname, "http_path": self.http_path,
                                "_retry_stop_after_attempts_duration": self.budget}
        if self.token:
            args["access_token"] = str(self.token)
        else:
            # Resolved before the connector is made: missing credentials fail in seconds, and the
            # connector is never half-built (its __del__ would print a traceback).
            args["credentials_provider"] = unified_auth_provider(
                self.server_hostname, self.auth_profile, max(1, int(min(self.auth_timeout, self.budget / 3)))
            )
        if self.port and self.port != 443:
            args["_port"] = self.port
        if self.catalog:
            args["catalog"] = str(self.catalog)
        if self.schema:
            args["schema"] = str(self.schema)
        if self.session_configuration:
            args["session_configuration"] = self.session_configuration
        return args

    def connect(self) -> Any:
        from databricks import sql

        args = self._connect_args()
        try:
            return sql.connect(**args)
        except Exception as exc:
            where = f"{self.server_hostname}:{self.port}"
            cause = connection_cause(exc, self.server_hostname, self.port, min(self.budget, 10.0))
            message = f"cannot connect to Databricks at {where}: {cause}"
            token = str(self.token or "")
            if len(token) >= 8:  # a short test token would blank out letters of the message
                message = message.replace(token, "***")
            raise ConnectionFailure(message) from None

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self.connect()
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            try:
                connection.close()
            except Exception as exc:  # a dead connection: nothing left to close
                log.debug("closing a dead Databricks connection: %s", exc)

    def close(self) -> None:
        self._drop_connection()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None, fetch: bool = False) -> list[Any]:
        """Run one statement on this thread's connection; errors sorted, one reconnect on a lost link."""
        bound = {k: _param(v) for k, v in (params or {}).items()}
        for attempt in (1, 2):
            cursor = self._connection().cursor()
            try:
                cursor.execute(sql, bound) if bound else cursor.execute(sql)
                return list(cursor.fetchall()) if fetch else []
            except Exception as exc:
                error = sort_error(exc, "Databricks")
                if isinstance(error, TransientError) and attempt == 1:
                    self._drop_connection()
                    continue
                raise error from None
            finally:
                try:
                    cursor.close()
                except Exception as exc:
                    log.debug("closing a cursor: %s", exc)
        raise AssertionError("unreachable")

    @property
    def _table(self) -> str:
        return ".".join(quote_backtick(p) for p in self.event_table.parts)

    @property
    def _workers(self) -> str:
        return ".".join(quote_backtick(p) for p in workers_table_name(self.event_table).parts)

    @property
    def _control(self) -> str:
        return ".".join(quote_backtick(p) for p in control_table_name(self.event_table).parts)

    # -- event table -------------------------------------------------------------------------
    def _existing_columns(self) -> set[str] | None:
        try:
            rows = self.execute(f"DESCRIBE TABLE {self._table}", fetch=True)
        except PermanentError as exc:
            if _names_missing_object(exc):
                return None
            raise
        columns = set()
        for row in rows:
            name = str(row[0] or "")
            if not name or name.startswith("#"):
                break
            columns.add(name.lower())
        return columns

    def init_event_table(self, upgrade: bool) -> list[str]:
        return [*self._init_events(upgrade), *self._init_workers(), *self._init_control()]

    def _init_events(self, upgrade: bool) -> list[str]:
        existing = self._existing_columns()
        if existing is None:
            catalog, schema = (quote_backtick(p) for p in self.event_table.parts[:2])
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{schema}")
            body = ", ".join(f"{quote_backtick(c)} {t}" for c, t in COLUMN_TYPES.items())
            # Delta with deletion vectors: row-level concurrency, so claims on different rows
            # do not conflict. No partitioning, no identity column.
            self.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ({body}) USING DELTA "
                "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
            )
            return [f"created event table {self.event_table_name}"]
        missing = lifecycle_columns_to_add(self.event_table_name, existing, upgrade)
        if not missing:
            return [f"event table {self.event_table_name} is up to date"]
        added = ", ".join(f"{quote_backtick(c)} {COLUMN_TYPES[c]}" for c in missing)
        self.execute(f"ALTER TABLE {self._table} ADD COLUMNS ({added})")
        return [f"added column {c}" for c in missing]

    def _init_side_table(self, quoted: str, types: Mapping[str, str], made: str) -> list[str]:
        """A table of bridge's own beside the event table (workers, control), when missing."""
        try:
            self.execute(f"DESCRIBE TABLE {quoted}", fetch=True)
            return []
        except PermanentError as exc:
            if not _names_missing_object(exc):
                raise
        body = ", ".join(f"{quote_backtick(c)} {t}" for c, t in types.items())
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted} ({body}) USING DELTA "
            "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
        )
        return [made]

    def _init_workers(self) -> list[str]:
        return self._init_side_table(self._workers, WORKER_TYPES,
                                     f"created workers table {workers_table_name(self.event_table)}")

    def _init_control(self) -> list[str]:
        return self._init_side_table(self._control, CONTROL_TYPES,
                                     f"created control table {control_table_name(self.event_table)}")

    def _select(self, where: str, params: Mapping[str, Any], tail: str = "") -> list[Event]:
        columns = ", ".join(quote_backtick(c) for c in ALL_COLUMNS)
        try:
            rows = self.execute(f"SELECT {columns} FROM {self._table} WHERE {where} {tail}", params, fetch=True)
        except PermanentError as exc:
            raise self._explain_missing(exc) from None
        return [Event.from_row(list(ALL_COLUMNS), tuple(_value(v) for v in row)) for row in rows]

    def _explain_missing(self, exc: PermanentError) -> BridgeError:
        """Say what is wrong with the event table, as `bridge init` would."""
        if not _names_missing_object(exc):
            return exc
        return event_table_problem(self.event_table_name, self._existing_columns(), exc)

    def insert_event(self, event: Event) -> None:
        values = event.to_dict()
        columns = ", ".join(quote_backtick(c) for c in ALL_COLUMNS)
        marks = ", ".join(f":{c}" for c in ALL_COLUMNS)
        self._with_conflict_retries(
            lambda: self.execute(f"INSERT INTO {self._table} ({columns}) VALUES ({marks})", values)
        )

    def get_event(self, event_id: str) -> Event | None:
        rows = self._select("event_id = :event_id", {"event_id": event_id}, "LIMIT 1")
        return rows[0] if rows else None

    def get_events(self, event_id: str) -> list[Event]:
        return self._select(
            "event_id = :event_id", {"event_id": event_id, "limit": MAX_COPIES_LISTED},
            f"ORDER BY {CLAIM_ORDER} LIMIT :limit",
        )

    def list_events(
        self, status: str | None, limit: int, where: EventFilter | None = None
    ) -> list[Event]:
        conditions = list_conditions(status, where)
        sql = " AND ".join(c.replace("{mark}", f":{name}") for c, name, _ in conditions) or "TRUE"
        params = {name: value for _, name, value in conditions}
        return self._select(sql, {**params, "limit": limit},
                            "ORDER BY created_at DESC NULLS LAST, event_id LIMIT :limit")

    def delete_finished_events(
        self, before: datetime, statuses: Sequence[str], dry_run: bool
    ) -> list[str]:
        """DML row counts are not trusted: the ids are listed first, deleted in batches under the
        same conditions (a row requeued meanwhile stays), and a batch's deleted ids are the ones
        no longer there afterwards."""
        chosen = finished_statuses(statuses)
        params: dict[str, Any] = {f"status_{i}": s for i, s in enumerate(chosen)}
        params["before"] = before
        marks = ", ".join(f":status_{i}" for i in range(len(chosen)))
        where = f"status IN ({marks}) AND {FINISHED_AT} < :before"
        try:
            rows = self.execute(f"SELECT event_id FROM {self._table} WHERE {where}", params, fetch=True)
        except PermanentError as exc:
            raise self._explain_missing(exc) from None
        found = sorted(str(r[0]) for r in rows)
        if dry_run:
            return found
        deleted: list[str] = []
        for start in range(0, len(found), _IDS_PER_STATEMENT):
            batch = found[start:start + _IDS_PER_STATEMENT]
            ids = {f"id_{i}": event_id for i, event_id in enumerate(batch)}
            listed = f"event_id IN ({', '.join(f':{name}' for name in ids)})"
            self._with_conflict_retries(functools.partial(
                self.execute, f"DELETE FROM {self._table} WHERE {listed} AND {where}", {**params, **ids}
            ))
            left = self.execute(f"SELECT event_id FROM {self._table} WHERE {listed}", ids, fetch=True)
            still_there = {str(r[0]) for r in left}
            deleted.extend(event_id for event_id in batch if event_id not in still_there)
        return deleted

    def count_by_status(self) -> dict[str, int]:
        # Naming a lifecycle column makes a table made from the guide, before
        # `bridge init --upgrade`, fail here as everywhere else, with that hint.
        sql = f"SELECT coalesce(status, '?'), count(*), count(claim_token) FROM {self._table} GROUP BY 1"
        try:
            rows = self.execute(sql, fetch=True)
        except PermanentError as exc:
            raise self._explain_missing(exc) from None
        return {str(s): int(n) for s, n, _ in rows}

    def queue_stats(self) -> QueueStats:
        try:
            rows = self.execute(QUEUE_STATS_SELECT.format(table=self._table), fetch=True)
        except PermanentError as exc:
            raise self._explain_missing(exc) from None
        return queue_stats_from_rows([(s, n, _value(o)) for s, n, o in rows])

    def claimable_events(
        self, now: datetime, limit: int, event_id: str | None, per_target: bool = True
    ) -> list[Event]:
        # An event asked for by id is run now, even while it waits out a retry delay.
        where = claimable_condition(":now", due_only=event_id is None)
        params: dict[str, Any] = {"now": now, "limit": limit}
        if per_target:
            where += f" AND {first_in_line_condition(self._table)}"
        if event_id is not None:
            where += " AND event_id = :event_id"
            params["event_id"] = event_id
        return self._select(where, params, f"ORDER BY {CLAIM_ORDER} LIMIT :limit")

    def update_event_if(
        self, event_id: str, expected: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> bool:
        for column in (*expected, *changes):
            assert column in COLUMN_TYPES, column  # never a user-given column name
        sets = ", ".join(f"{quote_backtick(c)} = :set_{c}" for c in changes)
        conditions = ["event_id = :event_id"]
        params: dict[str, Any] = {"event_id": event_id}
        params.update({f"set_{c}": v for c, v in changes.items()})
        for column, value in expected.items():
            if value is None:
                conditions.append(f"{quote_backtick(column)} IS NULL")
            else:
                conditions.append(f"{quote_backtick(column)} = :was_{column}")
                params[f"was_{column}"] = value
        sql = f"UPDATE {self._table} SET {sets} WHERE {' AND '.join(conditions)}"
        try:
            self._with_conflict_retries(lambda: self.execute(sql, params))
        except LostRace:
            return False
        # The UPDATE's row count is not trusted: read the row back to see whether ours stands.
        # Every row with the id: when a job wrote the id twice, the first may not be ours.
        return any(
            all(_same(getattr(event, c), v) for c, v in changes.items()) for event in self.get_events(event_id)
        )

    def _with_conflict_retries(self, action: Any) -> Any:
        """Retry a write that lost a concurrent-modification race; a conditional write stays
        conditional, so retrying never overrides someone else's change."""
        delay = 0.2
        for attempt in range(self.conflict_retries + 1):
            try:
                return action()
            except LostRace:
                if attempt == self.conflict_retries:
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 3.0)
        return None

    # -- workers -----------------------------------------------------------------------------
    def _on_workers(self, sql: str, params: Mapping[str, Any], fetch: bool = False) -> list[Any]:
        try:
            return list(self._with_conflict_retries(lambda: self.execute(sql, params, fetch=fetch)))
        except PermanentError as exc:
            if _names_missing_object(exc):
                raise NotInitialized(
                    f"workers table {workers_table_name(self.event_table)} does not exist: run "
                    "`bridge init` (an existing install keeps its events and gains the table)"
                ) from None
            raise

    def heartbeat(self, beat: WorkerBeat) -> None:
        """One MERGE: the worker's row inserted or replaced."""
        values = dict(zip(WORKER_COLUMNS, beat_values(beat), strict=True))
        select = ", ".join(
            f"CAST(:{c} AS {WORKER_TYPES[c]}) AS {quote_backtick(c)}" for c in WORKER_COLUMNS
        )
        sets = ", ".join(f"{quote_backtick(c)} = s.{quote_backtick(c)}" for c in WORKER_COLUMNS[1:])
        columns = ", ".join(quote_backtick(c) for c in WORKER_COLUMNS)
        inserted = ", ".join(f"s.{quote_backtick(c)}" for c in WORKER_COLUMNS)
        self._on_workers(
            f"MERGE INTO {self._workers} AS t USING (SELECT {select}) AS s "
            "ON t.`worker_id` = s.`worker_id` "
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({inserted})",
            values,
        )

    def list_workers(self) -> list[WorkerBeat]:
        columns = ", ".join(quote_backtick(c) for c in WORKER_COLUMNS)
        rows = self._on_workers(f"SELECT {columns} FROM {self._workers} ORDER BY worker_id", {}, fetch=True)
        return [beat_from_row([_value(v) for v in row]) for row in rows]

    def forget_worker(self, worker_id: str, expired_before: datetime | None = None) -> None:
        if expired_before is None:
            self._on_workers(f"DELETE FROM {self._workers} WHERE worker_id = :worker_id",
                             {"worker_id": worker_id})
        else:
            self._on_workers(
                f"DELETE FROM {self._workers} WHERE worker_id = :worker_id AND expires_at < :before",
                {"worker_id": worker_id, "before": expired_before},
            )

    # -- control (pauses, cancel requests) --------------------------------------------------------
    def _on_control(self, sql: str, params: Mapping[str, Any], fetch: bool = False) -> list[Any]:
        try:
            return list(self._with_conflict_retries(lambda: self.execute(sql, params, fetch=fetch)))
        except PermanentError as exc:
            if _names_missing_object(exc):
                raise control_missing(self.event_table) from None
            raise

    def _insert_control(self, values: list[Any]) -> None:
        named = dict(zip(CONTROL_COLUMNS, values, strict=True))
        columns = ", ".join(quote_backtick(c) for c in CONTROL_COLUMNS)
        marks = ", ".join(f"CAST(:{c} AS {CONTROL_TYPES[c]})" for c in CONTROL_COLUMNS)
        self._on_control(f"INSERT INTO {self._control} ({columns}) VALUES ({marks})", named)

    def list_pauses(self) -> list[Pause]:
        rows = self._on_control(PAUSE_SELECT.format(table=self._control), {}, fetch=True)
        return [Pause(str(t), r, str(by or ""), _value(at)) for t, r, by, at in rows]

    def add_pause(self, pause: Pause) -> None:
        """Two statements (Delta has no unique key): the old pause of this target goes, the new
        one comes. Pausing is a person's command, so the cost is theirs, not a worker's."""
        self.remove_pauses([pause.target])
        self._insert_control(pause_values(pause))

    def remove_pauses(self, targets: Sequence[str]) -> None:
        if targets:
            named = {f"t_{i}": t for i, t in enumerate(targets)}
            listed = ", ".join(f":{n}" for n in named)
            self._on_control(f"DELETE FROM {self._control} WHERE kind = 'pause' AND target IN ({listed})", named)

    def request_cancel(self, request: CancelRequest) -> None:
        self.forget_cancel_request(request.event_id, request.claim_token)
        self._insert_control(cancel_values(request))

    def cancel_request(self, event_id: str, claim_token: str) -> CancelRequest | None:
        rows = self._on_control(
            f"SELECT requested_by, requested_at FROM {self._control} WHERE kind = 'cancel' "
            "AND event_id = :event_id AND claim_token = :claim_token LIMIT 1",
            {"event_id": event_id, "claim_token": claim_token}, fetch=True,
        )
        return CancelRequest(event_id, claim_token, str(rows[0][0] or ""), _value(rows[0][1])) if rows else None

    def forget_cancel_request(self, event_id: str, claim_token: str) -> None:
        self._on_control(
            f"DELETE FROM {self._control} WHERE kind = 'cancel' AND event_id = :event_id "
            "AND claim_token = :claim_token", {"event_id": event_id, "claim_token": claim_token},
        )

    # -- source tables -----------------------------------------------------------------------
    def _quoted(self, table: TableName) -> str:
        return ".".join(quote_backtick(p) for p in table.parts)

    def source_columns(self, table: TableName) -> list[SourceColumn]:
        try:
            rows = self.execute(f"DESCRIBE TABLE {self._quoted(table)}", fetch=True)
        except PermanentError as exc:
            if _names_missing_object(exc):
                raise PermanentError(
                    f"source table {table} does not exist (check the name; catalogs and schemas with "
                    "hyphens may be written with or without backticks)"
                ) from None
            raise
        columns = []
        for name, kind, *_ in rows:
            if not name or str(name).startswith("#"):
                break
            columns.append(SourceColumn(str(name), str(kind)))
        if not columns:
            raise PermanentError(f"source table {table} has no columns")
        return columns

    def count_rows(self, table: TableName) -> int:
        rows = self.execute(f"SELECT COUNT(*) FROM {self._quoted(table)}", fetch=True)
        return int(rows[0][0]) if rows else 0

    def read_source(
        self, table: TableName, columns: list[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """fetchmany_arrow in batches on a dedicated connection: memory bounded by the batch."""
        select = ", ".join(quote_backtick(c) for c in columns)
        connection = self.connect()
        size = min(batch_rows, self.fetch_rows)
        try:
            # The connector prefetches up to buffer_size_bytes (100 MiB by default): bound it too.
            cursor = connection.cursor(arraysize=size, buffer_size_bytes=self.buffer_bytes)
            try:
                cursor.execute(f"SELECT {select} FROM {self._quoted(table)}")
                while True:
                    chunk = cursor.fetchmany_arrow(size)
                    if chunk.num_rows == 0:
                        break
                    for batch in chunk.to_batches():
                        yield self._wall_time(batch)
            except BridgeError:
                raise
            except Exception as exc:
                error = sort_error(exc, f"reading source table {table}")
                if _names_missing_object(exc):
                    error = PermanentError(f"source table {table}: {short_message(exc)}")
                raise error from None
        finally:
            try:
                connection.close()
            except Exception as exc:
                log.debug("closing the source connection: %s", exc)

    def _wall_time(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Zone-aware timestamps become wall time in timestamp_zone (UTC unless configured)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        arrays = []
        changed = False
        for column in batch.columns:
            if pa.types.is_timestamp(column.type) and column.type.tz is not None:
                zoned = column.cast(pa.timestamp(column.type.unit, tz=self.timestamp_zone))
                arrays.append(pc.local_timestamp(zoned))
                changed = True
            else:
                arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names) if changed else batch


def _same(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, datetime) and isinstance(stored, datetime):
        return to_naive_utc(stored) == to_naive_utc(wanted)
    return bool(stored == wanted)


def connection_cause(exc: BaseException, host: str, port: int, timeout: float) -> str:
    """Why a connection failed, in a few words: the connector's final error ("retry request would
    exceed the retry policy's duration") hides whether it was DNS, a refused port, TLS or the
    credentials, so ask the network ourselves."""
    import socket
    import ssl

    context = getattr(exc, "context", None) or {}
    code = context.get("http-code") if isinstance(context, dict) else None
    if code in (401, 403):
        return f"HTTP {code}: the warehouse refused the credentials (check the token or profile)"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return f"DNS: cannot resolve {host} ({err.strerror}); check server_hostname"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            try:
                with ssl.create_default_context().wrap_socket(raw, server_hostname=host):
                    pass
            except ssl.SSLError as err:
                return f"TLS: {err.reason or err}"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}; check server_hostname and port"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g}s (a firewall, or the wrong host)"
    except OSError as err:
        return f"{err.strerror or err}"
    if code:
        return f"HTTP {code}: {short_message(exc)}"
    return f"{type(exc).__name__}: {short_message(exc)}"


def unified_auth_provider(host: str, profile: Any, timeout_seconds: int = 60) -> Any:
    """Databricks unified authentication (env vars, OAuth M2M, ~/.databrickscfg profiles)."""
    try:
        from databricks.sdk.core import Config
    except ImportError:
        raise ConfigError(
            "no token given and databricks-sdk is not installed: set lake.token or install databricks-sdk"
        ) from None
    # A bounded retry budget: the SDK's default (300 s) would hang start-up on an unreachable host.
    kwargs: dict[str, Any] = {"host": f"https://{host}", "retry_timeout_seconds": timeout_seconds,
                              "http_timeout_seconds": timeout_seconds}
    if profile:
        kwargs["profile"] = str(profile)

    try:
        config = Config(**kwargs)
    except Exception as exc:
        reason = str(exc).split(". Config:", 1)[0].split(", please check", 1)[0]
        raise ConnectionFailure(
            f"Databricks authentication failed for {host}: {reason}; set lake.token (or "
            "DATABRICKS_TOKEN), or name a ~/.databrickscfg profile with lake.profile"
        ) from None

    def provider() -> Any:
        return config.authenticate

    return provider
