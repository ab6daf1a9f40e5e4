"""The embedded target: one SQLite file per SQL Server schema under the target folder.

`s.t` is table `t` in `<target>/s.sqlite`; the ledger `bridge.applied_events` is table
`applied_events` in `<target>/bridge.sqlite`, attached to the session so that the data change and
the ledger row commit together (rollback-journal mode keeps a multi-file commit atomic).
An identity column is `INTEGER PRIMARY KEY AUTOINCREMENT`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge_cli.config import DEFAULT_LEDGER_TABLE, Settings, resolve_path
from bridge_cli.errors import (
    AlreadyApplied,
    ConnectionFailure,
    NotInitialized,
    PermanentError,
    StoreNotWritable,
    TransientError,
    not_writable,
)
from bridge_cli.events import Operation
from bridge_cli.identifiers import TableName, parse_target_table, quote_double
from bridge_cli.targets import (
    LEDGER_DETAILS,
    ApplyCounts,
    ApplyPlan,
    LedgerEntry,
    TargetCapabilities,
    TargetColumn,
    TargetTable,
    details_from_json,
    details_json,
)
from bridge_cli.targets.common import where_clause
from bridge_cli.targets.sqlite_values import sqlite_rows
from bridge_cli.targets.sync import MAX_EXAMPLES, SyncSQL, apply_sync, slice_statements

if TYPE_CHECKING:
    import pyarrow as pa


def _adapt_datetime(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat(sep=" ")


# Python's sqlite3 has no (or deprecated) adapters for these; store them as exact text.
sqlite3.register_adapter(Decimal, str)
sqlite3.register_adapter(dt.datetime, _adapt_datetime)
sqlite3.register_adapter(dt.date, lambda v: v.isoformat())
sqlite3.register_adapter(dt.time, lambda v: v.isoformat())
sqlite3.register_adapter(uuid.UUID, str)

_AUTOINCREMENT = re.compile(r"AUTOINCREMENT", re.IGNORECASE)
_STAGE = "bridge_stage"
_IDS_PER_STATEMENT = 500  # event ids bound in one statement (SQLite allows 32766 parameters)


# SQLite's words for a file it cannot write: SQLITE_READONLY, SQLITE_FULL, SQLITE_CANTOPEN.
_CANNOT_WRITE = ("readonly database", "disk is full", "unable to open database file")


def _sort_error(exc: sqlite3.Error, what: str, *paths: Path) -> Exception:
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in lowered or "busy" in lowered):
        return TransientError(f"{what}: target database is locked ({text})")
    if any(words in lowered for words in _CANNOT_WRITE):
        # Not the event's fault: the same event works once the file can be written again.
        for path in paths:
            reason = _unwritable(path)
            if reason:
                return StoreNotWritable(f"cannot write target file {path}: {reason} ({what}: {text})")
        named = " or ".join(str(p) for p in paths) or "the target"
        return StoreNotWritable(f"cannot write target file {named}: {text} ({what})")
    return PermanentError(f"{what}: {text}")


def _unwritable(path: Path) -> str | None:
    """Why the file (or its folder, for the journal) cannot be written here, if it cannot."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        return None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "permission denied"
    return None


class SQLiteTarget:
    capabilities = TargetCapabilities(identity_insert_needs_switch=False, write_methods=("values",))

    def __init__(self, settings: Settings) -> None:
        config = settings.target
        self.root: Path = resolve_path(config.get("path"), settings.home / "target", settings.home)
        ledger = str(config.get("ledger_table") or DEFAULT_LEDGER_TABLE)
        self.ledger = parse_target_table(ledger)
        self.busy_timeout = settings.lock_timeout

    def describe_driver(self) -> str | None:
        return None  # the standard library's sqlite3: nothing to choose

    def schema_path(self, schema: str) -> Path:
        return self.root / f"{schema}.sqlite"

    def _open(self, schema: str, *, create: bool = False) -> sqlite3.Connection:
        path = self.schema_path(schema)
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise not_writable("target folder", path.parent, exc) from None
            uri = f"file:{path}?mode=rwc"
        else:
            uri = f"file:{path}?mode=rw"
        try:
            connection = sqlite3.connect(
                uri, uri=True, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.OperationalError as exc:
            reason = _unwritable(path) if create else None
            if reason:
                raise StoreNotWritable(f"cannot write target file {path}: {reason} ({exc})") from None
            raise ConnectionFailure(f"cannot open target database {path}: {exc}") from None
        return connection

    @property
    def _ledger_sql(self) -> str:
        return f"ledger.{quote_double(self.ledger.table)}"

    def init_ledger(self) -> list[str]:
        connection = self._open(self.ledger.schema, create=True)
        try:
            exists = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [self.ledger.table]
            ).fetchone()
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {quote_double(self.ledger.table)} ("
                "event_id TEXT PRIMARY KEY, operation TEXT NOT NULL, target_table TEXT NOT NULL, "
                f"rows_affected INTEGER NOT NULL, applied_at TEXT NOT NULL, {LEDGER_DETAILS} TEXT)"
            )
            added = bool(exists) and not _has_details(connection, "main", self.ledger.table)
            if added:  # a ledger from before the column
                connection.execute(
                    f"ALTER TABLE {quote_double(self.ledger.table)} ADD COLUMN {LEDGER_DETAILS} TEXT"
                )
        except sqlite3.Error as exc:
            raise _sort_error(exc, f"creating ledger {self.ledger}", self.schema_path(self.ledger.schema)) from None
        finally:
            connection.close()
        where = self.schema_path(self.ledger.schema)
        if added:
            return [f"added column {LEDGER_DETAILS} to ledger {self.ledger}"]
        if exists:
            return [f"ledger {self.ledger} is up to date"]
        return [f"created ledger {self.ledger} in {where}"]

    def connect_ahead(self) -> None:
        pass  # a file: nothing to wait for

    def check_ready(self) -> None:
        if not self.schema_path(self.ledger.schema).exists():
            where = self.schema_path(self.ledger.schema).resolve()
            raise NotInitialized(
                f"target ledger {self.ledger} does not exist: no target file {where}; "
                "run `bridge init` there, or set BRIDGE_HOME to where it was run"
            )

    def ledger_entry(self, event_id: str) -> LedgerEntry | None:
        self.check_ready()
        connection = self._open(self.ledger.schema)
        try:
            cursor = connection.execute(
                f"SELECT * FROM {quote_double(self.ledger.table)} WHERE event_id = ?", [event_id]
            )
            found = cursor.fetchone()
            # By name: a ledger from before the details column has none.
            row = None if found is None else dict(zip([d[0].lower() for d in cursor.description], found, strict=True))
        except sqlite3.Error as exc:
            raise _sort_error(exc, "reading the ledger", self.schema_path(self.ledger.schema)) from None
        finally:
            connection.close()
        if row is None:
            return None
        applied = dt.datetime.fromisoformat(row["applied_at"]) if row["applied_at"] else None
        return LedgerEntry(row["event_id"], row["operation"], int(row["rows_affected"]), applied,
                           details_from_json(row.get(LEDGER_DETAILS)))

    def delete_ledger_entries(self, event_ids: Sequence[str], dry_run: bool = False) -> int:
        self.check_ready()
        ledger = quote_double(self.ledger.table)
        connection = self._open(self.ledger.schema)
        total = 0
        try:
            for start in range(0, len(event_ids), _IDS_PER_STATEMENT):
                batch = list(event_ids[start:start + _IDS_PER_STATEMENT])
                marks = ", ".join("?" for _ in batch)
                if dry_run:
                    (count,) = connection.execute(
                        f"SELECT count(*) FROM {ledger} WHERE event_id IN ({marks})", batch
                    ).fetchone()
                    total += int(count)
                else:
                    cursor = connection.execute(f"DELETE FROM {ledger} WHERE event_id IN ({marks})", batch)
                    total += int(cursor.rowcount)
        except sqlite3.Error as exc:
            raise _sort_error(exc, "deleting ledger rows", self.schema_path(self.ledger.schema)) from None
        finally:
            connection.close()
        return total

    def describe_table(self, table: TableName) -> TargetTable | None:
        if not self.schema_path(table.schema).exists():
            return None
        connection = self._open(table.schema)
        try:
            found = connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND lower(name) = lower(?)",
                [table.table],
            ).fetchone()
            if found is None:
                return None
            name, create_sql = found
            info = connection.execute(f"PRAGMA table_info({quote_double(name)})").fetchall()
        except sqlite3.Error as exc:
            raise _sort_error(exc, f"reading target table {table}", self.schema_path(table.schema)) from None
        finally:
            connection.close()
        autoincrement = bool(_AUTOINCREMENT.search(create_sql or ""))
        pk_columns = [row for row in info if row[5]]
        columns = []
        for _cid, col_name, col_type, notnull, _default, pk in info:
            identity = (
                autoincrement and bool(pk) and len(pk_columns) == 1
                and str(col_type).upper() == "INTEGER"
            )
            columns.append(TargetColumn(str(col_name), str(col_type), identity, not notnull))
        return TargetTable(TableName((table.schema, str(name))), tuple(columns))

    def check_staging(self) -> None:
        self.check_ready()
        connection = self._open(self.ledger.schema)
        try:
            connection.execute("BEGIN")
            connection.execute(f"CREATE TEMP TABLE {_STAGE}_check (k INTEGER)")
            connection.execute(f"DROP TABLE temp.{_STAGE}_check")
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _sort_error(exc, "creating a staging table", self.schema_path(self.ledger.schema)) from None
        finally:
            connection.close()

    def leftover_stages(self) -> list[str]:
        return []  # staging tables are TEMP: they go with their connection

    @contextmanager
    def session(self) -> Iterator[SQLiteSession]:
        self.check_ready()
        session = SQLiteSession(self)
        try:
            yield session
        finally:
            session.close()


class SQLiteSession:
    def __init__(self, target: SQLiteTarget) -> None:
        self.target = target
        self.connection: sqlite3.Connection | None = None
        self.ledger_details = False  # the ledger has the details column

    def _connect(self, plan: ApplyPlan) -> sqlite3.Connection:
        if self.connection is None:
            connection = self.target._open(plan.table.name.schema)
            ledger_path = self.target.schema_path(self.target.ledger.schema)
            try:
                connection.execute("ATTACH DATABASE ? AS ledger", [f"file:{ledger_path}?mode=rw"])
                self.ledger_details = _has_details(connection, "ledger", self.target.ledger.table)
            except sqlite3.Error as exc:
                connection.close()
                raise _sort_error(exc, "attaching the ledger", ledger_path) from None
            self.connection = connection
        return self.connection

    def _files(self, plan: ApplyPlan) -> tuple[Path, Path]:
        """The files an apply writes: the target table's schema and the ledger's."""
        return self.target.schema_path(plan.table.name.schema), self.target.schema_path(self.target.ledger.schema)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def stage_rows(self, plan: ApplyPlan, batches: Iterable[pa.RecordBatch]) -> int:
        connection = self._connect(plan)
        body = ", ".join(f"{quote_double(c.name)} {c.type}" for c in plan.columns)
        marks = ", ".join("?" for _ in plan.columns)
        staged = 0
        try:
            connection.execute(f"DROP TABLE IF EXISTS temp.{_STAGE}")
            connection.execute(f"CREATE TEMP TABLE {_STAGE} ({body})")
            insert = f"INSERT INTO temp.{_STAGE} VALUES ({marks})"
            for batch in batches:
                rows = sqlite_rows(batch, plan.columns)  # refuses a value a column would change
                connection.executemany(insert, rows)
                staged += len(rows)
            keys = ", ".join(quote_double(k.name) for k in plan.keys)
            connection.execute(f"CREATE INDEX temp.{_STAGE}_keys ON {_STAGE} ({keys})")
        except sqlite3.Error as exc:
            raise _sort_error(exc, "staging source rows", *self._files(plan)) from None
        return staged

    def apply(
        self, plan: ApplyPlan, applied_at: dt.datetime, before_commit: Callable[[], None] | None = None
    ) -> ApplyCounts:
        connection = self._connect(plan)
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _sort_error(exc, "starting the transaction", *self._files(plan)) from None
        try:
            self._write_ledger(connection, plan, applied_at)
            counts = self._apply_change(connection, plan)
            sets = "rows_affected = ?"
            values: list[Any] = [counts.rows_affected]
            if self.ledger_details:
                sets += f", {LEDGER_DETAILS} = ?"
                values.append(details_json(counts.details))
            connection.execute(
                f"UPDATE {self.target._ledger_sql} SET {sets} WHERE event_id = ?", [*values, plan.event_id]
            )
            if before_commit is not None:
                before_commit()
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return counts

    def _write_ledger(self, connection: sqlite3.Connection, plan: ApplyPlan, applied_at: dt.datetime) -> None:
        # First statement of the transaction: a second apply of the same event stops here.
        try:
            connection.execute(
                f"INSERT INTO {self.target._ledger_sql} "
                "(event_id, operation, target_table, rows_affected, applied_at) VALUES (?, ?, ?, 0, ?)",
                [plan.event_id, plan.operation.value, str(plan.table.name), applied_at],
            )
        except sqlite3.IntegrityError:
            raise AlreadyApplied(f"event {plan.event_id} is already in the ledger") from None
        except sqlite3.Error as exc:
            raise _sort_error(exc, "writing the ledger", *self._files(plan)) from None

    def _apply_change(self, connection: sqlite3.Connection, plan: ApplyPlan) -> ApplyCounts:
        table = f"main.{quote_double(plan.table.name.table)}"
        try:
            if plan.operation in (Operation.UPSERT, Operation.REPLACE):
                return apply_sync(_Runner(connection), sync_sql(plan, table), plan)
            if plan.operation is Operation.DELETE:
                return ApplyCounts(self._delete(connection, plan, table))
            first_per_key = (
                f"SELECT * FROM temp.{_STAGE} WHERE rowid IN (SELECT min(rowid) FROM temp.{_STAGE} "
                f"GROUP BY {', '.join(quote_double(k.name) for k in plan.keys)})"
            )
            match = " AND ".join(
                f"d.{quote_double(k.name)} IS s.{quote_double(k.name)}" for k in plan.keys
            )
            if plan.operation is Operation.INSERT:
                columns = ", ".join(quote_double(c.name) for c in plan.columns)
                selected = ", ".join(f"s.{quote_double(c.name)}" for c in plan.columns)
                cursor = connection.execute(
                    f"INSERT INTO {table} ({columns}) SELECT {selected} FROM ({first_per_key}) AS s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS d WHERE {match})"
                )
            else:
                sets = ", ".join(
                    f"{quote_double(c.name)} = s.{quote_double(c.name)}" for c in plan.set_columns
                )
                cursor = connection.execute(
                    f"UPDATE {table} AS d SET {sets} FROM ({first_per_key}) AS s WHERE {match}"
                )
            return ApplyCounts(int(cursor.rowcount))
        except sqlite3.Error as exc:
            raise _sort_error(exc, f"{plan.operation.value} into {plan.table.name}", *self._files(plan)) from None

    def _delete(self, connection: sqlite3.Connection, plan: ApplyPlan, table: str) -> int:
        where, params = where_clause(plan.filters, quote_double, "?")
        (count,) = connection.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()
        if count > plan.max_delete_rows:
            raise PermanentError(
                f"DELETE would remove {count} rows, over the limit of max_delete_rows="
                f"{plan.max_delete_rows}; nothing was deleted: split it into several events"
            )
        cursor = connection.execute(f"DELETE FROM {table} WHERE {where}", params)
        return int(cursor.rowcount)


def _has_details(connection: sqlite3.Connection, schema: str, table: str) -> bool:
    """Whether the ledger table (in the attached `schema`) has the details column."""
    info = connection.execute(f"PRAGMA {schema}.table_info({quote_double(table)})").fetchall()
    return any(str(row[1]).lower() == LEDGER_DETAILS for row in info)


class _Runner:
    """Statements on the session's connection, for `apply_sync` (errors sorted by the caller)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        return tuple(self.connection.execute(sql, list(params)).fetchone())

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.connection.execute(sql, list(params)).fetchall()]

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.connection.execute(sql, list(params)).rowcount)


def sync_sql(plan: ApplyPlan, table: str) -> SyncSQL:
    """UPSERT and REPLACE statements over the session's stage. Keys match with IS, as for INSERT
    and UPDATE here; `changed_only` compares with IS NOT, which is NULL-safe, and exact: COLLATE
    BINARY, or a column declared NOCASE or RTRIM would call a case or trailing-space change equal
    (and the stage has the target's declared types, so the same affinity)."""
    stage = f"temp.{_STAGE}"
    keys = ", ".join(quote_double(k.name) for k in plan.keys)
    match = " AND ".join(f"d.{quote_double(k.name)} IS s.{quote_double(k.name)}" for k in plan.keys)
    columns = ", ".join(quote_double(c.name) for c in plan.columns)
    selected = ", ".join(f"s.{quote_double(c.name)}" for c in plan.columns)
    update = None
    if plan.set_columns:
        sets = ", ".join(f"{quote_double(c.name)} = s.{quote_double(c.name)}" for c in plan.set_columns)
        update = f"UPDATE {table} AS d SET {sets} FROM {stage} AS s WHERE {match}"
        if plan.changed_only:
            differs = " OR ".join(
                f"d.{quote_double(c.name)} IS NOT s.{quote_double(c.name)} COLLATE BINARY"
                for c in plan.set_columns
            )
            update += f" AND ({differs})"
    outside, outside_example, delete_slice = slice_statements(
        plan, table, f"{stage} AS s", quote_double, "?", "s.rowid",
        lambda columns, rest: f"SELECT {columns} {rest} LIMIT 1",
    )
    return SyncSQL(
        stage_count=f"SELECT count(*) FROM {stage}",
        duplicates=(
            f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {stage} "
            f"GROUP BY {keys} HAVING count(*) > 1)"
        ),
        duplicate_examples=(
            f"SELECT {keys} FROM {stage} GROUP BY {keys} HAVING count(*) > 1 ORDER BY min(rowid) "
            f"LIMIT {MAX_EXAMPLES}"
        ),
        matched=f"SELECT count(*) FROM {stage} AS s WHERE EXISTS (SELECT 1 FROM {table} AS d WHERE {match})",
        update=update,
        insert_missing=(
            f"INSERT INTO {table} ({columns}) SELECT {selected} FROM {stage} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS d WHERE {match}) ORDER BY s.rowid"
        ),
        outside=outside,
        outside_example=outside_example,
        delete_slice=delete_slice,
        insert_all=f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ORDER BY rowid",
    )
