"""The driver seam without a server: driver and write-method choice, `auto`'s order of methods,
mssql-python's error sorting and placeholders, and a load path that crashes natively."""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa
import pytest

from bridge_cli.config import AdapterConfig, load_settings
from bridge_cli.errors import ConfigError, ConnectionFailure, PermanentError, TransientError
from bridge_cli.events import Operation
from bridge_cli.identifiers import TableName
from bridge_cli.targets import ApplyPlan, TargetColumn, TargetTable
from bridge_cli.targets.sqlserver import SQLServerTarget
from tests.backends import mssql_python_available

INT = TargetColumn("id", "int")
TEXT = TargetColumn("name", "nvarchar(20)")
WHEN = TargetColumn("seen", "datetime2(6)")


def target(**options: Any) -> SQLServerTarget:
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/x"})
    config = AdapterConfig("sqlserver", {"host": "h", "database": "d", "user": "u", "password": "pw-0123", **options},
                           source="bridge.yaml: profiles.prod.target")
    return SQLServerTarget(dataclasses.replace(settings, target=config))


def plan(*columns: TargetColumn) -> ApplyPlan:
    table = TargetTable(TableName(("dbo", "t")), columns)
    return ApplyPlan("e", Operation.INSERT, table, columns, (columns[0],))


def test_each_driver_has_its_own_write_methods() -> None:
    assert target(driver="pymssql").capabilities.write_methods == ("auto", "bulk", "values")
    assert target(driver="mssql-python").capabilities.write_methods == ("auto", "bulk", "arrays")


@pytest.mark.parametrize("options,message", [
    ({"driver": "odbc"}, "bridge.yaml: profiles.prod.target.driver: 'odbc'"),
    ({"driver": "pymssql", "write_method": "arrays"},
     "write_method: 'arrays' is not one of auto, bulk, values (driver pymssql)"),
    ({"driver": "mssql-python", "write_method": "values"},
     "write_method: 'values' is not one of auto, bulk, arrays (driver mssql-python)"),
    ({"rows_per_trip": "many"}, "rows_per_trip: expected an integer, got 'many'"),
    ({"rows_per_trip": 0}, "rows_per_trip: must be at least 1"),
])
def test_an_unknown_driver_or_method_is_a_one_line_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        target(**options)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_auto_tries_bulk_first_where_it_may_work_then_remembers_a_refusal() -> None:
    pymssql_target = target(driver="pymssql")
    assert pymssql_target.methods_for(plan(INT, TEXT)) == ["bulk", "values"]
    # FreeTDS bulk copy is only trusted with types it moves exactly
    assert pymssql_target.methods_for(plan(INT, WHEN)) == ["values"]
    mssql_python = target(driver="mssql-python")
    assert mssql_python.methods_for(plan(INT, WHEN)) == ["bulk", "arrays"]  # verified, whatever the types
    mssql_python.refuse("bulk", "3 rows staged, 4 sent")
    assert mssql_python.methods_for(plan(INT, WHEN)) == ["arrays"]
    assert target(driver="mssql-python", write_method="bulk").methods_for(plan(INT)) == ["bulk"]


def test_mssql_python_placeholders() -> None:
    from bridge_cli.targets.sqlserver import tsql

    driver = target(driver="mssql-python").driver
    assert driver.sql("SELECT 1 WHERE a = %s AND b LIKE N'x%%'") == "SELECT 1 WHERE a = ? AND b LIKE N'x%'"
    assert driver.sql(tsql.insert_values_sql((INT, TEXT), 1)) == (
        "INSERT INTO #bridge_stage ([__bridge_row], [id], [name]) VALUES (?, ?, ?)")


@pytest.mark.skipif(not mssql_python_available(), reason="mssql-python is not installed")
def test_mssql_python_errors_are_sorted_by_their_sqlstate_class_and_text() -> None:
    import mssql_python

    driver = target(driver="mssql-python", password="pw-secret").driver
    deadlock = mssql_python.OperationalError(
        "Serialization failure", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 52) was deadlocked")
    assert isinstance(driver.sort_error(deadlock, "INSERT"), TransientError)
    lost = mssql_python.OperationalError("Communication link failure", "[Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: reset")
    assert isinstance(driver.sort_error(lost, "INSERT"), TransientError)
    lock = mssql_python.DatabaseError("An error occurred", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Lock request time out period")
    assert isinstance(driver.sort_error(lock, "INSERT"), TransientError)
    duplicate = mssql_python.IntegrityError(
        "Integrity constraint violation",
        "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of PRIMARY KEY constraint 'PK_x'. Cannot insert duplicate key")
    error = driver.sort_error(duplicate, "INSERT into dbo.t")
    assert isinstance(error, PermanentError)
    assert str(error) == ("INSERT into dbo.t: Violation of PRIMARY KEY constraint 'PK_x'. "
                          "Cannot insert duplicate key")
    assert driver.is_duplicate_key(duplicate)
    login = mssql_python.InterfaceError("Login failed", "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'u' (pw-secret)")
    assert "pw-secret" not in str(driver.sort_error(login, "connect"))


class PanicException(BaseException):
    """Stands in for pyo3's PanicException, which the native bulk copy raises (a BaseException)."""


class PanickingCursor:
    """A fake cursor: the panic itself cannot be caused on purpose without a server."""

    def bulkcopy_arrow(self, *args: Any, **kwargs: Any) -> None:
        list(args[1])  # consumes the batches, as the real one does
        raise PanicException("dest is out of bounds")

    def close(self) -> None:
        pass


class FakeConnection:
    def cursor(self) -> PanickingCursor:
        return PanickingCursor()


@pytest.mark.skipif(not mssql_python_available(), reason="mssql-python is not installed")
def test_a_native_panic_in_bulk_copy_is_a_failure_of_that_path_not_a_dead_worker() -> None:
    driver = target(driver="mssql-python").driver
    load = driver.load("bulk", FakeConnection(), plan(INT, TEXT), "[bridge].[bridge_stage_0123456789abcdef]")
    with pytest.raises(PermanentError, match="PanicException: dest is out of bounds"):
        load.write([pa.record_batch({"id": [1], "name": ["a"]})], 1)


class _Logins:
    """A driver's connect that counts logins; its connections answer the ledger check (found, with
    the details column), or the first login fails."""

    def __init__(self, fail_first: bool = False) -> None:
        self.count = 0
        self.fail_first = fail_first
        self.statements: list[str] = []

    def __call__(self) -> Any:
        self.count += 1
        if self.fail_first and self.count == 1:
            raise ConnectionFailure("cannot connect to SQL Server at h:1433: refused")
        logins = self

        class Cursor:
            def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
                logins.statements.append(sql)

            def fetchone(self) -> tuple[Any, ...]:
                if "OBJECT_ID" in logins.statements[-1]:
                    return (1, 8)
                return ("e", "INSERT", 1, None, None)  # a ledger row

            def fetchall(self) -> list[tuple[Any, ...]]:
                return [(1,)]

        class Connection:
            def cursor(self) -> Cursor:
                return Cursor()

            def close(self) -> None:
                pass

        return Connection()


def test_connect_ahead_logs_in_once_and_check_ready_uses_that_connection() -> None:
    bridge = target(driver="pymssql")
    logins = _Logins()
    bridge.driver.connect = logins  # type: ignore[method-assign]
    bridge.connect_ahead()
    bridge.check_ready()
    assert logins.count == 1
    # One round trip found the ledger and its details column; the next use takes the same connection.
    assert [s for s in logins.statements if "OBJECT_ID" in s] == ["SELECT OBJECT_ID(%s, N'U'), COL_LENGTH(%s, %s)"]
    assert bridge.ledger_entry("e") is not None and logins.count == 1
    assert "COL_LENGTH" not in " ".join(logins.statements[1:])


def test_what_connect_ahead_met_is_raised_by_check_ready_once_then_it_tries_again() -> None:
    bridge = target(driver="pymssql")
    logins = _Logins(fail_first=True)
    bridge.driver.connect = logins  # type: ignore[method-assign]
    bridge.connect_ahead()
    with pytest.raises(ConnectionFailure, match="cannot connect to SQL Server at h:1433: refused"):
        bridge.check_ready()
    bridge.check_ready()  # a worker's next poll: a login of its own
    assert logins.count == 2


def test_mssql_python_declares_uuid_max_text_and_binary_parameters() -> None:
    from bridge_cli.targets.sqlserver.mssql_python_driver import SQL_VARBINARY, SQL_WVARCHAR, input_sizes

    columns = (TargetColumn("u", "uniqueidentifier"), TargetColumn("body", "nvarchar(max) COLLATE Latin1_General_CI_AS"),
               TargetColumn("blob", "varbinary(100)"))
    batch = pa.record_batch([pa.array(["12345678-1234-5678-1234-567812345678", None]), pa.array(["ñ東😀", None]),
                             pa.array([b"\x00\x01", None], pa.binary())], names=["u", "body", "blob"])
    assert input_sizes(columns, batch) == [(SQL_WVARCHAR, 36, 0), (SQL_WVARCHAR, 9, 0), (SQL_VARBINARY, 100, 0)]
    # A value longer than a parameter array takes: the driver decides, as before.
    long_batch = pa.record_batch([pa.array([None, None], pa.string()), pa.array(["x" * 4001, None]),
                                  pa.array([None, None], pa.binary())], names=["u", "body", "blob"])
    assert input_sizes(columns, long_batch) is None
