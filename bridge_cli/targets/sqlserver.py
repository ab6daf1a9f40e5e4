"""The SQL Server target through pymssql (TDS).

Rows are staged in a session-private temp table typed from the target, in batches (bulk copy or
multi-row parameterised VALUES), then applied in one short transaction with the ledger row.
Driver errors are sorted into transient (retried) and permanent at this boundary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bridge_cli.config import DEFAULT_LEDGER_TABLE, Settings
from bridge_cli.errors import (
    AlreadyApplied,
    BridgeError,
    ConfigError,
    ConnectionFailure,
    PermanentError,
    TransientError,
)
from bridge_cli.identifiers import TableName, parse_target_table
from bridge_cli.targets import ApplyPlan, LedgerEntry, TargetCapabilities, TargetColumn, TargetTable, tsql
from bridge_cli.targets.common import batch_rows

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("bridge")

WRITE_METHODS = ("auto", "bulk", "values")
# Server error numbers worth a retry: deadlock victim, lock timeout, and the Azure/connection
# family; DB-Lib numbers for timeouts and lost or refused connections.
TRANSIENT_NUMBERS = frozenset({
    1205, 1222, -2, 233, 10053, 10054, 10060, 40197, 40501, 40613, 49918, 49919, 49920,
    20002, 20003, 20004, 20006, 20009, 20047,
})
# Compatible servers report some of these under their own numbers (Babelfish: 33557097).
TRANSIENT_TEXT = ("lock timeout", "lock request time out", "deadlock", "could not serialize access")
_DB_LIB_NUMBER = re.compile(r"DB-Lib error message (\d+)")
_INFO_MESSAGES = re.compile(r"Changed (?:database context|language setting) to '[^']*'\.?")
# Kept here to document the sorting; anything not transient is permanent.
PERMANENT_NUMBERS = frozenset({2627, 2601, 544, 8152, 2628, 245, 8114, 208, 207, 547, 515, 8115})
DUPLICATE_KEY = frozenset({2627, 2601})
# Types bulk copy moves without loss through FreeTDS; others stage through VALUES, whose
# rendering bridge controls (microseconds, offsets, exact decimals).
BULK_SAFE_TYPES = frozenset({
    "bit", "tinyint", "smallint", "int", "bigint", "float", "real",
    "nvarchar", "nchar", "varchar", "char",
})


def error_number(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], tuple) and args[0]:
        args = args[0]
    if args and isinstance(args[0], int):
        return args[0]
    return None


def error_text(exc: BaseException, secret: str | None = None) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], tuple):
        args = args[0]
    parts = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in args[1:] or args]
    text = " ".join(" ".join(parts).split())
    # Keep only the server's own sentence when DB-Lib wraps it.
    text = text.replace("DB-Lib error message 20018, severity 16: General SQL Server error: "
                        "Check messages from the SQL Server", "").strip()
    # Informational messages (5701, 5703) that pymssql keeps from an earlier connection.
    text = _INFO_MESSAGES.sub("", text).strip()
    if secret:
        text = text.replace(secret, "***")
    return text


def sort_error(exc: BaseException, what: str, secret: str | None = None) -> BridgeError:
    """A driver error as TransientError (retry) or PermanentError, server message kept."""
    number = error_number(exc)
    text = error_text(exc, secret)
    db_lib = [int(n) for n in _DB_LIB_NUMBER.findall(str(exc.args))]
    if number in (5701, 5703) and db_lib:  # a stale informational number: report the real one
        number = db_lib[0]
    message = f"{what}: {text}" + (f" (SQL Server error {number})" if number else "")
    lowered = text.lower()
    if number in TRANSIENT_NUMBERS or set(db_lib) & TRANSIENT_NUMBERS or any(m in lowered for m in TRANSIENT_TEXT) or (
        number is None and ("connection" in lowered or "timed out" in lowered or "timeout" in lowered)
    ):
        return TransientError(message)
    return PermanentError(message)


def to_param(value: Any, column: TargetColumn) -> Any:
    """A source value as pymssql should render it into this column, losing nothing."""
    if isinstance(value, dt.datetime):
        if column.type.lower().startswith("datetimeoffset"):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            offset = value.utcoffset() or dt.timedelta(0)
            # A fixed offset renders as +HH:MM (pymssql uses %Z); zone names would be dropped.
            return value.replace(tzinfo=dt.timezone(offset))
        if value.tzinfo is not None:  # an instant: SQL Server DATETIME2 has no zone, store UTC
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value
    if isinstance(value, bytes):
        return bytearray(value)  # pymssql sends ASCII bytes as a string literal otherwise
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal) and not value.is_finite():
        raise PermanentError(f"column {column.name}: {value} cannot be stored in SQL Server")
    return value


class SQLServerTarget:
    capabilities = TargetCapabilities(identity_insert_needs_switch=True, write_methods=WRITE_METHODS)

    def __init__(self, settings: Settings) -> None:
        config = settings.target
        self.source = config.source
        missing = [k for k in ("host", "database") if not config.get(k)]
        if missing:
            raise ConfigError(f"{config.source}: missing {', '.join(missing)} for kind sqlserver")
        self.password = str(config.get("password") or "") or None
        self.connect_args: dict[str, Any] = {
            "server": str(config.get("host")),
            "port": str(config.get("port", 1433)),
            "user": config.get("user"),
            "password": self.password,
            "database": str(config.get("database")),
            "login_timeout": int(config.get("login_timeout", 30)),
            "timeout": int(config.get("timeout", 0)),
            "appname": str(config.get("appname", "bridge")),
            "autocommit": True,  # transactions are explicit and short
            "use_datetime2": True,  # microseconds survive parameter rendering
        }
        if config.get("tds_version"):
            self.connect_args["tds_version"] = str(config.get("tds_version"))
        self.write_method = str(config.get("write_method", "auto"))
        if self.write_method not in WRITE_METHODS:
            raise ConfigError(
                f"{config.source}.write_method: {self.write_method!r} is not one of {', '.join(WRITE_METHODS)}"
            )
        self.batch_rows = int(config.get("batch_rows", settings.batch_rows))
        self.lock_timeout_ms = int(settings.lock_timeout * 1000)
        self.rows_per_trip = int(config.get("rows_per_trip", 5000))
        self.ledger = parse_target_table(str(config.get("ledger_table") or DEFAULT_LEDGER_TABLE))
        self._ready = False
        self.bulk_refused = False

    def __repr__(self) -> str:  # never show the password
        args = self.connect_args
        return f"SQLServerTarget({args['server']}:{args['port']}/{args['database']})"

    # -- connections -------------------------------------------------------------------------
    def connect(self) -> Any:
        import pymssql

        try:
            connection = pymssql.connect(**self.connect_args)
            # Bounded lock waits: a blocked write fails with 1222 (transient) instead of hanging.
            connection.cursor().execute(f"SET LOCK_TIMEOUT {self.lock_timeout_ms}")
            return connection
        except pymssql.Error as exc:
            where = f"{self.connect_args['server']}:{self.connect_args['port']}"
            raise sort_error(exc, f"cannot connect to SQL Server at {where}", self.password) from None

    @contextmanager
    def _cursor(self, what: str) -> Iterator[Any]:
        import pymssql

        connection = self.connect()
        try:
            cursor = connection.cursor()
            try:
                yield cursor
            except pymssql.Error as exc:
                raise sort_error(exc, what, self.password) from None
        finally:
            connection.close()

    # -- ledger ------------------------------------------------------------------------------
    def init_ledger(self) -> list[str]:
        with self._cursor("creating the ledger") as cursor:
            cursor.execute("SELECT OBJECT_ID(%s, N'U')", (tsql.table_sql(self.ledger),))
            existed = cursor.fetchone()[0] is not None
            for statement in tsql.ledger_ddl(self.ledger):
                cursor.execute(statement)
        if existed:
            return [f"ledger {self.ledger} is up to date"]
        return [f"created ledger {self.ledger} in database {self.connect_args['database']}"]

    def check_ready(self) -> None:
        if self._ready:
            return
        try:
            with self._cursor("checking the ledger") as cursor:
                cursor.execute("SELECT OBJECT_ID(%s, N'U')", (tsql.table_sql(self.ledger),))
                found = cursor.fetchone()[0] is not None
        except TransientError as exc:
            raise ConnectionFailure(str(exc)) from None
        if not found:
            raise ConnectionFailure(f"target ledger {self.ledger} does not exist: run `bridge init`")
        self._ready = True

    def ledger_entry(self, event_id: str) -> LedgerEntry | None:
        with self._cursor("reading the ledger") as cursor:
            cursor.execute(
                f"SELECT event_id, operation, rows_affected, applied_at FROM {tsql.table_sql(self.ledger)} "
                "WHERE event_id = %s",
                (event_id,),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return LedgerEntry(str(row[0]), str(row[1]), int(row[2]), row[3])

    # -- tables ------------------------------------------------------------------------------
    def describe_table(self, table: TableName) -> TargetTable | None:
        with self._cursor(f"reading target table {table}") as cursor:
            cursor.execute(tsql.describe_sql(), (tsql.table_sql(table),))
            rows = cursor.fetchall()
        if not rows:
            return None
        columns = []
        seen: set[str] = set()
        for name, type_name, max_length, precision, scale, nullable, prop, is_identity, collation in rows:
            if name in seen:  # some compatible servers repeat catalog rows
                continue
            seen.add(name)
            columns.append(TargetColumn(
                name=str(name),
                type=tsql.column_type_sql(str(type_name), int(max_length), int(precision), int(scale), collation),
                is_identity=bool(prop) or bool(is_identity),
                nullable=bool(nullable),
            ))
        return TargetTable(table, tuple(columns))

    @contextmanager
    def session(self) -> Iterator[SQLServerSession]:
        self.check_ready()
        session = SQLServerSession(self, self.connect())
        try:
            yield session
        finally:
            session.close()


class SQLServerSession:
    def __init__(self, target: SQLServerTarget, connection: Any) -> None:
        self.target = target
        self.connection = connection
        self.method_used: str | None = None

    def close(self) -> None:
        # Closing a dead connection must not hide the real error.
        with contextlib.suppress(Exception):
            self.connection.close()

    def _sorted(self, exc: BaseException, what: str) -> BridgeError:
        return sort_error(exc, what, self.target.password)

    # -- staging -----------------------------------------------------------------------------
    def stage_rows(self, plan: ApplyPlan, batches: Iterable[pa.RecordBatch]) -> int:
        cursor = self._create_stage(plan)
        method = self._choose_method(plan)
        staged = 0
        for batch in batches:
            rows = [tuple(to_param(v, c) for v, c in zip(row, plan.columns, strict=True))
                    for row in batch_rows(batch)]
            if not rows:
                continue
            if method == "auto":
                method = self._first_bulk_or_values(plan, rows)
            elif method == "bulk":
                self._bulk(plan, rows)
            else:
                self._values(cursor, plan, rows)
            staged += len(rows)
        self.method_used = method
        return staged

    def _choose_method(self, plan: ApplyPlan) -> str:
        method = self.target.write_method
        if method == "auto" and self.target.bulk_refused:
            return "values"
        if method == "auto":
            base_types = {c.type.split("(")[0].split()[0].lower() for c in plan.columns}
            if not base_types <= BULK_SAFE_TYPES:
                return "values"
        return method

    def _first_bulk_or_values(self, plan: ApplyPlan, rows: list[tuple[Any, ...]]) -> str:
        """auto: bulk copy unless the server refuses it on the first batch (nothing applied yet)."""
        try:
            self._bulk(plan, rows)
            return "bulk"
        except BridgeError as exc:
            log.info("bulk copy refused (%s); staging with multi-row VALUES", exc)
            self.target.bulk_refused = True  # this server will refuse it again: don't ask per event
        # The failed bulk load may have left a broken connection or partial rows: start over.
        self.close()
        self.connection = self.target.connect()
        self._values(self._create_stage(plan), plan, rows)
        return "values"

    def _create_stage(self, plan: ApplyPlan) -> Any:
        import pymssql

        cursor = self.connection.cursor()
        try:
            cursor.execute(f"IF OBJECT_ID(N'tempdb..{tsql.STAGE}') IS NOT NULL DROP TABLE {tsql.STAGE}")
            cursor.execute(tsql.create_stage_sql(plan))
        except pymssql.Error as exc:
            raise self._sorted(exc, "creating the staging table") from None
        return cursor

    def _bulk(self, plan: ApplyPlan, rows: list[tuple[Any, ...]]) -> None:
        import pymssql

        column_ids = list(range(2, len(plan.columns) + 2))  # column 1 is the staging order
        try:
            self.connection.bulk_copy(tsql.STAGE, rows, column_ids=column_ids,
                                      batch_size=max(len(rows), 1))
        except (pymssql.Error, pymssql._mssql.MSSQLException, ValueError, TypeError) as exc:
            # bulk_copy raises the low-level _mssql exceptions, not the DB-API ones.
            raise self._sorted(exc, "bulk copy into the staging table") from None

    def _values(self, cursor: Any, plan: ApplyPlan, rows: list[tuple[Any, ...]]) -> None:
        import pymssql

        per_statement = tsql.rows_per_statement(len(plan.columns))
        # Several statements per round trip (up to rows_per_trip rows): fewer round trips on a
        # real network. A server with a slow T-SQL parser may prefer rows_per_trip: 1.
        per_trip = per_statement * max(1, self.target.rows_per_trip // per_statement)
        for start in range(0, len(rows), per_trip):
            chunk = rows[start : start + per_trip]
            statements = []
            params: list[Any] = []
            for offset in range(0, len(chunk), per_statement):
                part = chunk[offset : offset + per_statement]
                statements.append(tsql.insert_values_sql(plan.columns, len(part)))
                for row in part:
                    params.extend(row)
            try:
                cursor.execute(";\n".join(statements), tuple(params))
            except pymssql.Error as exc:
                raise self._sorted(exc, "staging source rows") from None

    # -- applying ----------------------------------------------------------------------------
    def apply(self, plan: ApplyPlan, applied_at: dt.datetime) -> int:
        import pymssql

        cursor = self.connection.cursor()
        ledger = tsql.table_sql(self.target.ledger)
        statement, params = tsql.apply_sql(plan)
        try:
            cursor.execute("SET XACT_ABORT ON; BEGIN TRANSACTION")
            try:
                cursor.execute(
                    f"INSERT INTO {ledger} (event_id, operation, target_table, rows_affected, applied_at) "
                    "VALUES (%s, %s, %s, 0, %s)",
                    (plan.event_id, plan.operation.value, str(plan.table.name), applied_at),
                )
            except pymssql.Error as exc:
                if error_number(exc) in DUPLICATE_KEY:
                    raise AlreadyApplied(f"event {plan.event_id} is already in the ledger") from None
                raise
            if plan.identity_insert:
                cursor.execute(tsql.identity_insert_sql(plan, True))
            cursor.execute(statement, tuple(params)) if params else cursor.execute(statement)
            rows = int(cursor.rowcount)
            if plan.identity_insert:
                cursor.execute(tsql.identity_insert_sql(plan, False))
            if rows > plan.max_delete_rows and plan.operation.value == "DELETE":
                raise PermanentError(
                    f"DELETE would remove more than max_delete_rows={plan.max_delete_rows} rows; "
                    "nothing was deleted: split it into several events"
                )
            cursor.execute(f"UPDATE {ledger} SET rows_affected = %s WHERE event_id = %s", (rows, plan.event_id))
            cursor.execute("COMMIT TRANSACTION")
            return rows
        except BaseException as exc:
            self._rollback(cursor)
            if isinstance(exc, pymssql.Error):
                raise self._sorted(exc, f"{plan.operation.value} into {plan.table.name}") from None
            raise

    def _rollback(self, cursor: Any) -> None:
        # After an XACT_ABORT error the server has already rolled back; ROLLBACK may then fail
        # with 3903, which must not hide the original error.
        try:
            cursor.execute("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
        except Exception as exc:
            log.debug("rollback after error: %s", exc)
