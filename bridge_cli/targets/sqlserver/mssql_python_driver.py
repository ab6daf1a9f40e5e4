"""mssql-python (Microsoft's driver, its ODBC driver inside the wheel): parameter arrays, Arrow bulk copy.

- `arrays`: `executemany` binds whole columns as parameter arrays (what fast_executemany means), into
  the session's temp table.
- `bulk`: `bulkcopy_arrow` streams the source's Arrow batches straight into TDS bulk load, with no
  per-row Python. It runs on a connection of its own, which cannot see a session temp table, so it
  loads a uniquely named permanent staging table that the session drops after the apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bridge_cli.errors import BridgeError, ConnectionFailure, PermanentError, TransientError
from bridge_cli.prefetch import read_ahead
from bridge_cli.targets import ApplyPlan, TargetColumn
from bridge_cli.targets.sqlserver import tsql
from bridge_cli.targets.sqlserver.connect_options import ConnectSpec
from bridge_cli.targets.sqlserver.driver import PASS_THROUGH, DriverCapabilities, failure_of_path
from bridge_cli.targets.sqlserver.rows import Convert, fixed_offset, prepare_array, python_columns
from bridge_cli.targets.sqlserver.verify import base_type

if TYPE_CHECKING:
    import pyarrow as pa

# What the driver calls the SQLSTATE class of an error (its `driver_error`), when a retry may help.
TRANSIENT_KINDS = ("serialization failure", "communication link failure", "timeout expired",
                   "client unable to establish connection", "connection not open", "disconnect error")
TRANSIENT_TEXT = ("lock timeout", "lock request time out", "deadlock", "could not serialize access",
                  "connection was forcibly closed", "tcp provider", "login timeout expired")
# Target types whose values travel as text (see as_text), cast back in the statement.
TEXT_TYPES = frozenset({"date", "time", "datetime2", "datetime", "smalldatetime", "datetimeoffset",
                        "decimal", "numeric"})
_VENDOR_PREFIX = re.compile(r"^(\[[^\]]*\])+")
_NUMBER = re.compile(r"\((\d{3,6})\)\s*(?:\(SQL\w*\))?\s*$")


def error_text(exc: BaseException) -> str:
    text = str(getattr(exc, "ddbc_error", "") or getattr(exc, "driver_error", "") or exc)
    return " ".join(_VENDOR_PREFIX.sub("", text.strip()).split())


def sort_error(exc: BaseException, what: str) -> BridgeError:
    kind = str(getattr(exc, "driver_error", "")).lower()
    text = error_text(exc)
    lowered = text.lower()
    message = f"{what}: {text}"
    if any(k in kind for k in TRANSIENT_KINDS) or any(t in lowered for t in TRANSIENT_TEXT):
        return TransientError(message)
    return PermanentError(message)


def _offset_text(value: Any) -> str:
    return fixed_offset(value).isoformat(sep=" ")  # 2026-01-01 22:04:05.654321-05:00


def converter_for(column: TargetColumn, arrow_type: pa.DataType) -> Convert | None:
    import pyarrow as pa

    if base_type(column) == "datetimeoffset" and pa.types.is_timestamp(arrow_type):
        return _offset_text  # the instant with its own offset, as SQL Server reads it
    return None


def decimal_text(array: pa.Array) -> pa.Array:
    """Decimals as plain digits. Arrow writes small values in E notation (0E-10, 1.000E-7), which
    SQL Server will not cast to DECIMAL: those few are rewritten in Python, the rest stay in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = array.cast(pa.string())
    notation = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(notation).as_py():
        return text
    plain = [format(Decimal(text[i].as_py()), "f") for i in pc.indices_nonzero(notation).to_pylist()]
    return pc.replace_with_mask(text, notation, pa.array(plain, pa.string()))


def as_text(array: pa.Array, column: TargetColumn) -> pa.Array:
    """Dates, times and decimals travel as text, cast by Arrow (no Python per value), and the
    statement casts them back; SQL Server reads the text exactly.
    - The driver binds a datetime as DATETIME and refuses years before 1753, which DATE and
      DATETIME2 hold.
    - A Decimal costs the driver several Python calls per value to size and format it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = prepare_array(array, column)
    kind = array.type
    if pa.types.is_decimal(kind) and base_type(column) in ("decimal", "numeric"):
        return decimal_text(array)
    if not (pa.types.is_timestamp(kind) and kind.tz is None or pa.types.is_date(kind) or pa.types.is_time(kind)):
        return array
    text = array.cast(pa.string())
    if getattr(kind, "unit", None) == "ns":  # nine fractional digits; SQL Server reads seven
        text = pc.utf8_slice_codeunits(text, 0, -2)
    return text


# ODBC SQL types (mssql_python.constants.ConstantsDDBC) declared for parameters, by target type.
SQL_WVARCHAR = -9
SQL_VARBINARY = -3
_NUMBER_TYPES = {"bigint": (-5, "int"), "int": (4, "int"), "smallint": (5, "int"), "tinyint": (-6, "int"),
                 "bit": (-7, "bool"), "float": (8, "float"), "real": (7, "float")}
_LENGTH = re.compile(r"^n?(?:var)?char\((\d+)\)")
_MAX_TEXT = re.compile(r"^n?(?:var)?char\(max\)")
_BINARY_LENGTH = re.compile(r"^(?:var)?binary\((\d+)\)")


InputSizes = list[tuple[int, int, int]]


def input_sizes(columns: tuple[TargetColumn, ...], batch: pa.RecordBatch) -> InputSizes | None:
    """Parameter types declared from the target's columns, so the driver need not infer them from
    every value; None (let it infer) where a column is not a simple case. A text parameter is
    declared at least as long as the longest value in the batch, so the server, not the driver,
    judges a value too long for its column (and refuses it rather than cutting it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow_family = {"int": pa.types.is_integer, "bool": pa.types.is_boolean, "float": pa.types.is_floating}
    sizes = []
    for column, array in zip(columns, batch.columns, strict=True):
        kind = base_type(column)
        if kind in _NUMBER_TYPES:
            sql_type, family = _NUMBER_TYPES[kind]
            if not arrow_family[family](array.type):
                return None
            sizes.append((sql_type, 0, 0))
        elif kind in TEXT_TYPES:
            sizes.append((SQL_WVARCHAR, 64, 0))  # ISO text or plain digits, cast in the statement
        elif (length := _LENGTH.match(column.type.lower())) and pa.types.is_string(array.type):
            # UTF-8 bytes are never fewer than UTF-16 code units
            longest = pc.max(pc.binary_length(array)).as_py() or 0
            size = max(int(length.group(1)), longest, 1)
            if size > 4000:
                return None
            sizes.append((SQL_WVARCHAR, size, 0))
        elif (kind == "uniqueidentifier" or _MAX_TEXT.match(column.type.lower())) and pa.types.is_string(array.type):
            # Text the server converts (a UUID), or a (MAX) column: as long as the batch's longest
            # value. A longer one than a parameter array takes is left to the driver.
            longest = pc.max(pc.binary_length(array)).as_py() or 0
            if longest > 4000:
                return None
            sizes.append((SQL_WVARCHAR, max(longest, 1), 0))
        elif (length := _BINARY_LENGTH.match(column.type.lower())) and pa.types.is_binary(array.type):
            sizes.append((SQL_VARBINARY, int(length.group(1)), 0))  # the driver sizes it to the longest value
        else:
            return None
    return sizes


class ArraysLoad:
    """executemany: one prepared INSERT, whole batches bound as parameter arrays; the next batch is
    converted in a thread while this one is on the wire."""

    def __init__(self, driver: MssqlPythonDriver, cursor: Any, plan: ApplyPlan, stage: str) -> None:
        self.driver = driver
        self.cursor = cursor
        self.plan = plan
        self.text = driver.sql(tsql.insert_values_sql(plan.columns, 1, stage, TEXT_TYPES, numbered=False))

    def _prepared(self, batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[tuple[list[Any], Any]]:
        for batch in batches:
            sizes = input_sizes(self.plan.columns, batch)
            values = python_columns(batch, self.plan.columns, converter_for, as_text)
            yield list(zip(*values, strict=True)), sizes
            first_row += batch.num_rows

    def write(self, batches: Iterable[pa.RecordBatch], first_row: int) -> None:
        for rows, sizes in read_ahead(self._prepared(batches, first_row)):
            try:
                if sizes is not None:
                    self.cursor.setinputsizes(sizes)  # consumed by each execution
                self.cursor.executemany(self.text, rows)
            except self.driver.errors() as exc:
                raise self.driver.sort_error(exc, "staging source rows") from None


class ArrowBulkLoad:
    """bulkcopy_arrow: one bulk load of every batch, on the driver's own connection."""

    def __init__(self, driver: MssqlPythonDriver, connection: Any, plan: ApplyPlan, stage: str) -> None:
        self.driver = driver
        self.connection = connection
        self.plan = plan
        self.stage = stage

    def _numbered(self, batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        names = [tsql.ROW, *(c.name for c in self.plan.columns)]
        for batch in batches:
            order = pa.array(range(first_row, first_row + batch.num_rows), pa.int64())
            arrays = [prepare_array(a, c) for a, c in zip(batch.columns, self.plan.columns, strict=True)]
            first_row += batch.num_rows
            yield pa.RecordBatch.from_arrays([order, *arrays], names=names)

    def write(self, batches: Iterable[pa.RecordBatch], first_row: int) -> None:
        cursor = self.connection.cursor()
        what = "bulk copy (bulkcopy_arrow) into the staging table"
        try:
            cursor.bulkcopy_arrow(
                self.stage, self._numbered(batches, first_row), timeout=self.driver.bulk_timeout, keep_nulls=True,
            )
        except self.driver.errors() as exc:
            raise self.driver.sort_error(exc, what) from None
        except PASS_THROUGH:
            raise
        except BridgeError:
            raise  # from the source batches (read while loading)
        except BaseException as exc:  # the native core panics with a BaseException
            raise failure_of_path(exc, what) from None
        finally:
            cursor.close()


class MssqlPythonDriver:
    name = "mssql-python"
    capabilities = DriverCapabilities(
        methods=("bulk", "arrays"), fallback="arrays", bulk_on_own_connection=True, bulk_types=None,
        # executemany runs its parameter sets in order: the stage's IDENTITY numbers them, and the
        # driver has one parameter a row less to handle.
        server_numbered=frozenset({"arrays"}),
    )

    def __init__(self, spec: ConnectSpec, lock_timeout_ms: int, bulk_timeout: int = 0) -> None:
        self.spec = spec
        self.lock_timeout_ms = lock_timeout_ms
        self.bulk_timeout = bulk_timeout

    def connect(self) -> Any:
        try:
            import mssql_python
        except ImportError:
            raise PermanentError(
                "driver mssql-python is not installed: pip install 'bridge-cli[mssql-python]'"
            ) from None
        try:
            connection = mssql_python.connect(
                self.spec.connection_string or "", attrs_before=self.spec.attrs_before, **self.spec.kwargs
            )
            connection.timeout = self.spec.query_timeout  # its connect `timeout` is the login's
            cursor = connection.cursor()
            cursor.execute(f"SET LOCK_TIMEOUT {int(self.lock_timeout_ms)}")
            cursor.close()
            return connection
        except mssql_python.Error as exc:
            # Not reaching the server (or not being let in) is a connection failure: exit 5 for a
            # command, a retry for a worker; the event itself is not at fault.
            error = self.sort_error(exc, f"cannot connect to SQL Server at {self.spec.where}")
            raise ConnectionFailure(str(error)) from None

    def errors(self) -> tuple[type[BaseException], ...]:
        import mssql_python

        # Its native binding layer raises RuntimeError for values it refuses (e.g. out of range).
        return (mssql_python.Error, RuntimeError)

    def sort_error(self, exc: BaseException, what: str) -> BridgeError:
        sorted_error = sort_error(exc, what)
        return type(sorted_error)(self.spec.scrub(str(sorted_error)))

    def is_duplicate_key(self, exc: BaseException) -> bool:
        text = error_text(exc).lower()
        return "duplicate key" in text or "violation of primary key" in text or "unique constraint" in text

    def sql(self, text: str) -> str:
        # bridge's statements carry no literal '%' or '?' except placeholders (names holding '%'
        # are refused), so the translation is exact.
        return text.replace("%s", "?").replace("%%", "%")

    def needs_shared_stage(self, method: str, plan: ApplyPlan) -> bool:
        """A (MAX) column may hold a value too long for a parameter array; mssql-python then sends
        row by row and asks the server (sp_describe_undeclared_parameters) for a NULL's type. On
        Babelfish that lookup cannot see the session's temp table, fails, and ends the load's
        transaction: the rows sent before are lost and the COMMIT fails. A permanent stage is
        visible to it (seen on Babelfish 4.3 with mssql-python 1.16)."""
        return method == "arrays" and any("(max)" in c.type.lower() for c in plan.columns)

    def load(self, method: str, connection: Any, plan: ApplyPlan, stage: str) -> ArraysLoad | ArrowBulkLoad:
        if method == "bulk":
            return ArrowBulkLoad(self, connection, plan, stage)
        return ArraysLoad(self, connection.cursor(), plan, stage)
