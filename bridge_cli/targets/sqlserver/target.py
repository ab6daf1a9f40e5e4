"""The SQL Server target: catalog checks, verified staging, apply + ledger, in driver-neutral T-SQL.

Rows are staged in batches into a table typed from the target (by the driver's write method), the
stage is checked against what was sent, then one short transaction applies the set-based statement
and writes the ledger row. Driver errors are sorted into transient (retried) and permanent by the
driver, at this boundary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bridge_cli.config import DEFAULT_LEDGER_TABLE, Settings
from bridge_cli.errors import (
    AlreadyApplied,
    BridgeError,
    ConfigError,
    ConnectionFailure,
    NotInitialized,
    PermanentError,
    TransientError,
)
from bridge_cli.events import Operation
from bridge_cli.identifiers import TableName, parse_target_table
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
from bridge_cli.targets.sqlserver import tsql
from bridge_cli.targets.sqlserver.connect_options import connect_spec
from bridge_cli.targets.sqlserver.driver import Driver
from bridge_cli.targets.sqlserver.verify import StageCheck, base_type
from bridge_cli.targets.sync import apply_sync

if TYPE_CHECKING:
    import pyarrow as pa

    from bridge_cli.spark.spec import StageFigures

log = logging.getLogger("bridge")

STALE_STAGE_HOURS = 24  # a shared staging table older than this was left by a crashed worker


def _int_option(config: Any, key: str, default: int, minimum: int) -> int:
    value = config.get(key, default)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{config.source}.{key}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{config.source}.{key}: must be at least {minimum}, got {value!r}")
    return number


def open_driver(settings: Settings) -> Driver:
    config = settings.target
    spec = connect_spec(config.options, config.source)
    lock_timeout_ms = int(settings.lock_timeout * 1000)
    if spec.driver == "mssql-python":
        from bridge_cli.targets.sqlserver.mssql_python_driver import MssqlPythonDriver

        return MssqlPythonDriver(spec, lock_timeout_ms, _int_option(config, "bulk_timeout", 0, 0))
    from bridge_cli.targets.sqlserver.pymssql_driver import PymssqlDriver

    # One 1000-row statement a round trip: on Babelfish, five statements a trip staged 4x slower
    # (bench/bench_write_methods.py); a far-away server may gain from more (rows_per_trip: 5000).
    return PymssqlDriver(spec, lock_timeout_ms, _int_option(config, "rows_per_trip", 1000, 1))


class SQLServerTarget:
    def __init__(self, settings: Settings) -> None:
        config = settings.target
        self.source = config.source
        self.driver = open_driver(settings)
        self.spec = self.driver.spec
        methods = ("auto", *self.driver.capabilities.methods)
        self.capabilities = TargetCapabilities(identity_insert_needs_switch=True, write_methods=methods)
        self.write_method = str(config.get("write_method", "auto"))
        if self.write_method not in methods:
            raise ConfigError(
                f"{config.source}.write_method: {self.write_method!r} is not one of {', '.join(methods)} "
                f"(driver {self.driver.name})"
            )
        self.batch_rows = _int_option(config, "batch_rows", settings.batch_rows, 1)
        self.ledger = parse_target_table(str(config.get("ledger_table") or DEFAULT_LEDGER_TABLE))
        self.database = str(config.get("database"))
        self._ready = False
        self._details_column: bool | None = None  # the ledger has the details column (asked once)
        self._idle: Any = None  # one connection kept between uses
        self._ahead: threading.Thread | None = None  # connect_ahead's, until check_ready or a use waits for it
        self._ahead_error: BaseException | None = None
        # Methods `auto` found refused or wrong on this server, with why: not asked again.
        self.refused: dict[str, str] = {}

    def __repr__(self) -> str:  # never show a secret
        return f"SQLServerTarget({self.spec!r})"

    def describe_driver(self) -> str | None:
        return self.spec.choice.describe() if self.spec.choice is not None else self.driver.name

    # -- connections -------------------------------------------------------------------------
    def connect(self) -> Any:
        return self.driver.connect()

    def connect_ahead(self) -> None:
        """Log in and check the ledger in a thread while a new process imports pyarrow (about 0.2 s
        each on Babelfish: a login and a new server session's first lookup). check_ready waits for
        it and raises what it raised; any other use of the connection waits for it first."""
        if self._ready or self._idle is not None or self._ahead is not None:
            return
        self._ahead = threading.Thread(target=self._check_ahead, name="target-connect", daemon=True)
        self._ahead.start()

    def _check_ahead(self) -> None:
        try:
            self._check_ready()
        except BaseException as exc:  # raised again, in the caller's thread, by check_ready
            self._ahead_error = exc

    def _settle(self) -> None:
        """Wait for connect_ahead's thread (unless this is it): the connection is then only ours."""
        ahead = self._ahead
        if ahead is not None and ahead is not threading.current_thread():
            ahead.join()
            self._ahead = None

    def _take(self) -> Any:
        """The idle connection if it still answers, else a new one. A new connection costs a login
        and, on Babelfish, a server process with cold catalog caches: most of an event's fixed cost."""
        self._settle()
        connection, self._idle = self._idle, None
        if connection is not None:
            try:
                cursor = connection.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                return connection
            except Exception:
                _close(connection)
        return self.connect()

    def _give_back(self, connection: Any) -> None:
        """Keep a connection whose last use ended cleanly (no open transaction, no session switch)."""
        if self._idle is None:
            self._idle = connection
        else:
            _close(connection)

    def close(self) -> None:
        self._settle()
        connection, self._idle = self._idle, None
        if connection is not None:
            _close(connection)

    @contextmanager
    def _cursor(self, what: str) -> Iterator[Any]:
        connection = self._take()
        try:
            yield connection.cursor()
        except self.driver.errors() as exc:
            _close(connection)
            raise self.driver.sort_error(exc, what) from None
        except BaseException:
            _close(connection)
            raise
        self._give_back(connection)

    def execute(self, cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
        """One statement in the driver's placeholder style."""
        if params:
            cursor.execute(self.driver.sql(sql), params)
        else:
            cursor.execute(sql)

    # -- ledger ------------------------------------------------------------------------------
    def _ledger_exists(self, cursor: Any) -> bool:
        """Whether the ledger exists; the same round trip learns whether it has the details column
        (ledger_has_details), which the first event asks next."""
        ledger = tsql.table_sql(self.ledger)
        self.execute(cursor, "SELECT OBJECT_ID(%s, N'U'), COL_LENGTH(%s, %s)", (ledger, ledger, LEDGER_DETAILS))
        found, details = cursor.fetchone()
        if found is not None:
            self._details_column = details is not None
        return found is not None

    def ledger_has_details(self, cursor: Any) -> bool:
        """Whether the ledger has the details column (a ledger from before it has not, until
        `bridge init` adds it); asked once."""
        if self._details_column is None:
            self.execute(cursor, "SELECT COL_LENGTH(%s, %s)", (tsql.table_sql(self.ledger), LEDGER_DETAILS))
            self._details_column = cursor.fetchall()[0][0] is not None
        return self._details_column

    def init_ledger(self) -> list[str]:
        with self._cursor("creating the ledger") as cursor:
            existed = self._ledger_exists(cursor)  # which also asks for the details column
            lacked = existed and not self._details_column
            for statement in tsql.ledger_ddl(self.ledger):
                cursor.execute(statement)
            if lacked:
                cursor.execute(tsql.add_ledger_details_sql(self.ledger))
            self._details_column = True
        done = [f"added column {LEDGER_DETAILS} to ledger {self.ledger}" if lacked
                else f"ledger {self.ledger} is up to date" if existed
                else f"created ledger {self.ledger} in database {self.database}"]
        swept = self.drop_stale_stages()
        if swept:
            done.append(f"dropped {len(swept)} staging table(s) left by stopped workers: {', '.join(swept)}")
        return done

    def drop_stale_stages(self, hours: int = STALE_STAGE_HOURS) -> list[str]:
        """Shared staging tables a crashed worker left behind (older than `hours`)."""
        with self._cursor("looking for leftover staging tables") as cursor:
            self.execute(cursor, tsql.stale_stages_sql(), (hours,))
            stale = [(str(schema), str(name)) for schema, name in cursor.fetchall()]
            for schema, name in stale:
                cursor.execute(tsql.drop_stage_sql(f"{tsql.q(schema)}.{tsql.q(name)}"))
        return [f"{schema}.{name}" for schema, name in stale]

    def leftover_stages(self, hours: int = STALE_STAGE_HOURS) -> list[str]:
        with self._cursor("looking for leftover staging tables") as cursor:
            self.execute(cursor, tsql.stale_stages_sql(), (hours,))
            return [f"{schema}.{name}" for schema, name in cursor.fetchall()]

    def check_staging(self) -> None:
        """A shared stage in the ledger schema, as a bulk load makes one; created and dropped in
        one transaction, so nothing is left even if the drop fails."""
        stage = tsql.shared_stage_name(self.ledger.schema, uuid.uuid4().hex)
        with self._cursor("creating a staging table") as cursor:
            cursor.execute("BEGIN TRANSACTION")
            cursor.execute(f"CREATE TABLE {stage} ({tsql.q(tsql.ROW)} BIGINT NOT NULL)")
            cursor.execute(tsql.drop_stage_sql(stage))
            cursor.execute("COMMIT TRANSACTION")

    def check_ready(self) -> None:
        self._settle()
        error, self._ahead_error = self._ahead_error, None
        if error is not None:
            raise error
        self._check_ready()

    def _check_ready(self) -> None:
        if self._ready:
            return
        try:
            with self._cursor("checking the ledger") as cursor:
                found = self._ledger_exists(cursor)
        except TransientError as exc:
            raise ConnectionFailure(str(exc)) from None
        if not found:
            raise NotInitialized(
                f"target ledger {self.ledger} does not exist in database {self.database} at "
                f"{self.spec.where}: run `bridge init`"
            )
        self._ready = True

    def ledger_entry(self, event_id: str) -> LedgerEntry | None:
        with self._cursor("reading the ledger") as cursor:
            details = LEDGER_DETAILS if self.ledger_has_details(cursor) else "NULL"
            self.execute(
                cursor,
                f"SELECT event_id, operation, rows_affected, applied_at, {details} FROM "
                f"{tsql.table_sql(self.ledger)} WHERE event_id = %s",
                (event_id,),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return LedgerEntry(str(row[0]), str(row[1]), int(row[2]), row[3], details_from_json(row[4]))

    def delete_ledger_entries(self, event_ids: Sequence[str], dry_run: bool = False) -> int:
        total = 0
        size = tsql.LEDGER_IDS_PER_STATEMENT
        with self._cursor("deleting ledger rows") as cursor:
            for start in range(0, len(event_ids), size):
                batch = tuple(event_ids[start:start + size])
                self.execute(cursor, tsql.ledger_rows_sql(self.ledger, len(batch), dry_run), batch)
                total += int(cursor.fetchone()[0]) if dry_run else max(int(cursor.rowcount), 0)
        return total

    # -- tables ------------------------------------------------------------------------------
    def describe_table(self, table: TableName) -> TargetTable | None:
        with self._cursor(f"reading target table {table}") as cursor:
            self.execute(cursor, tsql.describe_sql(), (tsql.table_sql(table),))
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

    # -- write methods -----------------------------------------------------------------------
    def methods_for(self, plan: ApplyPlan) -> list[str]:
        """The methods to try for this plan, in order: `auto` tries bulk first where it may work."""
        if self.write_method != "auto":
            return [self.write_method]
        capabilities = self.driver.capabilities
        fallback = capabilities.fallback
        bulk_types = capabilities.bulk_types
        if "bulk" in self.refused:
            return [fallback]
        if bulk_types is not None and not {base_type(c) for c in plan.columns} <= bulk_types:
            return [fallback]
        return ["bulk", fallback]

    def refuse(self, method: str, reason: str) -> None:
        log.warning("write method %s does not work on this server (%s): using %s from now on",
                    method, reason, self.driver.capabilities.fallback)
        self.refused[method] = reason

    @contextmanager
    def session(self) -> Iterator[SQLServerSession]:
        self.check_ready()
        session = SQLServerSession(self, self._take())
        try:
            yield session
        except BaseException:
            session.close()  # a failed session may hold session state (IDENTITY_INSERT): never reused
            raise
        session.release()


class SQLServerSession:
    def __init__(self, target: SQLServerTarget, connection: Any) -> None:
        self.target = target
        self.driver = target.driver
        self.connection = connection
        self.stage = tsql.STAGE
        self.casts: dict[str, str] = {}  # stage columns staged as another type, cast back by the apply
        self.method_used: str | None = None
        self._temp_stage = False  # this session made the connection's temp stage (release drops it)

    def close(self) -> None:
        # Closing a dead connection must not hide the real error.
        with contextlib.suppress(Exception):
            self._drop_stage()
        _close(self.connection)

    def release(self) -> None:
        """After a clean session: drop the stage and keep the connection for the next one."""
        try:
            self._drop_stage()
            if self._temp_stage:
                self.connection.cursor().execute(tsql.drop_stage_sql(tsql.STAGE))
        except Exception:
            _close(self.connection)
            return
        self.target._give_back(self.connection)

    # -- staging -----------------------------------------------------------------------------
    def stage_rows(self, plan: ApplyPlan, batches: Iterable[pa.RecordBatch]) -> int:
        # The engine closes `batches` (and the source behind them) as soon as this returns or
        # raises, for every target: a failed load must not keep the source's lock until collected.
        methods = self.target.methods_for(plan)
        source = (batch for batch in batches if batch.num_rows)
        first = next(source, None)
        if first is None:
            self._create_stage(plan, methods[-1])
            self.method_used = methods[-1]
            return 0
        method = methods[0]
        if len(methods) > 1:  # auto: the first batch decides whether bulk works here
            method, check = self._first_batch(plan, first, methods)
            rest: Iterable[pa.RecordBatch] = source
        else:
            self._create_stage(plan, method)
            check = StageCheck(plan)
            rest = _chain(first, source)
        first_row = check.rows + 1
        self._load(method, plan, _counted(rest, check), first_row)
        self.method_used = method
        problems = self._differences(check)
        if problems:
            summary = "; ".join(problems[:5])
            if method == "bulk" and self.target.write_method == "auto":
                self.target.refuse("bulk", summary)
                raise TransientError(f"the staged rows differ from the source ({summary}); nothing was "
                                     f"applied, and the retry stages with {self.driver.capabilities.fallback}")
            hint = " (use write_method: auto or the driver's other method)" if method == "bulk" else ""
            raise PermanentError(f"{method} load wrote rows that differ from the source ({summary}); "
                                 f"nothing was applied{hint}")
        return check.rows

    def stage_external(self, plan: ApplyPlan, load: Callable[[str], StageFigures]) -> int:
        """A shared stage that another process loads (a Spark run over JDBC), then the same check
        as every stage. A stopped load leaves nothing: the session's close drops the stage."""
        self._drop_earlier_attempts_stages(plan.event_id)
        self._create_stage(plan, "external", shared=True, token=tsql.event_stage_token(plan.event_id),
                           staged=tsql.text_staged_types(plan))
        check = StageCheck.from_figures(plan, load(self.stage))
        self.method_used = "spark"
        problems = self._differences(check)
        if problems:
            raise PermanentError(f"the Spark run staged rows that differ from the source "
                                 f"({'; '.join(problems[:5])}); nothing was applied")
        return check.rows

    def _first_batch(self, plan: ApplyPlan, batch: pa.RecordBatch, methods: list[str]) -> tuple[str, StageCheck]:
        """auto: load the first batch by bulk and verify it; on a refusal or a wrong stage, drop it,
        remember, and stage with the fallback method (nothing is applied either way)."""
        bulk, fallback = methods
        self._create_stage(plan, bulk)
        check = StageCheck(plan)
        check.add(batch)
        try:
            self._load(bulk, plan, [batch], 1)
        except BridgeError as exc:
            reason = str(exc)
        else:
            # On the session's own connection: an error here (e.g. the session was killed) says
            # nothing about bulk loads and is raised as it is, not taken for a refusal.
            problems = self._differences(check)
            if not problems:
                return bulk, check
            reason = "; ".join(problems[:5])
        self.target.refuse(bulk, reason)
        if self._on_own_connection(bulk):
            self._drop_stage()  # the load ran on its own connection: this one is untouched
        else:
            # The failed load may have left this connection broken or mid-transaction: start over.
            self.close()
            self.connection = self.target.connect()
            self._temp_stage = False  # it went with the old connection
        self._create_stage(plan, fallback)
        self._load(fallback, plan, [batch], 1)
        return fallback, check

    def _load(self, method: str, plan: ApplyPlan, batches: Iterable[pa.RecordBatch], first_row: int) -> None:
        """One load into the stage. On the session's connection it is one transaction: in autocommit
        every row of a parameter array commits on its own (1.5 s of 5 s for 100,000 rows measured
        on Babelfish)."""
        load = self.driver.load(method, self.connection, plan, self.stage)
        if self._on_own_connection(method):
            load.write(batches, first_row)
            return
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
        except self.driver.errors() as exc:
            raise self.driver.sort_error(exc, "staging source rows") from None
        load.write(batches, first_row)  # on an error the session's connection is closed, undoing it
        try:
            cursor.execute("COMMIT TRANSACTION")
        except self.driver.errors() as exc:
            raise self.driver.sort_error(exc, "staging source rows") from None

    def _on_own_connection(self, method: str) -> bool:
        """Whether this method loads through a connection of its own (it needs a shared stage)."""
        return method == "bulk" and self.driver.capabilities.bulk_on_own_connection

    def _drop_earlier_attempts_stages(self, event_id: str) -> None:
        """This session holds the event's claim, so a stage an earlier attempt left (its worker was
        killed mid-load) is nobody's: dropped now rather than by `init` a day later."""
        schema = self.target.ledger.schema
        cursor = self.connection.cursor()
        try:
            self.target.execute(cursor, tsql.event_stages_sql(),
                                (schema, tsql.STAGE_PREFIX + tsql.event_stage_mark(event_id) + "%"))
            for _, name in cursor.fetchall():
                log.info("dropping staging table %s.%s left by an earlier attempt of %s", schema, name, event_id)
                cursor.execute(tsql.drop_stage_sql(f"{tsql.q(schema)}.{tsql.q(str(name))}"))
        except self.driver.errors() as exc:
            raise self.driver.sort_error(exc, "dropping an earlier attempt's staging table") from None

    def _create_stage(
        self, plan: ApplyPlan, method: str, shared: bool = False, token: str | None = None,
        staged: dict[str, str] | None = None,
    ) -> None:
        self._drop_stage()
        self.casts = staged or {}
        if shared or self._on_own_connection(method) or self.driver.needs_shared_stage(method, plan):
            self.stage = tsql.shared_stage_name(self.target.ledger.schema, token or uuid.uuid4().hex)
        else:
            self.stage = tsql.STAGE
            self._temp_stage = True
        cursor = self.connection.cursor()
        try:
            if self.stage == tsql.STAGE or token is not None:
                # Only these names can be taken already (by this session's earlier try, or an earlier
                # attempt's run); a new uuid4 name cannot, and on Babelfish the look was 0.05 s cold.
                cursor.execute(tsql.drop_stage_sql(self.stage))
            server_numbers = method in self.driver.capabilities.server_numbered
            cursor.execute(tsql.create_stage_sql(plan, self.stage, server_numbers, self.casts))
        except self.driver.errors() as exc:
            raise self.driver.sort_error(exc, "creating the staging table") from None

    def _drop_stage(self) -> None:
        """A shared stage is a permanent table: drop it (a temp table goes with the connection)."""
        if self.stage != tsql.STAGE:
            stage, self.stage = self.stage, tsql.STAGE
            try:
                self.connection.cursor().execute(tsql.drop_stage_sql(stage))
            except Exception:
                # A fresh connection, in case this one is broken; `init` sweeps what is left.
                with self.target._cursor("dropping the staging table") as cursor:
                    cursor.execute(tsql.drop_stage_sql(stage))

    def _differences(self, check: StageCheck) -> list[str]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(check.query(self.stage))
            row = cursor.fetchone()
        except self.driver.errors() as exc:
            raise self.driver.sort_error(exc, "checking the staged rows") from None
        return check.differences(tuple(row))

    # -- applying ----------------------------------------------------------------------------
    def apply(
        self, plan: ApplyPlan, applied_at: dt.datetime, before_commit: Callable[[], None] | None = None
    ) -> ApplyCounts:
        cursor = self.connection.cursor()
        execute = self.target.execute
        ledger = tsql.table_sql(self.target.ledger)
        try:
            details = self.target.ledger_has_details(cursor)
            cursor.execute("SET XACT_ABORT ON; BEGIN TRANSACTION")
            try:
                execute(
                    cursor,
                    f"INSERT INTO {ledger} (event_id, operation, target_table, rows_affected, applied_at) "
                    "VALUES (%s, %s, %s, 0, %s)",
                    (plan.event_id, plan.operation.value, str(plan.table.name), applied_at),
                )
            except self.driver.errors() as exc:
                if self.driver.is_duplicate_key(exc):
                    raise AlreadyApplied(f"event {plan.event_id} is already in the ledger") from None
                raise
            if plan.identity_insert:
                cursor.execute(tsql.identity_insert_sql(plan, True))
            counts = self._change(cursor, plan)
            if plan.identity_insert:
                cursor.execute(tsql.identity_insert_sql(plan, False))
            sets = "rows_affected = %s"
            values: list[Any] = [counts.rows_affected]
            if details:
                sets += f", {LEDGER_DETAILS} = %s"
                values.append(details_json(counts.details))
            execute(cursor, f"UPDATE {ledger} SET {sets} WHERE event_id = %s", (*values, plan.event_id))
            if before_commit is not None:
                before_commit()
            cursor.execute("COMMIT TRANSACTION")
        except BaseException as exc:
            self._rollback(cursor)
            if isinstance(exc, self.driver.errors()):
                raise self.driver.sort_error(exc, f"{plan.operation.value} into {plan.table.name}") from None
            raise
        with contextlib.suppress(Exception):  # the stage is done with; `init` sweeps a leftover
            self._drop_stage()
        return counts

    def _change(self, cursor: Any, plan: ApplyPlan) -> ApplyCounts:
        """The event's change to the target, inside apply's transaction."""
        if plan.operation in (Operation.UPSERT, Operation.REPLACE):
            runner = _Runner(self.target, cursor)
            return apply_sync(runner, tsql.sync_sql(plan, self.stage, self.casts), plan)
        statement, params = tsql.apply_sql(plan, self.stage, self.casts)
        self.target.execute(cursor, statement, tuple(params))
        rows = int(cursor.rowcount)
        if rows > plan.max_delete_rows and plan.operation is Operation.DELETE:
            raise PermanentError(
                f"DELETE would remove more than max_delete_rows={plan.max_delete_rows} rows; "
                "nothing was deleted: split it into several events"
            )
        return ApplyCounts(rows)

    def _rollback(self, cursor: Any) -> None:
        # After an XACT_ABORT error the server has already rolled back; ROLLBACK may then fail
        # with 3903, which must not hide the original error.
        try:
            cursor.execute("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
        except Exception as exc:
            log.debug("rollback after error: %s", exc)


def _close(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.close()


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _counted(batches: Iterable[pa.RecordBatch], check: StageCheck) -> Iterator[pa.RecordBatch]:
    """Each batch is added to the check as it goes to the driver."""
    for batch in batches:
        check.add(batch)
        yield batch


class _Runner:
    """Statements on apply's cursor, for `apply_sync` (driver errors sorted by apply)."""

    def __init__(self, target: SQLServerTarget, cursor: Any) -> None:
        self.target = target
        self.cursor = cursor

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        self.target.execute(self.cursor, sql, tuple(params))
        row = self.cursor.fetchone()
        while self.cursor.fetchone() is not None:  # a driver must be read to the end
            pass
        return tuple(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.target.execute(self.cursor, sql, tuple(params))
        return [tuple(row) for row in self.cursor.fetchall()]

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.target.execute(self.cursor, sql, tuple(params))
        return int(self.cursor.rowcount)
