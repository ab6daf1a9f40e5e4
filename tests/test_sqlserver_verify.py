"""Verified staging, without a server: the figures taken from what was sent, the query that takes
the same figures from the stage, and the comparison. The stage's answers are written here by hand,
as SQL Server would return them for each kind of wrong load (the real loads run in the contract and
fidelity suites when BRIDGE_TEST_MSSQL_URL is set)."""

from __future__ import annotations

import pyarrow as pa

from bridge_cli.events import Operation
from bridge_cli.identifiers import TableName
from bridge_cli.targets import ApplyPlan, TargetColumn, TargetTable
from bridge_cli.targets.sqlserver.verify import StageCheck

ID = TargetColumn("id", "int")
NAME = TargetColumn("name", "nvarchar(50)")
ACTIVE = TargetColumn("active", "bit")
NOTE = TargetColumn("note", "nvarchar(max)")
PLAN = ApplyPlan("e", Operation.INSERT, TargetTable(TableName(("dbo", "t")), (ID, NAME, ACTIVE, NOTE)),
                 (ID, NAME, ACTIVE, NOTE), (ID,))


def sent() -> StageCheck:
    check = StageCheck(PLAN)
    check.add(pa.record_batch({"id": [1, 2, 3], "name": ["a", "b", None], "active": [True, False, None],
                               "note": ["x", None, None]}))
    check.add(pa.record_batch({"id": [10, 4], "name": ["d", "e"], "active": [True, True], "note": [None, "y"]}))
    return check


def test_figures_of_what_was_sent() -> None:
    check = sent()
    assert check.rows == 5
    assert check.nulls == [0, 1, 1, 3]
    assert check.ranges == {0: (1, 10), 2: (0, 1)}  # integers and bits; not text


def test_the_query_takes_the_same_figures_from_the_stage() -> None:
    sql = sent().query("#bridge_stage")
    assert sql == (
        "SELECT COUNT_BIG(*), MIN([__bridge_row]), MAX([__bridge_row]), "
        "COUNT_BIG(*) - COUNT_BIG([id]), COUNT_BIG(*) - COUNT_BIG([name]), COUNT_BIG(*) - COUNT_BIG([active]), "
        "COUNT_BIG(*) - COUNT_BIG([note]), MIN(CAST([id] AS BIGINT)), MAX(CAST([id] AS BIGINT)), "
        "MIN(CAST([active] AS BIGINT)), MAX(CAST([active] AS BIGINT)) FROM #bridge_stage"
    )


def test_an_exact_stage_passes() -> None:
    assert sent().differences((5, 1, 5, 0, 1, 1, 3, 1, 10, 0, 1)) == []


def test_values_in_the_wrong_columns_are_caught() -> None:
    """The load seen on a TDS server: success reported, NULLs in the key, the key as text in the
    last column."""
    problems = sent().differences((5, 1, 5, 5, 1, 1, 0, None, None, 0, 1))
    assert "column id: 5 NULLs staged, 0 sent" in problems
    assert "column note: 0 NULLs staged, 3 sent" in problems
    assert "column id: range None..None staged, 1..10 sent" in problems


def test_lost_duplicated_and_reordered_rows_are_caught() -> None:
    assert sent().differences((4, 1, 4, 0, 1, 1, 3, 1, 10, 0, 1)) == ["4 rows staged, 5 sent"]
    assert sent().differences((5, 2, 6, 0, 1, 1, 3, 1, 10, 0, 1)) == ["order column spans 2..6, sent 1..5"]
    assert sent().differences((5, 1, 5, 0, 1, 1, 3, 1, 9, 0, 1)) == ["column id: range 1..9 staged, 1..10 sent"]


def test_a_key_shifted_into_another_integer_column_is_caught() -> None:
    # same NULL counts, but the bit column received the keys
    problems = sent().differences((5, 1, 5, 0, 1, 1, 3, 0, 1, 1, 10))
    assert "column id: range 0..1 staged, 1..10 sent" in problems
    assert "column active: range 1..10 staged, 0..1 sent" in problems
