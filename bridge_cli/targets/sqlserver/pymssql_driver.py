"""pymssql (FreeTDS): multi-row parameterised VALUES, or TDS bulk copy, into the session's stage.

pymssql renders parameters into the statement text on the client (no server-side parameters), so
the cost of a load is the server parsing the statements: big multi-row VALUES statements, and as
few of them as the limits allow. `rows_per_trip` sets how many rows go in one round trip
(statements of up to 1000 rows each); one statement a round trip suits a server with a slow
parser.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from bridge_cli.errors import BridgeError, ConnectionFailure, PermanentError, TransientError
from bridge_cli.targets import ApplyPlan, TargetColumn
from bridge_cli.targets.sqlserver import tsql
from bridge_cli.targets.sqlserver.connect_options import ConnectSpec
from bridge_cli.targets.sqlserver.driver import PASS_THROUGH, DriverCapabilities, failure_of_path
from bridge_cli.targets.sqlserver.rows import Convert, RowLoad, fixed_offset
from bridge_cli.targets.sqlserver.verify import base_type

if TYPE_CHECKING:
    import pyarrow as pa

# Server error numbers worth a retry: deadlock victim, lock timeout, and the Azure/connection
# family; DB-Lib numbers for timeouts and lost or refused connections (20017, "Unexpected EOF from
# the server", is what a statement gets when the server kills its session).
TRANSIENT_NUMBERS = frozenset({
    1205, 1222, -2, 233, 10053, 10054, 10060, 40197, 40501, 40613, 49918, 49919, 49920,
    20002, 20003, 20004, 20006, 20009, 20017, 20047,
})
# Compatible servers report some of these under their own numbers (Babelfish: 33557097).
TRANSIENT_TEXT = ("lock timeout", "lock request time out", "deadlock", "could not serialize access")
_DB_LIB_NUMBER = re.compile(r"DB-Lib error message (\d+)")
_DB_LIB_WRAPPER = re.compile(
    r"DB-Lib error message 20018, severity \d+: General SQL Server error: Check messages from the SQL Server"
)
_DB_LIB_SPLIT = re.compile(r"(?=DB-Lib error message \d+)")
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
    # Keep only the server's own sentence when DB-Lib wraps it, and each DB-Lib sentence once
    # (FreeTDS repeats them).
    text = _DB_LIB_WRAPPER.sub(" ", text).strip()
    sentences = [s.strip() for s in _DB_LIB_SPLIT.split(text) if s.strip()]
    text = ". ".join(dict.fromkeys(s.rstrip(". ") for s in sentences))
    # Informational messages (5701, 5703) that pymssql keeps from an earlier connection.
    text = _INFO_MESSAGES.sub("", text).strip()
    if secret:
        text = text.replace(secret, "***")
    return text


def sort_error(exc: BaseException, what: str, secret: str | None = None) -> BridgeError:
    """A pymssql error as TransientError (retry) or PermanentError, server message kept."""
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


def _bytearray(value: Any) -> Any:
    return bytearray(value)  # pymssql sends bytes made of ASCII as a string literal otherwise


def converter_for(column: TargetColumn, arrow_type: pa.DataType) -> Convert | None:
    """The few values pymssql cannot render faithfully as they come out of Arrow."""
    import pyarrow as pa

    if base_type(column) == "datetimeoffset" and pa.types.is_timestamp(arrow_type):
        return fixed_offset  # pymssql renders a fixed offset as +HH:MM; zone names would be dropped
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_fixed_size_binary(
        arrow_type
    ):
        return _bytearray
    if isinstance(arrow_type, pa.ExtensionType) and base_type(column) == "uniqueidentifier":
        return str  # Arrow's uuid extension hands out uuid.UUID, which pymssql cannot render
    return None


def to_param(value: Any, column: TargetColumn) -> Any:
    """One value as pymssql should render it into this column (for callers outside a batch)."""
    if isinstance(value, dt.datetime):
        if base_type(column) == "datetimeoffset":
            return fixed_offset(value)
        if value.tzinfo is not None:  # an instant: SQL Server DATETIME2 has no zone, store UTC
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value
    if isinstance(value, bytes):
        return bytearray(value)
    if hasattr(value, "hex") and type(value).__name__ == "UUID":
        return str(value)
    return value


class ValuesLoad(RowLoad):
    """Multi-row VALUES statements, as many rows a round trip as `rows_per_trip` allows."""

    converter = staticmethod(converter_for)

    def __init__(self, driver: PymssqlDriver, connection: Any, plan: ApplyPlan, stage: str) -> None:
        super().__init__(driver, connection, plan, stage)
        self.cursor = connection.cursor()
        # pymssql renders parameters into the text, so SQL Server's 2100-parameter limit does not
        # apply; only the 1000-row limit of one VALUES list does.
        self.per_statement = tsql.MAX_ROWS_PER_VALUES
        self.per_trip = self.per_statement * max(1, driver.rows_per_trip // self.per_statement)
        self._texts: dict[int, str] = {}

    def _trip_sql(self, rows: int) -> str:
        """The text of one round trip of `rows` rows; full trips share one text."""
        text = self._texts.get(rows)
        if text is None:
            statements = []
            for offset in range(0, rows, self.per_statement):
                size = min(self.per_statement, rows - offset)
                statements.append(tsql.insert_values_sql(self.plan.columns, size, self.stage))
            text = self._texts[rows] = ";\n".join(statements)
        return text

    def write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        import pymssql

        for start in range(0, len(rows), self.per_trip):
            chunk = rows[start : start + self.per_trip]
            params = tuple(value for row in chunk for value in row)
            try:
                self.cursor.execute(self._trip_sql(len(chunk)), params)
            except pymssql.Error as exc:
                raise self.driver.sort_error(exc, "staging source rows") from None


class BulkCopyLoad(RowLoad):
    """FreeTDS bulk copy on the session's own connection (the stage is its temp table)."""

    converter = staticmethod(converter_for)

    def write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        import pymssql

        column_ids = list(range(1, len(self.plan.columns) + 2))
        try:
            self.connection.bulk_copy(self.stage, rows, column_ids=column_ids, batch_size=max(len(rows), 1))
        except (pymssql.Error, pymssql._mssql.MSSQLException) as exc:
            # bulk_copy raises the low-level _mssql exceptions, not only the DB-API ones.
            raise self.driver.sort_error(exc, "bulk copy into the staging table") from None
        except PASS_THROUGH:
            raise
        except BaseException as exc:  # e.g. ValueError / TypeError from the client side
            raise failure_of_path(exc, "bulk copy into the staging table") from None


class PymssqlDriver:
    name = "pymssql"
    capabilities = DriverCapabilities(
        methods=("bulk", "values"), fallback="values", bulk_on_own_connection=False, bulk_types=BULK_SAFE_TYPES
    )

    def __init__(self, spec: ConnectSpec, lock_timeout_ms: int, rows_per_trip: int) -> None:
        self.spec = spec
        self.lock_timeout_ms = lock_timeout_ms
        self.rows_per_trip = rows_per_trip

    def connect(self) -> Any:
        import pymssql

        try:
            connection = pymssql.connect(**self.spec.kwargs)
            # Bounded lock waits: a blocked write fails with 1222 (transient) instead of hanging.
            connection.cursor().execute(f"SET LOCK_TIMEOUT {int(self.lock_timeout_ms)}")
            return connection
        except pymssql.Error as exc:
            # Not reaching the server (or not being let in) is a connection failure: exit 5 for a
            # command, a retry for a worker; the event itself is not at fault.
            error = self.sort_error(exc, f"cannot connect to SQL Server at {self.spec.where}")
            raise ConnectionFailure(str(error)) from None

    def errors(self) -> tuple[type[BaseException], ...]:
        import pymssql

        return (pymssql.Error, pymssql._mssql.MSSQLException)

    def sort_error(self, exc: BaseException, what: str) -> BridgeError:
        sorted_error = sort_error(exc, what)
        return type(sorted_error)(self.spec.scrub(str(sorted_error)))

    def is_duplicate_key(self, exc: BaseException) -> bool:
        return error_number(exc) in DUPLICATE_KEY

    def sql(self, text: str) -> str:
        return text

    def needs_shared_stage(self, method: str, plan: ApplyPlan) -> bool:
        return False  # values are rendered by pymssql; the server never describes parameters

    def load(self, method: str, connection: Any, plan: ApplyPlan, stage: str) -> ValuesLoad | BulkCopyLoad:
        if method == "bulk":
            return BulkCopyLoad(self, connection, plan, stage)
        return ValuesLoad(self, connection, plan, stage)
