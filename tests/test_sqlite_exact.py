"""The embedded SQLite target stores every value exactly, or fails the event before writing.

Each test runs a real event through the engine: a DuckDB source table of DECIMAL, DOUBLE and
integer columns, a SQLite target table, `process_once`, then the event row, the target table and
the ledger are read back.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import pytest

from bridge_cli.targets.sqlite_values import affinity
from tests.backends import LocalPair
from tests.helpers import submit

SOURCE = "lakecat.s.amounts"
TARGET = "dbo.amounts"
DECIMAL_SOURCE = {"id": "BIGINT", "amount": "DECIMAL(18,2)", "big": "DECIMAL(38,6)", "x": "DOUBLE"}
DECIMAL_TARGET = {"id": "INTEGER PRIMARY KEY", "amount": "DECIMAL(18,2)", "big": "DECIMAL(38,6)",
                  "x": "DOUBLE"}


def make_source(pair: LocalPair, columns: dict[str, str], rows: list[tuple[Any, ...]]) -> None:
    """Values go in as text cast by DuckDB, so a decimal is exactly the literal written here."""
    body = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
    pair.lake_sql("lakecat", "CREATE SCHEMA IF NOT EXISTS s")
    pair.lake_sql("lakecat", f"CREATE OR REPLACE TABLE s.amounts ({body})")
    casts = ", ".join(f"CAST(? AS {kind})" for kind in columns.values())
    for row in rows:
        pair.lake_sql("lakecat", f"INSERT INTO s.amounts VALUES ({casts})",
                      [None if v is None else str(v) for v in row])


def make_target(pair: LocalPair, columns: dict[str, str], rows: list[tuple[Any, ...]] = ()) -> None:
    path = pair.target.schema_path("dbo")
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
    pair.target_sql("dbo", f"CREATE TABLE amounts ({body})")
    marks = ", ".join("?" for _ in columns)
    for row in rows:
        pair.target_sql("dbo", f"INSERT INTO amounts VALUES ({marks})", list(row))


def target_rows(pair: LocalPair) -> list[tuple[Any, ...]]:
    return pair.target_sql("dbo", "SELECT * FROM amounts ORDER BY id")


def run_event(pair: LocalPair, operation: str = "insert"):
    event = submit(pair.lake, operation, TARGET, source_table=SOURCE, primary_keys=["id"])
    results = pair.engine().process_once()
    assert [r.event_id for r in results] == [event.event_id]
    return pair.lake.get_event(event.event_id)


def as_decimal(value: Any) -> Decimal | None:
    """A value read back from SQLite as a decimal: a REAL by its shortest repr (how Python shows
    it), an INTEGER or TEXT as it is."""
    if value is None:
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


# -- refused: the event fails on its first attempt, nothing written ------------------------------
@pytest.mark.parametrize(("row", "message"), [
    pytest.param(
        (2, "1234567890123456.78", "1.5", "1.5"),
        "column amount: 1234567890123456.78 cannot be stored exactly by the SQLite target (DECIMAL "
        "values with more than 15 significant digits become REAL: this one would read back as "
        "1234567890123456.8); nothing was written",
        id="decimal-18-2-beyond-15-digits"),
    pytest.param(
        (2, "1.00", "12345678901234567890123456789012.123456", "1.500000"),
        "column big: 12345678901234567890123456789012.123456 cannot be stored exactly by the SQLite "
        "target (DECIMAL values with more than 15 significant digits become REAL: this one would "
        "read back as 1.2345678901234567e+31); nothing was written",
        id="decimal-38-6-beyond-15-digits"),
    pytest.param(
        (2, "1.00", "12345678901234567890.000000", "1.5"),
        "column big: 12345678901234567890.000000 cannot be stored exactly",
        id="integral-decimal-beyond-int64"),
    pytest.param(
        (2, "1.00", "1.5", "NaN"),
        "column x: NaN cannot be stored by the SQLite target (SQLite stores NaN as NULL); nothing "
        "was written",
        id="double-nan"),
])
def test_a_value_the_sqlite_column_would_change_fails_the_event_before_anything_is_written(
    local: LocalPair, row: tuple[Any, ...], message: str
) -> None:
    make_source(local, DECIMAL_SOURCE, [(1, "0.10", "12.5", "0.5"), row])
    make_target(local, DECIMAL_TARGET)
    stored = run_event(local)
    assert stored.status == "failed", stored
    assert stored.attempts == 1  # a PermanentError: no retry
    assert message in stored.error_message
    assert target_rows(local) == []
    assert local.ledger_ids() == []


def test_an_update_with_a_value_the_column_would_change_leaves_the_target_rows_as_they_were(
    local: LocalPair
) -> None:
    make_target(local, DECIMAL_TARGET, [(1, 5, 5, 5.0), (2, 6, 6, 6.0)])
    make_source(local, DECIMAL_SOURCE, [(1, "7.00", "7", "7"), (2, "9999999999999999.99", "7", "7")])
    stored = run_event(local, "update")
    assert stored.status == "failed" and stored.attempts == 1
    assert "column amount: 9999999999999999.99 cannot be stored exactly" in stored.error_message
    assert target_rows(local) == [(1, 5, 5, 5.0), (2, 6, 6, 6.0)]
    assert local.ledger_ids() == []


@pytest.mark.parametrize(("source", "target", "value", "message"), [
    pytest.param("UBIGINT", "INTEGER", "18446744073709551615",
                 "column v: 18446744073709551615 cannot be stored by the SQLite target (beyond its "
                 "64-bit INTEGER); nothing was written", id="ubigint-beyond-int64"),
    pytest.param("BIGINT", "REAL", "9007199254740993",
                 "column v: 9007199254740993 cannot be stored exactly by the SQLite target (its REAL "
                 "column keeps integers exactly only up to 2**53: this one would read back as "
                 "9007199254740992.0); nothing was written", id="bigint-into-real-beyond-2-53"),
    pytest.param("DOUBLE", "TEXT", "0.30000000000000004",
                 "column v: 0.30000000000000004 cannot be stored exactly by the SQLite target (its "
                 "TEXT column keeps a DOUBLE as text of 15 significant digits: this one would read "
                 "back as '0.3'); nothing was written", id="double-into-text"),
])
def test_integers_and_doubles_a_column_would_change_fail_the_event(
    local: LocalPair, source: str, target: str, value: str, message: str
) -> None:
    make_source(local, {"id": "BIGINT", "v": source}, [(1, "1"), (2, value)])
    make_target(local, {"id": "INTEGER PRIMARY KEY", "v": target})
    stored = run_event(local)
    assert stored.status == "failed" and stored.attempts == 1, stored
    assert message in stored.error_message
    assert target_rows(local) == []


# -- allowed: near the limits, read back exactly -----------------------------------------------
EXACT_SOURCE = {**DECIMAL_SOURCE, "t": "DECIMAL(38,6)", "u": "DECIMAL(38,6)"}
EXACT_TARGET = {**DECIMAL_TARGET, "t": "NVARCHAR(60)", "u": ""}  # TEXT and no affinity: text
EXACT_ROWS = [
    # DECIMAL(18,2): up to 15 significant digits; integral ones within int64 (stored as INTEGER);
    # 17 digits that are a double exactly
    (1, "9999999999999.99", "4547731.314671", "0.1", "12345678901234567890123456789012.123456", "1.500000"),
    (2, "0.01", "10000000000000000000000000000000.000000", "Infinity", "0.000001", "1234567890123456.780000"),
    (3, "-123.45", "9223372036854775807.000000", "-Infinity", "-1.000000", None),  # int64's largest
    (4, "0.10", "-0.000001", "1e308", None, "0.000000"),
    (5, "12.50", "12.5", "5e-324", None, None),
    (6, "9007199254740993.00", "-9223372036854775808.000000", "-0.0", None, None),  # 2**53 + 1
    (7, "-9999999999999.99", "0.000000", "0.30000000000000004", None, None),
    (8, "1234567890123456.75", "1", "1", None, None),  # prints as ...56.8; its value is the decimal
    (9, None, None, None, None, None),
]


def reads_back_as(value: Any, decimal: Decimal) -> bool:
    """A REAL equals the decimal by its shortest repr (how Python shows it: 0.1) or by its exact
    binary value (1234567890123456.75); an INTEGER or TEXT as it is."""
    if isinstance(value, float):
        return decimal in (Decimal(repr(value)), Decimal(value))
    return Decimal(value) == decimal


def test_values_near_the_limits_are_stored_exactly(local: LocalPair) -> None:
    make_source(local, EXACT_SOURCE, EXACT_ROWS)
    make_target(local, EXACT_TARGET)
    stored = run_event(local)
    assert (stored.status, stored.rows_affected, stored.error_message) == ("completed", len(EXACT_ROWS), None)
    rows = target_rows(local)
    assert [r[0] for r in rows] == [r[0] for r in EXACT_ROWS]
    for got, sent in zip(rows, EXACT_ROWS, strict=True):
        _, amount, big, x, text, untyped = sent
        for value, decimal in ((got[1], amount), (got[2], big)):
            assert (value is None) if decimal is None else reads_back_as(value, Decimal(decimal)), (got, sent)
        assert got[3] == (None if x is None else float(x)), (got, sent)
        assert got[4:] == (text, untyped), (got, sent)  # the exact text, as DuckDB writes it


@pytest.mark.parametrize("declared", [
    "INTEGER", "BIGINT", "int", "VARCHAR(10)", "NVARCHAR(4000)", "TEXT", "CLOB", "BLOB", "", "REAL",
    "DOUBLE", "DOUBLE PRECISION", "FLOAT", "NUMERIC", "DECIMAL(18,2)", "BOOLEAN", "DATETIME",
    "FLOATING POINT", "CHARINT",
])
def test_affinity_is_the_one_sqlite_gives_the_declared_type(declared: str) -> None:
    """Text '12' and '1.5' stored in a column of that declared type come back as SQLite's
    affinity makes them: INTEGER/NUMERIC -> integer and real, REAL -> real, TEXT and BLOB -> text."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute(f'CREATE TABLE t (c {declared})')
        connection.execute("INSERT INTO t VALUES ('12'), ('1.5')")
        stored = [r[0] for r in connection.execute("SELECT typeof(c) FROM t ORDER BY rowid")]
    finally:
        connection.close()
    expected = {"INTEGER": ["integer", "real"], "NUMERIC": ["integer", "real"], "REAL": ["real", "real"],
                "TEXT": ["text", "text"], "BLOB": ["text", "text"]}[affinity(declared)]
    assert stored == expected
