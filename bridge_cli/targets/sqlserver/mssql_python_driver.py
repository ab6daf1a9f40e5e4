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
from typing import TYPE_CHECKING, Any

from bridge_cli.errors import BridgeError, PermanentError, TransientError
from bridge_cli.targets import ApplyPlan, TargetColumn
from bridge_cli.targets.sqlserver import tsql
from bridge_cli.targets.sqlserver.connect_options import ConnectSpec
from bridge_cli.targets.sqlserver.driver import PASS_THROUGH, DriverCapabilities, failure_of_path
from bridge_cli.targets.sqlserver.rows import Convert, RowLoad, fixed_offset, prepare_array
from bridge_cli.targets.sqlserver.verify import base_type

if TYPE_CHECKING:
    import pyarrow as pa

# What the driver calls the SQLSTATE class of an error (its `driver_error`), when a retry may help.
TRANSIENT_KINDS = ("serialization failure", "communication link failure", "timeout expired",
                   "client unable to establish connection", "connection not open", "disconnect error")
TRANSIENT_TEXT = ("lock timeout", "lock request time out", "deadlock", "could not serialize access",
                  "connection was forcibly closed", "tcp provider", "login timeout expired")
# Target types whose values travel as ISO text (see temporal_as_text), cast back in the statement.
TEXT_TEMPORAL_TYPES = frozenset({"date", "time", "datetime2", "datetime", "smalldatetime", "datetimeoffset"})
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


def temporal_as_text(array: pa.Array, column: TargetColumn) -> pa.Array:
    """Dates and times travel as ISO text, cast by Arrow: the driver binds a datetime as DATETIME and
    refuses years before 1753, which DATE and DATETIME2 hold; SQL Server reads the text exactly."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = prepare_array(array, column)
    kind = array.type
    if not (pa.types.is_timestamp(kind) and kind.tz is None or pa.types.is_date(kind) or pa.types.is_time(kind)):
        return array
    text = array.cast(pa.string())
    if getattr(kind, "unit", None) == "ns":  # nine fractional digits; SQL Server reads seven
        text = pc.utf8_slice_codeunits(text, 0, -2)
    return text


class ArraysLoad(RowLoad):
    """executemany: one prepared INSERT, whole batches bound as parameter arrays."""

    converter = staticmethod(converter_for)
    prepare = staticmethod(temporal_as_text)

    def __init__(self, driver: MssqlPythonDriver, cursor: Any, plan: ApplyPlan, stage: str) -> None:
        self.driver = driver
        self.cursor = cursor
        self.plan = plan
        self.text = driver.sql(tsql.insert_values_sql(plan.columns, 1, stage, TEXT_TEMPORAL_TYPES))

    def write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        try:
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
        methods=("bulk", "arrays"), fallback="arrays", bulk_on_own_connection=True, bulk_types=None
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
            raise self.sort_error(exc, f"cannot connect to SQL Server at {self.spec.where}") from None

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

    def load(self, method: str, connection: Any, plan: ApplyPlan, stage: str) -> ArraysLoad | ArrowBulkLoad:
        if method == "bulk":
            return ArrowBulkLoad(self, connection, plan, stage)
        return ArraysLoad(self, connection.cursor(), plan, stage)
