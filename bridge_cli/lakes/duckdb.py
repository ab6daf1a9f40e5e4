"""The embedded lake: one DuckDB file per catalog under the lake folder.

`c.s.t` is table `s.t` in `<lake>/c.duckdb`; the event table
`000-sql-databricks-bridge`.`events`.bridge_events is `events.bridge_events` in
`<lake>/000-sql-databricks-bridge.duckdb`. DuckDB lets one process at a time open a file for
writing, so every operation opens a short-lived connection and waits for a held lock.

Many processes (workers, `bridge status`, `bridge submit`) share these files. DuckDB's own file
lock alone was seen to lose acknowledged updates and to raise "Could not read enough bytes" when
processes open and close the same file in quick succession (issue 8), so each whole connection,
from open to close, is also held under an exclusive `flock` on a sidecar file `<file>.lock`: a
lock that closing other descriptors of the file cannot drop, unlike POSIX record locks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge_cli.config import DEFAULT_EVENT_TABLE, Settings, resolve_path
from bridge_cli.errors import (
    ConnectionFailure,
    NotInitialized,
    PermanentError,
    StoreNotWritable,
    TransientError,
    not_writable,
)
from bridge_cli.events import ALL_COLUMNS, Event
from bridge_cli.identifiers import TableName, parse_table_name, quote_double
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
    import duckdb
    import pyarrow as pa

_COLUMN_TYPES = {
    "event_id": "VARCHAR NOT NULL",
    "operation": "VARCHAR",
    "source_table": "VARCHAR",
    "target_table": "VARCHAR",
    "primary_keys": "VARCHAR[]",
    "priority": "INTEGER",
    "status": "VARCHAR",
    "rows_expected": "INTEGER",
    "rows_affected": "INTEGER",
    "discrepancy": "INTEGER",
    "warning": "VARCHAR",
    "error_message": "VARCHAR",
    "filter_conditions": "VARCHAR",
    "metadata": "VARCHAR",
    "created_at": "TIMESTAMP",
    "processed_at": "TIMESTAMP",
    "attempts": "INTEGER",
    "worker_id": "VARCHAR",
    "claim_token": "VARCHAR",
    "lease_expires_at": "TIMESTAMP",
    "next_attempt_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "details": "VARCHAR",
}
assert tuple(_COLUMN_TYPES) == ALL_COLUMNS

_WORKER_TYPES = {
    "worker_id": "VARCHAR PRIMARY KEY", "host": "VARCHAR", "pid": "INTEGER", "version": "VARCHAR",
    "started_at": "TIMESTAMP", "last_seen": "TIMESTAMP", "expires_at": "TIMESTAMP",
    "event_id": "VARCHAR", "phase": "VARCHAR", "rows_done": "BIGINT", "rows_per_second": "DOUBLE",
}
assert tuple(_WORKER_TYPES) == WORKER_COLUMNS

_CONTROL_TYPES = {
    "kind": "VARCHAR NOT NULL", "target": "VARCHAR", "event_id": "VARCHAR", "claim_token": "VARCHAR",
    "reason": "VARCHAR", "requested_by": "VARCHAR", "requested_at": "TIMESTAMP",
}
assert tuple(_CONTROL_TYPES) == CONTROL_COLUMNS

# DuckDB's instance cache is per process; one lock keeps this process's threads from racing
# to open the same file with different settings.
_OPEN_LOCK = threading.Lock()


@contextmanager
def _held(path: Path, deadline: float, timeout: float, read_only: bool = False) -> Iterator[bool]:
    """An exclusive flock on `<file>.lock` until the block ends (closing the descriptor frees it).
    Yields whether the lake's files can be written here.

    Where the lock file cannot be created or opened for writing (a read-only file system, no
    permission), an operation that only reads (`read_only`) takes the flock on a read-only
    descriptor of it (flock needs no write access), or, on a read-only file system where there is
    no lock file, goes without: nobody can write there. Anything else is a StoreNotWritable naming
    the file."""
    descriptor, writable = _open_lock(path, read_only)
    try:
        delay = 0.002
        while descriptor is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"lake file {path} stayed locked by another process for {timeout:.0f}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield writable
    finally:
        if descriptor is not None:
            os.close(descriptor)


_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _open_lock(path: Path, read_only: bool) -> tuple[int | None, bool]:
    """The lock file's descriptor (None: no lock needed) and whether the files are writable."""
    lock = path.with_name(path.name + ".lock")
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644), True
    except OSError as exc:
        refused = exc
    if not read_only or refused.errno not in _NOT_WRITABLE:
        raise not_writable("lake file", path, refused, f"its lock file {lock.name} cannot be opened for writing")
    try:
        return os.open(lock, os.O_RDONLY), False
    except FileNotFoundError:
        if refused.errno == errno.EROFS:
            return None, False
        raise not_writable(
            "lake file", path, refused, f"its lock file {lock.name} does not exist and cannot be created"
        ) from None
    except OSError as exc:
        raise not_writable("lake file", path, exc, f"its lock file {lock.name} cannot be opened") from None


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


def _not_writable_because(exc: Exception) -> str | None:
    """DuckDB's refusal to open a file for writing, in the words of StoreNotWritable."""
    text = str(exc).lower()
    for reason in ("read-only file system", "permission denied"):
        if reason in text:
            return reason
    return None


class DuckDBLake:
    capabilities = LakeCapabilities(reliable_row_counts=True, concurrent_writers=False)

    def __init__(self, settings: Settings) -> None:
        config = settings.lake
        self.root: Path = resolve_path(config.get("path"), settings.home / "lake", settings.home)
        name = str(config.get("event_table") or DEFAULT_EVENT_TABLE)
        self.event_table = parse_table_name(name, min_parts=3, max_parts=3, what="event_table")
        self.event_table_name = name
        self.lock_timeout = settings.lock_timeout

    # -- connections -------------------------------------------------------------------------
    def catalog_path(self, catalog: str) -> Path:
        return self.root / f"{catalog}.duckdb"

    @contextmanager
    def connect(
        self, catalog: str, *, create: bool = False, read_only: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the catalog's file, under its lock. `read_only`: the operation only
        reads, so where the files cannot be written (a read-only home) it opens them read-only;
        an operation that writes there fails with a StoreNotWritable naming the file."""
        path = self.catalog_path(catalog)
        if not path.exists():
            if not create:
                raise _MissingCatalog(catalog)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise not_writable("lake folder", path.parent, exc) from None
        deadline = time.monotonic() + self.lock_timeout
        with (
            _held(path, deadline, self.lock_timeout, read_only) as writable,
            self._open(path, deadline, read_only=not writable, may_read_only=read_only) as connection,
        ):
            yield connection

    @contextmanager
    def _open(
        self, path: Path, deadline: float, read_only: bool = False, may_read_only: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        import duckdb

        delay = 0.02
        while True:
            try:
                with _OPEN_LOCK:
                    connection = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.Error as exc:
                refused = _not_writable_because(exc)
                if refused and may_read_only and not read_only:
                    read_only = True  # a reader of a file it may not write (another user's)
                    continue
                if refused:
                    raise StoreNotWritable(f"cannot write lake file {path}: {refused}") from None
                if not _is_lock_conflict(exc):
                    raise ConnectionFailure(f"cannot open lake file {path}: {exc}") from None
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"lake file {path} stayed locked by another process for "
                        f"{self.lock_timeout:.0f}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            connection.execute("SET TimeZone = 'UTC'")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _events(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            with self.connect(self.event_table.catalog, read_only=read_only) as connection:
                yield connection
        except _MissingCatalog:
            # The path, so that someone in another folder (another BRIDGE_HOME) sees why.
            where = self.catalog_path(self.event_table.catalog).resolve()
            raise NotInitialized(
                f"event table {self.event_table_name} does not exist: no lake file {where}; "
                "run `bridge init` there, or set BRIDGE_HOME to where it was run"
            ) from None

    @property
    def _table(self) -> str:
        return f"{quote_double(self.event_table.schema)}.{quote_double(self.event_table.table)}"

    @property
    def _workers(self) -> str:
        workers = workers_table_name(self.event_table)
        return f"{quote_double(workers.schema)}.{quote_double(workers.table)}"

    @property
    def _control(self) -> str:
        control = control_table_name(self.event_table)
        return f"{quote_double(control.schema)}.{quote_double(control.table)}"

    # -- event table -------------------------------------------------------------------------
    def init_event_table(self, upgrade: bool) -> list[str]:
        done: list[str] = []
        with self.connect(self.event_table.catalog, create=True) as con:
            existing = self._existing_columns(con)
            if not existing:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_double(self.event_table.schema)}")
                body = ", ".join(f"{quote_double(c)} {t}" for c, t in _COLUMN_TYPES.items())
                con.execute(f"CREATE TABLE {self._table} ({body})")
                done.append(f"created event table {self.event_table_name} in "
                            f"{self.catalog_path(self.event_table.catalog)}")
            else:
                missing = lifecycle_columns_to_add(self.event_table_name, existing, upgrade)
                for column in missing:
                    con.execute(
                        f"ALTER TABLE {self._table} ADD COLUMN {quote_double(column)} {_COLUMN_TYPES[column]}"
                    )
                    done.append(f"added column {column}")
                if not missing:
                    done.append(f"event table {self.event_table_name} is up to date")
            workers = workers_table_name(self.event_table)
            if not self._table_exists(con, workers.schema, workers.table):
                body = ", ".join(f"{quote_double(c)} {t}" for c, t in _WORKER_TYPES.items())
                con.execute(f"CREATE TABLE {self._workers} ({body})")
                done.append(f"created workers table {workers}")
            done.extend(self._init_control(con))
        return done

    def _init_control(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        control = control_table_name(self.event_table)
        if self._table_exists(con, control.schema, control.table):
            return []
        body = ", ".join(f"{quote_double(c)} {t}" for c, t in _CONTROL_TYPES.items())
        con.execute(f"CREATE TABLE {self._control} ({body})")
        return [f"created control table {control}"]

    def _table_exists(self, con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
        return bool(con.execute(
            "SELECT 1 FROM information_schema.tables WHERE lower(table_schema) = lower(?) "
            "AND lower(table_name) = lower(?)", [schema, table],
        ).fetchall())

    def _existing_columns(self, con: duckdb.DuckDBPyConnection) -> set[str]:
        rows = con.execute(
            "SELECT lower(column_name) FROM information_schema.columns "
            "WHERE lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
            [self.event_table.schema, self.event_table.table],
        ).fetchall()
        return {r[0] for r in rows}

    def _select(self, con: duckdb.DuckDBPyConnection, where: str, params: list[Any], tail: str = "") -> list[Event]:
        columns = ", ".join(quote_double(c) for c in ALL_COLUMNS)
        try:
            result = con.execute(f"SELECT {columns} FROM {self._table} WHERE {where} {tail}", params)
        except Exception as exc:
            raise self._explain(exc, con) from None
        return [Event.from_row(list(ALL_COLUMNS), row) for row in result.fetchall()]

    def _explain(self, exc: Exception, con: duckdb.DuckDBPyConnection) -> Exception:
        import duckdb

        if isinstance(exc, duckdb.CatalogException | duckdb.BinderException):
            # Say what is wrong with the table, as `bridge init` would, not DuckDB's binder text.
            where = self.catalog_path(self.event_table.catalog).resolve()
            try:
                existing = self._existing_columns(con)
            except duckdb.Error:
                existing = set()
            return event_table_problem(f"{self.event_table_name} in {where}", existing, exc)
        if isinstance(exc, duckdb.Error):  # e.g. an IOException: worth another try, never a crash
            return TransientError(f"event table {self.event_table_name}: {type(exc).__name__}: {exc}")
        return exc

    def insert_event(self, event: Event) -> None:
        values = event.to_dict()
        columns = ", ".join(quote_double(c) for c in ALL_COLUMNS)
        marks = ", ".join("?" for _ in ALL_COLUMNS)
        with self._events() as con:
            try:
                con.execute(
                    f"INSERT INTO {self._table} ({columns}) VALUES ({marks})",
                    [values[c] for c in ALL_COLUMNS],
                )
            except Exception as exc:
                raise self._explain(exc, con) from None

    def get_event(self, event_id: str) -> Event | None:
        with self._events(read_only=True) as con:
            rows = self._select(con, "event_id = ?", [event_id], "LIMIT 1")
        return rows[0] if rows else None

    def get_events(self, event_id: str) -> list[Event]:
        with self._events(read_only=True) as con:
            return self._select(con, "event_id = ?", [event_id, MAX_COPIES_LISTED], f"ORDER BY {CLAIM_ORDER} LIMIT ?")

    def list_events(
        self, status: str | None, limit: int, where: EventFilter | None = None
    ) -> list[Event]:
        conditions = list_conditions(status, where)
        sql = " AND ".join(c.replace("{mark}", "?") for c, _, _ in conditions) or "TRUE"
        params = [value for _, _, value in conditions]
        with self._events(read_only=True) as con:
            return self._select(
                con, sql, [*params, limit], "ORDER BY created_at DESC NULLS LAST, event_id LIMIT ?"
            )

    def delete_finished_events(
        self, before: datetime, statuses: Sequence[str], dry_run: bool
    ) -> list[str]:
        chosen = finished_statuses(statuses)
        where = f"status IN ({', '.join('?' for _ in chosen)}) AND {FINISHED_AT} < ?"
        if dry_run:
            sql = f"SELECT event_id FROM {self._table} WHERE {where}"
        else:  # one statement under the file's lock: what it returns is exactly what it deleted
            sql = f"DELETE FROM {self._table} WHERE {where} RETURNING event_id"
        with self._events(read_only=dry_run) as con:
            try:
                rows = con.execute(sql, [*chosen, before]).fetchall()
            except Exception as exc:
                raise self._explain(exc, con) from None
        return sorted(str(r[0]) for r in rows)

    def count_by_status(self) -> dict[str, int]:
        with self._events(read_only=True) as con:
            try:
                # Naming a lifecycle column makes a table made from the guide, before
                # `bridge init --upgrade`, fail here as everywhere else, with that hint.
                rows = con.execute(
                    f"SELECT coalesce(status, '?'), count(*), count(claim_token) FROM {self._table} "
                    "GROUP BY 1"
                ).fetchall()
            except Exception as exc:
                raise self._explain(exc, con) from None
        return {str(s): int(n) for s, n, _ in rows}

    def queue_stats(self) -> QueueStats:
        with self._events(read_only=True) as con:
            try:
                rows = con.execute(QUEUE_STATS_SELECT.format(table=self._table)).fetchall()
            except Exception as exc:
                raise self._explain(exc, con) from None
        return queue_stats_from_rows(rows)

    def claimable_events(
        self, now: datetime, limit: int, event_id: str | None, per_target: bool = True
    ) -> list[Event]:
        # An event asked for by id is run now, even while it waits out a retry delay.
        where = claimable_condition("?", due_only=event_id is None)
        params: list[Any] = [now] * where.count("?")
        if per_target:
            where += f" AND {first_in_line_condition(self._table)}"
        if event_id is not None:
            where += " AND event_id = ?"
            params.append(event_id)
        # Opened for writing although it only reads: it is a claim's first step, so a worker or
        # `process-once` over a home it cannot write says so at every poll, events or not.
        with self._events() as con:
            return self._select(
                con, where, [*params, limit],
                f"ORDER BY {CLAIM_ORDER} LIMIT ?",
            )

    def update_event_if(
        self, event_id: str, expected: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> bool:
        for column in (*expected, *changes):
            assert column in _COLUMN_TYPES, column  # never a user-given column name
        sets = ", ".join(f"{quote_double(c)} = ?" for c in changes)
        conditions = ["event_id = ?"]
        params: list[Any] = [*changes.values(), event_id]
        for column, value in expected.items():
            if value is None:
                conditions.append(f"{quote_double(column)} IS NULL")
            else:
                conditions.append(f"{quote_double(column)} = ?")
                params.append(value)
        sql = f"UPDATE {self._table} SET {sets} WHERE {' AND '.join(conditions)} RETURNING event_id"
        with self._events() as con:
            try:
                return bool(con.execute(sql, params).fetchall())
            except Exception as exc:
                raise self._explain(exc, con) from None

    # -- workers -----------------------------------------------------------------------------
    def _on_workers(self, sql: str, params: list[Any], read_only: bool = False) -> list[Any]:
        with self._events(read_only=read_only) as con:
            try:
                return con.execute(sql, params).fetchall()
            except Exception as exc:
                import duckdb

                if isinstance(exc, duckdb.CatalogException):
                    workers = workers_table_name(self.event_table)
                    raise NotInitialized(
                        f"workers table {workers} does not exist: run `bridge init` (an existing "
                        "install keeps its events and gains the table)"
                    ) from None
                raise self._explain(exc, con) from None

    def heartbeat(self, beat: WorkerBeat) -> None:
        columns = ", ".join(quote_double(c) for c in WORKER_COLUMNS)
        marks = ", ".join("?" for _ in WORKER_COLUMNS)
        updates = ", ".join(f"{quote_double(c)} = excluded.{quote_double(c)}" for c in WORKER_COLUMNS[1:])
        self._on_workers(
            f"INSERT INTO {self._workers} ({columns}) VALUES ({marks}) "
            f"ON CONFLICT ({quote_double('worker_id')}) DO UPDATE SET {updates}",
            beat_values(beat),
        )

    def list_workers(self) -> list[WorkerBeat]:
        columns = ", ".join(quote_double(c) for c in WORKER_COLUMNS)
        rows = self._on_workers(f"SELECT {columns} FROM {self._workers} ORDER BY worker_id", [], read_only=True)
        return [beat_from_row(row) for row in rows]

    def forget_worker(self, worker_id: str, expired_before: datetime | None = None) -> None:
        if expired_before is None:
            self._on_workers(f"DELETE FROM {self._workers} WHERE worker_id = ?", [worker_id])
        else:
            self._on_workers(f"DELETE FROM {self._workers} WHERE worker_id = ? AND expires_at < ?",
                             [worker_id, expired_before])

    # -- control (pauses, cancel requests) --------------------------------------------------------
    def _on_control(self, statements: list[tuple[str, list[Any]]], read_only: bool = False) -> list[Any]:
        """Run the statements in one transaction under the file's lock; the last one's rows."""
        import duckdb

        rows: list[Any] = []
        with self._events(read_only=read_only) as con:
            try:
                if len(statements) > 1:
                    con.execute("BEGIN TRANSACTION")
                for sql, params in statements:
                    rows = con.execute(sql, params).fetchall()
                if len(statements) > 1:
                    con.execute("COMMIT")
            except Exception as exc:
                if isinstance(exc, duckdb.CatalogException):
                    raise control_missing(self.event_table) from None
                raise self._explain(exc, con) from None
        return rows

    def list_pauses(self) -> list[Pause]:
        rows = self._on_control([(PAUSE_SELECT.format(table=self._control), [])], read_only=True)
        return [Pause(str(t), r, str(by or ""), at) for t, r, by, at in rows]

    def add_pause(self, pause: Pause) -> None:
        marks = ", ".join("?" for _ in CONTROL_COLUMNS)
        self._on_control([
            (f"DELETE FROM {self._control} WHERE kind = 'pause' AND target = ?", [pause.target]),
            (f"INSERT INTO {self._control} VALUES ({marks})", pause_values(pause)),
        ])

    def remove_pauses(self, targets: Sequence[str]) -> None:
        if targets:
            marks = ", ".join("?" for _ in targets)
            self._on_control([(f"DELETE FROM {self._control} WHERE kind = 'pause' AND target IN ({marks})",
                               list(targets))])

    def request_cancel(self, request: CancelRequest) -> None:
        marks = ", ".join("?" for _ in CONTROL_COLUMNS)
        self._on_control([
            (f"DELETE FROM {self._control} WHERE kind = 'cancel' AND event_id = ? AND claim_token = ?",
             [request.event_id, request.claim_token]),
            (f"INSERT INTO {self._control} VALUES ({marks})", cancel_values(request)),
        ])

    def cancel_request(self, event_id: str, claim_token: str) -> CancelRequest | None:
        rows = self._on_control([(
            f"SELECT requested_by, requested_at FROM {self._control} "
            "WHERE kind = 'cancel' AND event_id = ? AND claim_token = ? LIMIT 1", [event_id, claim_token],
        )], read_only=True)
        return CancelRequest(event_id, claim_token, str(rows[0][0] or ""), rows[0][1]) if rows else None

    def forget_cancel_request(self, event_id: str, claim_token: str) -> None:
        self._on_control([(f"DELETE FROM {self._control} WHERE kind = 'cancel' AND event_id = ? "
                           "AND claim_token = ?", [event_id, claim_token])])

    # -- source tables -----------------------------------------------------------------------
    def source_columns(self, table: TableName) -> list[SourceColumn]:
        try:
            with self.connect(table.catalog, read_only=True) as con:
                rows = con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE lower(table_schema) = lower(?) AND lower(table_name) = lower(?) "
                    "ORDER BY ordinal_position",
                    [table.schema, table.table],
                ).fetchall()
        except _MissingCatalog:
            rows = []
        if not rows:
            raise PermanentError(
                f"source table {table} does not exist (check the name; catalogs and schemas "
                "with hyphens may be written with or without backticks)"
            )
        return [SourceColumn(str(name), str(kind)) for name, kind in rows]

    def read_source(
        self, table: TableName, columns: list[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        select = ", ".join(quote_double(c) for c in columns)
        try:
            with self.connect(table.catalog, read_only=True) as con:
                yield from con.sql(f"SELECT {select} FROM {_in_catalog(table)}").to_arrow_reader(batch_rows)
        except _MissingCatalog:
            raise PermanentError(f"source table {table} does not exist") from None

    def count_rows(self, table: TableName) -> int:
        try:
            with self.connect(table.catalog, read_only=True) as con:
                row = con.execute(f"SELECT COUNT(*) FROM {_in_catalog(table)}").fetchone()
        except _MissingCatalog:
            raise PermanentError(f"source table {table} does not exist") from None
        return int(row[0]) if row else 0


def _in_catalog(table: TableName) -> str:
    """schema.table, quoted, inside the catalog's own database file."""
    return f"{quote_double(table.schema)}.{quote_double(table.table)}"


class _MissingCatalog(Exception):
    def __init__(self, catalog: str) -> None:
        super().__init__(catalog)
        self.catalog = catalog
