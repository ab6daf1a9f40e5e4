"""SQL Server adapter: generated T-SQL, value rendering and error sorting, without a server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal

import pyarrow as pa
import pymssql
import pytest
from pymssql import _mssql

from bridge_cli.config import AdapterConfig, load_settings
from bridge_cli.errors import ConfigError, ConnectionFailure, PermanentError, TransientError
from bridge_cli.events import Operation
from bridge_cli.identifiers import TableName
from bridge_cli.targets import ApplyPlan, TargetColumn, TargetTable
from bridge_cli.targets.sqlserver import SQLServerTarget, tsql
from bridge_cli.targets.sqlserver.pymssql_driver import converter_for, sort_error, to_param
from bridge_cli.targets.sqlserver.rows import numbered_rows

ID = TargetColumn("id", "int", is_identity=True)
NAME = TargetColumn("user name", "nvarchar(50)")
ADMIN = TargetColumn("is_admin", "bit")
TABLE = TargetTable(TableName(("mi-esquema", "Users]x")), (ID, NAME, ADMIN))


def plan(operation: Operation, **kwargs) -> ApplyPlan:
    base = dict(event_id="e1", operation=operation, table=TABLE, columns=(NAME, ADMIN), keys=(NAME,))
    return ApplyPlan(**{**base, **kwargs})


def test_identifiers_are_bracket_quoted_and_percent_is_refused() -> None:
    assert tsql.table_sql(TABLE.name) == "[mi-esquema].[Users]]x]"
    with pytest.raises(PermanentError, match="'%'"):
        tsql.q("growth%s")


def test_insert_adds_only_new_keys_one_row_per_key_in_source_order() -> None:
    sql, params = tsql.apply_sql(plan(Operation.INSERT))
    assert params == []
    assert sql.startswith("INSERT INTO [mi-esquema].[Users]]x] ([user name], [is_admin]) SELECT s.[user name], s.[is_admin]")
    assert "ROW_NUMBER() OVER (PARTITION BY [user name] ORDER BY [__bridge_row])" in sql
    assert "WHERE s.[__bridge_rank] = 1 AND NOT EXISTS" in sql
    assert "WITH (UPDLOCK, HOLDLOCK) WHERE d.[user name] = s.[user name]" in sql
    assert "MERGE" not in sql


def test_update_sets_only_non_key_columns_from_a_join() -> None:
    sql, _ = tsql.apply_sql(plan(Operation.UPDATE))
    assert sql.startswith("UPDATE d SET d.[is_admin] = s.[is_admin] FROM [mi-esquema].[Users]]x] AS d INNER JOIN")
    assert "d.[user name] = s.[user name]" in sql and "d.[user name] =  s" not in sql


def test_delete_values_are_parameters_and_the_cap_is_one_over() -> None:
    filters = ((NAME, ("a'b", None)), (ADMIN, 0))
    sql, params = tsql.apply_sql(plan(Operation.DELETE, columns=(), filters=filters, max_delete_rows=10))
    assert sql == ("DELETE TOP (%s) FROM [mi-esquema].[Users]]x] WHERE "
                   "([user name] IN (%s) OR [user name] IS NULL) AND [is_admin] = %s")
    assert params == [11, "a'b", 0]


def test_staging_table_has_target_types_and_an_order_column() -> None:
    sql = tsql.create_stage_sql(plan(Operation.INSERT))
    assert sql == ("CREATE TABLE #bridge_stage ([__bridge_row] BIGINT NOT NULL, "
                   "[user name] nvarchar(50) NULL, [is_admin] bit NULL)")
    shared = tsql.shared_stage_name("bridge", "0123456789abcdef")
    assert shared == "[bridge].[bridge_stage_0123456789abcdef]"
    assert tsql.create_stage_sql(plan(Operation.INSERT), shared).startswith(f"CREATE TABLE {shared} (")
    with pytest.raises(ValueError):
        tsql.shared_stage_name("bridge", "x]; DROP TABLE t --")
    # parameter arrays run in order: the server numbers their rows
    assert tsql.create_stage_sql(plan(Operation.INSERT), server_numbers=True).startswith(
        "CREATE TABLE #bridge_stage ([__bridge_row] BIGINT IDENTITY(1,1) NOT NULL, ")


@pytest.mark.parametrize("args,expected", [
    (("nvarchar", -1, 0, 0, None), "nvarchar(max)"),
    (("nvarchar", 100, 0, 0, "Latin1_General_CI_AS"), "nvarchar(50) COLLATE Latin1_General_CI_AS"),
    (("varchar", 8000, 0, 0, None), "varchar(8000)"),
    (("varbinary", -1, 0, 0, None), "varbinary(max)"),
    (("decimal", 17, 38, 10, None), "decimal(38,10)"),
    (("datetime2", 8, 27, 7, None), "datetime2(7)"),
    (("datetimeoffset", 10, 34, 7, None), "datetimeoffset(7)"),
    (("uniqueidentifier", 16, 0, 0, None), "uniqueidentifier"),
    (("nvarchar", 10, 0, 0, "x'; DROP"), "nvarchar(5)"),
])
def test_column_types_from_the_catalog(args: tuple, expected: str) -> None:
    assert tsql.column_type_sql(*args) == expected


def test_values_statements_carry_the_staging_order_first() -> None:
    when = TargetColumn("seen", "datetime2(6)")
    assert tsql.insert_values_sql((NAME, when), 1, cast_types=frozenset({"datetime2"}), numbered=False) == (
        "INSERT INTO #bridge_stage ([user name], [seen]) VALUES (%s, CAST(%s AS datetime2(6)))")
    assert tsql.insert_values_sql((NAME, ADMIN), 2) == (
        "INSERT INTO #bridge_stage ([__bridge_row], [user name], [is_admin]) VALUES (%s, %s, %s), (%s, %s, %s)")


def test_ledger_ddl_creates_schema_and_table_when_missing() -> None:
    schema, table = tsql.ledger_ddl(TableName(("bridge", "applied_events")))
    assert schema == "IF SCHEMA_ID(N'bridge') IS NULL EXEC(N'CREATE SCHEMA [bridge]')"
    assert table.startswith("IF OBJECT_ID(N'[bridge].[applied_events]', N'U') IS NULL CREATE TABLE")
    assert "event_id NVARCHAR(200) NOT NULL PRIMARY KEY" in table


# -- rendering values through pymssql's own quoting ------------------------------------------
def render(value, column: TargetColumn, arrow_type=None) -> str:
    """One value as the staging path sends it: through an Arrow batch, the column-wise conversion
    and pymssql's own quoting."""
    batch = pa.record_batch({"c": pa.array([value], arrow_type)})
    [row] = numbered_rows(batch, (column,), 7, converter_for)
    assert row[0] == 7
    return _mssql.quote_simple_value(row[1], use_datetime2=True).decode()


def test_datetime_keeps_microseconds_and_instants_become_utc() -> None:
    col = TargetColumn("t", "datetime2(7)")
    assert render(dt.datetime(2026, 1, 2, 3, 4, 5, 123456), col) == "'2026-01-02 03:04:05.123456'"
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert render(aware, col, pa.timestamp("us", tz="America/Sao_Paulo")) == "'2026-01-02 06:04:05.000007'"
    assert to_param(aware, col) == dt.datetime(2026, 1, 2, 6, 4, 5, 7)


def test_datetimeoffset_keeps_its_offset() -> None:
    col = TargetColumn("t", "datetimeoffset(7)")
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    assert render(aware, col, pa.timestamp("us", tz="Asia/Kolkata")) == "'2026-01-02 03:04:05.120000+05:30'"
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert render(naive, col) == "'2026-01-02 03:04:05.000000'"  # SQL Server reads no offset as +00:00


def test_binary_text_uuid_and_decimal_render_exactly() -> None:
    assert render(b"abc", TargetColumn("b", "varbinary(10)")) == "0x616263"
    assert render("ñandú 'x'\n東京", TargetColumn("s", "nvarchar(50)")) == "N'ñandú ''x''\n東京'"
    u = "12345678-1234-5678-1234-567812345678"  # DuckDB and Spark hand UUIDs over as text
    assert render(u, TargetColumn("u", "uniqueidentifier")) == f"N'{u}'"
    assert render(Decimal("-0.0000000001"), TargetColumn("d", "decimal(38,10)")) == "-0.0000000001"
    assert to_param(uuid.UUID(u), TargetColumn("u", "uniqueidentifier")) == u


# -- error sorting ---------------------------------------------------------------------------
def db_error(cls: type[Exception], number: int, text: str) -> Exception:
    return cls((number, text.encode()))


@pytest.mark.parametrize("number", [1205, 1222, 20009, 20047, 20003])
def test_deadlocks_timeouts_and_lost_connections_are_transient(number: int) -> None:
    assert isinstance(sort_error(db_error(pymssql.OperationalError, number, "x"), "w"), TransientError)


def test_a_refused_connection_is_transient_even_under_a_stale_number() -> None:
    # pymssql can keep an informational number (5703) from an earlier connection.
    stale = db_error(pymssql.OperationalError, 5703, "Changed language setting to 'us_english'.DB-Lib error "
                     "message 20009, severity 9:\nUnable to connect: TDS server is unavailable (127.0.0.1)\n")
    error = sort_error(stale, "cannot connect")
    assert isinstance(error, TransientError)
    assert "Changed language" not in str(error) and "Unable to connect" in str(error)
    assert str(error).endswith("(SQL Server error 20009)")


def test_lock_timeouts_reported_under_another_number_are_transient() -> None:
    babelfish = db_error(pymssql.OperationalError, 33557097, "canceling statement due to lock timeout"
                         "DB-Lib error message 20018, severity 16:\nGeneral SQL Server error: "
                         "Check messages from the SQL Server\n")
    error = sort_error(babelfish, "INSERT")
    assert isinstance(error, TransientError)
    assert str(error) == "INSERT: canceling statement due to lock timeout (SQL Server error 33557097)"


@pytest.mark.parametrize("number", [2627, 2601, 544, 8152, 2628, 245, 8114, 208, 207, 547])
def test_data_and_schema_errors_are_permanent_and_keep_the_server_message(number: int) -> None:
    error = sort_error(db_error(pymssql.IntegrityError, number, "Violation of PRIMARY KEY 'PK_x'"), "INSERT")
    assert isinstance(error, PermanentError)
    assert "Violation of PRIMARY KEY 'PK_x'" in str(error) and f"error {number}" in str(error)


def test_a_password_never_appears_in_a_message_or_repr() -> None:
    secret = "S3cret-pass"
    error = sort_error(db_error(pymssql.OperationalError, 18456, f"Login failed ({secret})"), "connect", secret)
    assert secret not in str(error)
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/x"})
    target_config = AdapterConfig("sqlserver", {"host": "h", "database": "d", "user": "u", "password": secret})
    settings = dataclasses.replace(settings, target=target_config)
    assert secret not in repr(settings)
    assert secret not in repr(SQLServerTarget(settings))


def test_unreachable_server_is_a_connection_failure_without_the_password() -> None:
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/x"})
    config = AdapterConfig("sqlserver", {"driver": "pymssql", "host": "127.0.0.1", "port": 1, "database": "d",
                                         "user": "u", "password": "pw-123", "login_timeout": 2})
    target = SQLServerTarget(dataclasses.replace(settings, target=config))
    with pytest.raises(ConnectionFailure) as info:  # exit 5 for a command; a worker retries
        target.ledger_entry("e1")
    assert "cannot connect to SQL Server at 127.0.0.1:1" in str(info.value)
    assert str(info.value).count("Unable to connect") == 1  # FreeTDS's repeats dropped
    assert "pw-123" not in str(info.value)


def test_profile_errors_name_the_key() -> None:
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/x"})
    with pytest.raises(ConfigError, match="missing host"):
        SQLServerTarget(dataclasses.replace(settings, target=AdapterConfig("sqlserver", {"database": "d"})))
    bad = AdapterConfig("sqlserver", {"host": "h", "database": "d", "user": "u", "password": "p",
                                      "write_method": "fast"})
    with pytest.raises(ConfigError, match="write_method: 'fast'"):
        SQLServerTarget(dataclasses.replace(settings, target=bad))


def test_upsert_is_update_then_insert_under_key_range_locks_never_merge() -> None:
    sync = tsql.sync_sql(plan(Operation.UPSERT, changed_only=True))
    assert sync.update is not None
    statements = [sync.update, sync.insert_missing, sync.matched, sync.duplicates, sync.duplicate_examples]
    assert not any("MERGE" in s for s in statements)
    # Both statements that read the target hold what they read to the commit.
    assert "FROM [mi-esquema].[Users]]x] AS d WITH (UPDLOCK, HOLDLOCK) INNER JOIN" in sync.update
    assert "NOT EXISTS (SELECT 1 FROM [mi-esquema].[Users]]x] AS d WITH (UPDLOCK, HOLDLOCK)" in sync.insert_missing
    # changed_only: NULL against NULL is the same, NULL against a value differs, for each set column.
    assert "WHEN d.[is_admin] IS NULL AND s.[is_admin] IS NULL THEN 0" in sync.update
    assert "WHEN d.[is_admin] IS NULL OR s.[is_admin] IS NULL THEN 1" in sync.update
    assert "[user name] = s.[user name]" not in sync.update.split(" WHERE ")[-1]  # keys are not compared
    without = tsql.sync_sql(plan(Operation.UPSERT))
    assert without.update is not None and " WHERE " not in without.update


def test_replace_binds_the_slice_values_as_parameters() -> None:
    hostile = "x'; DROP TABLE dbo.t; --"
    replace = plan(Operation.REPLACE, filters=((ADMIN, (True, None)), (NAME, hostile)))
    sync = tsql.sync_sql(replace)
    for sql, params in (sync.delete_slice, sync.outside, sync.outside_example):
        assert hostile not in sql and "DROP" not in sql
        assert params == [True, hostile]
    delete_sql, _ = sync.delete_slice
    assert delete_sql == (
        "DELETE FROM [mi-esquema].[Users]]x] WHERE ([is_admin] IN (%s) OR [is_admin] IS NULL) AND [user name] = %s"
    )
    assert sync.outside is not None
    assert "CASE WHEN (s.[is_admin] IN (%s) OR s.[is_admin] IS NULL) AND s.[user name] = %s THEN 0 ELSE 1 END = 1" in sync.outside[0]
    whole = tsql.sync_sql(plan(Operation.REPLACE))
    assert whole.delete_slice == ("DELETE FROM [mi-esquema].[Users]]x]", [])
    assert whole.outside is None
