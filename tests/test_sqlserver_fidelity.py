"""Exact data on SQL Server: every value written through the engine reads back equal.

Runs against a real server when BRIDGE_TEST_MSSQL_URL is set; skipped (saying so) otherwise.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.targets.sqlserver.pymssql_driver import BULK_SAFE_TYPES
from tests.backends import (
    MssqlAutoPair,
    MssqlPair,
    MssqlPythonPair,
    auto_pair_unavailable,
    mssql_python_available,
    mssql_url,
)
from tests.helpers import submit

pytestmark = pytest.mark.skipif(
    mssql_url() is None, reason="BRIDGE_TEST_MSSQL_URL is not set: SQL Server fidelity matrix skipped"
)

UTC = dt.timezone.utc
LONG = "ñ" + "x" * 9000 + "東"
# column: (SQL Server type, DuckDB type, values for rows 1..4; row 5 is all NULL)
MATRIX: dict[str, tuple[str, str, list[Any]]] = {
    "nv": ("NVARCHAR(100)", "VARCHAR", ["ñandú", "東京", "emoji 😀", "it's \"quoted\"\nand\r\nnew lines"]),
    "v": ("VARCHAR(100)", "VARCHAR", ["plain", "with 'quote'", "tab\there", "%s %d %(x)s"]),
    "nvmax": ("NVARCHAR(MAX)", "VARCHAR", [LONG, "", "a", "b"]),
    "dt7": ("DATETIME2(7)", "TIMESTAMP", [dt.datetime(2026, 1, 2, 3, 4, 5, 123456),
                                          dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
                                          dt.datetime(2000, 2, 29, 0, 0, 0, 1)]),
    "dt3": ("DATETIME2(3)", "TIMESTAMP", [dt.datetime(2026, 1, 2, 3, 4, 5, 123000),
                                          dt.datetime(1999, 12, 31, 23, 59, 59, 999000),
                                          dt.datetime(2026, 6, 1), dt.datetime(2026, 6, 1, 0, 0, 0, 1000)]),
    "dto": ("DATETIMEOFFSET(7)", "TIMESTAMPTZ", [dt.datetime(2026, 1, 2, 3, 4, 5, 654321, tzinfo=UTC),
                                                 dt.datetime(2026, 7, 1, 12, tzinfo=UTC),
                                                 dt.datetime(1970, 1, 1, tzinfo=UTC),
                                                 dt.datetime(2026, 12, 31, 23, 59, 59, 1, tzinfo=UTC)]),
    "d": ("DATE", "DATE", [dt.date(2026, 1, 2), dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29)]),
    "t": ("TIME(7)", "TIME", [dt.time(13, 14, 15, 123456), dt.time(0, 0), dt.time(23, 59, 59, 999999),
                              dt.time(12, 0, 0, 1)]),
    "dec": ("DECIMAL(38,10)", "DECIMAL(38,10)", [Decimal("9999999999999999999999999999.9999999999"),
                                                  Decimal("-9999999999999999999999999999.9999999999"),
                                                  Decimal("-0.0000000001"), Decimal("0E-10")]),
    "f": ("FLOAT", "DOUBLE", [0.1, -2.5e-300, 1.7976931348623157e308, 123456789.125]),
    "b": ("BIT", "BOOLEAN", [True, False, True, False]),
    "bi": ("BIGINT", "BIGINT", [9223372036854775807, -9223372036854775808, 0, 42]),
    "u": ("UNIQUEIDENTIFIER", "UUID", [uuid.UUID("12345678-1234-5678-1234-567812345678"),
                                       uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()]),
    "vb": ("VARBINARY(100)", "BLOB", [b"\x00\x01\xff", b"abc", b"", b"'; DROP TABLE x --"]),
}


def normalise(column: str, value: Any) -> Any:
    """SQL Server returns some types in another Python shape; compare meaning, not shape."""
    if value is None:
        return None
    if column == "u":
        return uuid.UUID(str(value))
    if column == "dto" and isinstance(value, dt.datetime):
        return value.astimezone(UTC)
    if column == "vb":
        return bytes(value)
    if column == "b":
        return bool(value)
    if column == "dec":
        return Decimal(value)
    return value


BULK_SAFE = {name for name, (sql_type, _, _) in MATRIX.items() if sql_type.split("(")[0].lower() in BULK_SAFE_TYPES}


def columns_for(driver: str, method: str) -> dict[str, tuple[str, str, list[Any]]]:
    """pymssql's forced `bulk` is tested on the types its `auto` gives it; the rest on every type."""
    return {k: v for k, v in MATRIX.items() if (driver, method) != ("pymssql", "bulk") or k in BULK_SAFE}


def pair_for(bridge_home: Path, driver: str, options: dict[str, Any]) -> MssqlPair:
    """driver: pymssql or mssql-python, named in the profile; auto: a profile that names none (the
    pair checks that auto picked the driver this run expects, and its `driver` is the one picked)."""
    if driver == "mssql-python" and not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    if driver == "auto" and auto_pair_unavailable():
        pytest.skip(str(auto_pair_unavailable()))
    pair_class = {"mssql-python": MssqlPythonPair, "auto": MssqlAutoPair}.get(driver, MssqlPair)
    return pair_class(bridge_home, target_options=options)


@pytest.fixture
def matrix_pair(bridge_home: Path, request: pytest.FixtureRequest) -> MssqlPair:
    driver, _, how = request.param.partition(":")
    method, _, per_trip = how.partition("/")  # "values/1000": 1000 rows a round trip
    options: dict[str, Any] = {"write_method": method}
    if per_trip:
        options["rows_per_trip"] = int(per_trip)
    pair = pair_for(bridge_home, driver, options)
    matrix = columns_for(pair.driver, method)
    pair.matrix = matrix  # type: ignore[attr-defined]
    columns = ", ".join(f"[{name}] {sql_type} NULL" for name, (sql_type, _, _) in matrix.items())
    pair._run("IF OBJECT_ID(N'[dbo].[fidelity]', N'U') IS NOT NULL DROP TABLE [dbo].[fidelity]")
    pair._run(f"CREATE TABLE [dbo].[fidelity] ([id] INT NOT NULL PRIMARY KEY, {columns})")
    seed_fidelity_source(pair, matrix)
    return pair


def seed_fidelity_source(pair: MssqlPair, matrix: dict[str, tuple[str, str, list[Any]]]) -> None:
    """lake.s.fidelity: ids 1..4 with the matrix's values, and id 5 all NULL."""
    lake_columns = ", ".join(f'"{name}" {duck}' for name, (_, duck, _) in matrix.items())
    rows = [[i + 1, *(values[i] for _, _, values in matrix.values())] for i in range(4)]
    rows.append([5, *(None for _ in matrix)])
    with pair.lake.connect("lake", create=True) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS s")
        con.execute(f"CREATE OR REPLACE TABLE s.fidelity (id INTEGER, {lake_columns})")
        con.executemany(f"INSERT INTO s.fidelity VALUES ({', '.join('?' for _ in range(len(matrix) + 1))})", rows)


def written(pair: MssqlPair) -> tuple[str, list[tuple[Any, ...]]]:
    event = submit(pair.lake, "insert", "dbo.fidelity", source_table="lake.s.fidelity", primary_keys=["id"])
    [result] = pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    names = ", ".join(f"[{n}]" for n in pair.matrix)  # type: ignore[attr-defined]
    rows = pair._run(f"SELECT [id], {names} FROM [dbo].[fidelity] ORDER BY [id]", fetch=True)
    return (stored.status if result else "none") + "|" + (stored.error_message or ""), rows


def mismatches(rows: list[tuple[Any, ...]], matrix: dict[str, tuple[str, str, list[Any]]]) -> list[str]:
    found = []
    for i, row in enumerate(rows):
        for (name, (_, _, values)), got in zip(matrix.items(), row[1:], strict=True):
            expected = values[i] if i < 4 else None
            if normalise(name, got) != normalise(name, expected):
                found.append(f"row {i + 1} {name}: wrote {expected!r}, read {got!r}")
    return found


@pytest.mark.parametrize("matrix_pair", [
    "pymssql:values", "pymssql:values/1000", "pymssql:auto", "mssql-python:arrays", "mssql-python:auto",
    "auto:auto",
], indirect=True)
def test_every_type_round_trips_exactly(matrix_pair: MssqlPair) -> None:
    outcome, rows = written(matrix_pair)
    assert outcome.startswith("completed"), outcome
    assert len(rows) == 5
    assert mismatches(rows, MATRIX) == []


@pytest.mark.parametrize("matrix_pair", ["pymssql:bulk", "mssql-python:bulk", "auto:bulk"], indirect=True)
def test_forced_bulk_is_exact_or_fails_having_applied_nothing(matrix_pair: MssqlPair) -> None:
    outcome, rows = written(matrix_pair)
    if not outcome.startswith("completed"):
        # Refused by the server, or loaded wrong and caught by the stage check: nothing applied.
        assert "bulk" in outcome, outcome
        assert rows == []
        pytest.skip(f"this server's bulk load does not work with {matrix_pair.driver}: {outcome[:300]}")
    assert mismatches(rows, matrix_pair.matrix) == []  # type: ignore[attr-defined]


# No value too long for a parameter array: mssql-python's `arrays` then declares every parameter's
# type (uniqueidentifier and (MAX) text as text, varbinary as binary) instead of the driver
# inferring them from the values.
SHORT_MAX = {**MATRIX, "nvmax": ("NVARCHAR(MAX)", "VARCHAR", ["ñ東😀" * 300, "", "a", "b"])}


@pytest.mark.parametrize("method", ["arrays", "auto"])
def test_every_type_round_trips_exactly_with_declared_parameter_types(bridge_home: Path, method: str) -> None:
    if not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    pair = MssqlPythonPair(bridge_home, target_options={"write_method": method})
    pair.matrix = SHORT_MAX  # type: ignore[attr-defined]
    columns = ", ".join(f"[{name}] {sql_type} NULL" for name, (sql_type, _, _) in SHORT_MAX.items())
    pair._run("IF OBJECT_ID(N'[dbo].[fidelity]', N'U') IS NOT NULL DROP TABLE [dbo].[fidelity]")
    pair._run(f"CREATE TABLE [dbo].[fidelity] ([id] INT NOT NULL PRIMARY KEY, {columns})")
    seed_fidelity_source(pair, SHORT_MAX)
    outcome, rows = written(pair)
    assert outcome.startswith("completed"), outcome
    assert len(rows) == 5
    assert mismatches(rows, SHORT_MAX) == []


def driver_pair(bridge_home: Path, driver: str, method: str, table: str, columns: str) -> MssqlPair:
    """The server through one driver (or auto) and write method, with a fresh dbo table keyed by [id]."""
    pair = pair_for(bridge_home, driver, {"write_method": method})
    pair._run(f"IF OBJECT_ID(N'[dbo].[{table}]', N'U') IS NOT NULL DROP TABLE [dbo].[{table}]")
    pair._run(f"CREATE TABLE [dbo].[{table}] ([id] INT NOT NULL PRIMARY KEY, {columns})")
    return pair


@pytest.mark.parametrize("driver,method", [("pymssql", "values"), ("mssql-python", "arrays"),
                                           ("mssql-python", "auto"), ("auto", "auto")])
def test_a_value_too_long_for_its_column_fails_the_event_and_is_never_cut(
    bridge_home: Path, driver: str, method: str
) -> None:
    pair = driver_pair(bridge_home, driver, method, "narrow", "[name] NVARCHAR(10) NULL")
    pair.create_source("lake.s.narrow", {"id": "int", "name": "text"}, [(1, "short"), (2, "ñ" * 11)])
    event = submit(pair.lake, "insert", "dbo.narrow", source_table="lake.s.narrow", primary_keys=["id"])
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    message = (stored.error_message or "").lower()
    assert "truncat" in message or "too long" in message, message  # SQL Server's words, or Babelfish's
    assert pair._run("SELECT [id], [name] FROM [dbo].[narrow]", fetch=True) == []


@pytest.mark.parametrize("method", ["bulk", "auto"])
def test_a_bulk_load_that_lands_in_the_wrong_columns_is_never_applied(bridge_home: Path, method: str) -> None:
    """mssql-python's bulkcopy_arrow with a 32 KiB packet maps columns in the wrong order on
    Babelfish and reports success; with integer columns only, nothing stops the load itself."""
    if not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    pair = MssqlPythonPair(bridge_home, target_options={"write_method": method, "packet_size": 32767})
    pair._run("IF OBJECT_ID(N'[dbo].[wide_ints]', N'U') IS NOT NULL DROP TABLE [dbo].[wide_ints]")
    pair._run("CREATE TABLE [dbo].[wide_ints] ([k] BIGINT NOT NULL PRIMARY KEY, [a] BIGINT NULL, [b] BIGINT NULL)")
    rows = [(i, 1000 + i, 5000 + i) for i in range(1, 301)]
    pair.create_source("lake.s.wide_ints", {"k": "int", "a": "int", "b": "int"}, rows)
    event = submit(pair.lake, "insert", "dbo.wide_ints", source_table="lake.s.wide_ints", primary_keys=["k"])
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    landed = pair._run("SELECT [k], [a], [b] FROM [dbo].[wide_ints] ORDER BY [k]", fetch=True)
    if method == "auto":
        assert stored.status == "completed", stored.error_message
        assert landed == rows
        return
    if stored.status == "completed":
        assert landed == rows  # this server's bulk load was right after all
        pytest.skip("this server's bulk load landed exactly: the wrong-columns case did not occur")
    assert landed == []
    assert "differ from the source" in (stored.error_message or "") or "bulk" in (stored.error_message or "")
    print(stored.error_message)


def test_init_drops_staging_tables_that_stopped_workers_left_behind(bridge_home: Path) -> None:
    pair = MssqlPair(bridge_home)
    schema = pair.target.ledger.schema
    leftover = f"[{schema}].[bridge_stage_00000000deadbeef]"
    pair._run(f"IF OBJECT_ID(N'{leftover}', N'U') IS NULL CREATE TABLE {leftover} ([__bridge_row] BIGINT NOT NULL)")
    assert pair.target.drop_stale_stages(hours=24) == []  # a fresh one may belong to a running worker
    assert pair.target.drop_stale_stages(hours=0) == [f"{schema}.bridge_stage_00000000deadbeef"]
    assert pair._run(f"SELECT OBJECT_ID(N'{leftover}', N'U')", fetch=True) == [(None,)]


@pytest.mark.parametrize("driver,method", [("pymssql", "values"), ("pymssql", "auto"), ("mssql-python", "arrays"),
                                           ("mssql-python", "auto"), ("auto", "auto")])
def test_a_long_max_value_beside_a_null_is_staged_exactly(bridge_home: Path, driver: str, method: str) -> None:
    """mssql-python sends such rows one by one and asks the server the type of a NULL; on Babelfish
    that question cannot see a temp table and ended the load's transaction ("COMMIT can only be
    used in transaction blocks"), so these loads use a permanent stage."""
    pair = driver_pair(bridge_home, driver, method, "long_max", "[body] NVARCHAR(MAX) NULL")
    rows = [(1, LONG), (2, None), (3, "a"), (4, "")]
    pair.create_source("lake.s.long_max", {"id": "int", "body": "text"}, rows)
    event = submit(pair.lake, "insert", "dbo.long_max", source_table="lake.s.long_max", primary_keys=["id"])
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed", stored.error_message
    assert pair._run("SELECT [id], [body] FROM [dbo].[long_max] ORDER BY [id]", fetch=True) == rows
    schema = pair.target.ledger.schema  # type: ignore[attr-defined]
    assert pair._run("SELECT COUNT(*) FROM sys.tables WHERE schema_id = SCHEMA_ID(%s) AND name LIKE N'bridge[_]stage[_]%%'",
                     [schema], fetch=True) == [(0,)]


# -- UPSERT: the same matrix, and changed_only's "really differs" for every type -------------------
LONG_CHANGED = "ñ" + "x" * 8999 + "X" + "東"  # one letter's case, deep inside a long value
SOURCE = "source"  # a step that changes the lake's row
TARGET = "target"  # a step that changes the target's row behind bridge's back (SQL, {table} and id)
# (column, id, how, new value or target-side SQL, whether it is a change); ids 1..4 start from the
# matrix, 5 all NULL; each step starts from what the steps before it left.
STEPS: list[tuple[str, int, str, Any, bool]] = [
    ("nv", 1, SOURCE, "ÑANDÚ", True),  # case only: equal under the column's _CI_ collation
    ("nv", 1, SOURCE, "ÑANDÚ ", True),  # a trailing space: `=` pads it away
    ("nv", 1, SOURCE, "ÑANDU ", True),  # an accent only
    ("nv", 2, SOURCE, "東亰", True),  # outside the code page: both were '??' as VARBINARY on Babelfish
    ("nv", 3, SOURCE, "emoji 😁", True),  # another character outside the BMP
    ("nv", 1, SOURCE, None, True),  # value -> NULL
    ("nv", 1, SOURCE, "", True),  # NULL -> '' (not NULL)
    ("nv", 1, SOURCE, " ", True),  # '' -> ' ', equal under `=`
    ("v", 1, SOURCE, "Plain", True),
    ("v", 1, SOURCE, "Plain ", True),
    ("v", 5, SOURCE, "", True),
    ("nvmax", 1, SOURCE, LONG_CHANGED, True),
    ("nvmax", 1, SOURCE, LONG_CHANGED + " ", True),
    ("nvmax", 2, SOURCE, " ", True),
    ("dt7", 1, SOURCE, dt.datetime(2026, 1, 2, 3, 4, 5, 123457), True),  # 1 µs
    ("dt7", 5, SOURCE, dt.datetime(2026, 1, 1), True),
    ("dt7", 2, SOURCE, None, True),
    ("dt3", 1, SOURCE, dt.datetime(2026, 1, 2, 3, 4, 5, 124000), True),  # 1 ms
    # The same instant at another offset: SQL Server's `=` compares instants only.
    ("dto", 1, TARGET, "UPDATE {table} SET [dto] = SWITCHOFFSET([dto], '+05:30') WHERE [id] = 1", True),
    ("dto", 2, SOURCE, dt.datetime(2026, 7, 1, 12, 0, 0, 1, tzinfo=UTC), True),
    ("dto", 3, SOURCE, None, True),
    ("d", 1, SOURCE, dt.date(2026, 1, 3), True),
    ("d", 5, SOURCE, dt.date(2026, 1, 3), True),
    ("t", 1, SOURCE, dt.time(13, 14, 15, 123457), True),
    ("t", 2, SOURCE, None, True),
    ("dec", 1, SOURCE, Decimal("9999999999999999999999999999.9999999998"), True),  # the last digit
    ("dec", 4, SOURCE, Decimal("0.0000000001"), True),
    ("dec", 5, SOURCE, Decimal("0E-10"), True),  # NULL -> 0
    ("f", 1, SOURCE, 0.10000000000000002, True),  # one unit in the last place
    ("f", 4, SOURCE, 0.0, True),
    # Decided: -0.0 is the same value as 0.0 (they compare equal everywhere, SQL included), so
    # changed_only does not rewrite the row and the target keeps 0.0.
    ("f", 4, SOURCE, -0.0, False),
    ("f", 5, SOURCE, 0.0, True),  # NULL -> 0
    ("b", 1, SOURCE, False, True),
    ("b", 5, SOURCE, False, True),  # NULL -> 0
    ("bi", 1, SOURCE, 9223372036854775806, True),
    ("bi", 3, SOURCE, None, True),  # 0 -> NULL
    ("u", 2, SOURCE, uuid.UUID(int=1), True),
    ("vb", 1, SOURCE, b"\x00\x01\xff\x00", True),  # a trailing zero byte: `=` pads binaries with zeros
    ("vb", 3, SOURCE, b"\x00", True),  # empty -> one zero byte
    ("vb", 2, SOURCE, b"ABC", True),
    ("vb", 5, SOURCE, b"", True),  # NULL -> empty
    ("vb", 3, SOURCE, None, True),
]


def upsert(pair: MssqlPair, engine: Any, changed_only: bool) -> tuple[str, dict[str, Any] | None, int | None]:
    """One UPSERT of lake.s.fidelity: its status (and error), its details, its rows_affected."""
    import json

    event = submit(pair.lake, "upsert", "dbo.fidelity", source_table="lake.s.fidelity", primary_keys=["id"],
                   metadata={"changed_only": True} if changed_only else None)
    [result] = engine.process_once()
    stored = pair.lake.get_event(event.event_id)
    details = json.loads(stored.details) if stored.details else None
    return (stored.status if result else "none") + "|" + (stored.error_message or ""), details, stored.rows_affected


def stored_rows(pair: MssqlPair) -> list[tuple[Any, ...]]:
    names = ", ".join(f"[{n}]" for n in pair.matrix)  # type: ignore[attr-defined]
    return pair._run(f"SELECT [id], {names} FROM [dbo].[fidelity] ORDER BY [id]", fetch=True)


def offsets(pair: MssqlPair) -> dict[int, int | None]:
    """Each row's DATETIMEOFFSET offset in minutes, which the matrix's comparison (in UTC) leaves out."""
    if "dto" not in pair.matrix:  # type: ignore[attr-defined]
        return {}
    return dict(pair._run("SELECT [id], DATEPART(TZOFFSET, [dto]) FROM [dbo].[fidelity]", fetch=True))


def state_mismatches(rows: list[tuple[Any, ...]], expected: dict[int, dict[str, Any]]) -> list[str]:
    found = [] if [row[0] for row in rows] == sorted(expected) else [f"ids {[row[0] for row in rows]}"]
    for row in rows:
        for name, got in zip(expected.get(row[0], {}), row[1:], strict=False):
            want = expected[row[0]][name]
            if normalise(name, got) != normalise(name, want):
                found.append(f"id {row[0]} {name}: expected {shorter(want)}, read {shorter(got)}")
    return found


def shorter(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else f"{text[:40]}...{text[-30:]} ({len(value)} long)"


@pytest.mark.parametrize("matrix_pair", [
    "pymssql:values", "pymssql:values/1000", "pymssql:auto", "mssql-python:arrays", "mssql-python:auto",
    "pymssql:bulk", "mssql-python:bulk", "auto:auto", "auto:bulk",
], indirect=True)
def test_upsert_writes_every_type_exactly_and_changed_only_counts_only_real_changes(
    matrix_pair: MssqlPair,
) -> None:
    pair = matrix_pair
    matrix: dict[str, tuple[str, str, list[Any]]] = pair.matrix  # type: ignore[attr-defined]
    engine = pair.engine()
    outcome, details, affected = upsert(pair, engine, changed_only=False)
    if not outcome.startswith("completed") and pair.target.write_method == "bulk":  # type: ignore[attr-defined]
        assert "bulk" in outcome, outcome  # as the INSERT: refused or caught, and nothing applied
        assert stored_rows(pair) == []
        pytest.skip(f"this server's bulk load does not work with {pair.driver}: {outcome[:300]}")
    assert outcome.startswith("completed"), outcome
    assert (details, affected) == ({"inserted": 5, "updated": 0, "unchanged": 0}, 5)
    rows = stored_rows(pair)
    assert len(rows) == 5
    assert mismatches(rows, matrix) == []
    assert set(offsets(pair).values()) <= {0, None}

    # The same rows again: nothing really differs, so nothing is written.
    outcome, details, affected = upsert(pair, engine, changed_only=True)
    assert outcome.startswith("completed"), outcome
    assert (details, affected) == ({"inserted": 0, "updated": 0, "unchanged": 5}, 0)
    assert mismatches(stored_rows(pair), matrix) == []

    # One column of one row at a time: exactly that row is rewritten, and reads back as sent.
    state = {i + 1: {name: values[i] for name, (_, _, values) in matrix.items()} for i in range(4)}
    state[5] = dict.fromkeys(matrix)
    problems: list[str] = []
    seen: set[str] = set()  # a wrong value is told once, not again at every later step
    steps = [step for step in STEPS if step[0] in matrix]
    for column, row_id, how, value, changes in steps:
        if how == SOURCE:
            with pair.lake.connect("lake") as con:
                con.execute(f'UPDATE s.fidelity SET "{column}" = ? WHERE id = ?', [value, row_id])
            if changes:
                state[row_id][column] = value
        else:
            pair._run(value.format(table="[dbo].[fidelity]"))
        outcome, details, affected = upsert(pair, engine, changed_only=True)
        step = f"{column} of id {row_id} -> {shorter(value)}"
        counts = {"inserted": 0, "updated": int(changes), "unchanged": 5 - int(changes)}
        if not outcome.startswith("completed"):
            problems.append(f"{step}: {outcome[:300]}")
            continue
        if (details, affected) != (counts, int(changes)):
            problems.append(f"{step}: counted {details}, rows_affected {affected}")
        for found in state_mismatches(stored_rows(pair), state):
            if found not in seen:
                seen.add(found)
                problems.append(f"{step}: {found}")
        if column == "dto" and offsets(pair).get(row_id) not in (0, None):
            problems.append(f"{step}: offset {offsets(pair)[row_id]} min kept, the source's is +00:00")
        if column == "f" and value == 0.0:
            signs = {i: math.copysign(1, v) for i, v in pair._run("SELECT [id], [f] FROM [dbo].[fidelity] "
                                                                   "WHERE [f] = 0", fetch=True)}
            if signs.get(row_id) != 1.0:
                problems.append(f"{step}: the target's zero became {signs.get(row_id)} * 0.0")
    assert problems == [], "\n".join(problems)

    # Every value the steps wrote, compared with itself: still nothing really differs.
    outcome, details, affected = upsert(pair, engine, changed_only=True)
    assert (outcome.split("|")[0], details, affected) == (
        "completed", {"inserted": 0, "updated": 0, "unchanged": 5}, 0), outcome
