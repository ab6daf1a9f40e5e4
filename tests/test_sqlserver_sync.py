"""UPSERT and REPLACE refusals on SQL Server: the message the user reads, and nothing changed.

Runs against a real server when BRIDGE_TEST_MSSQL_URL is set; skipped (saying so) otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import Col, MssqlPair, MssqlPythonPair, mssql_python_available, mssql_url
from tests.helpers import submit

pytestmark = pytest.mark.skipif(
    mssql_url() is None, reason="BRIDGE_TEST_MSSQL_URL is not set: SQL Server UPSERT/REPLACE tests skipped"
)

ROWS = [(1, "A", 1), (2, "A", 2), (3, "B", 3)]


def sliced_pair(bridge_home: Path, driver: str) -> MssqlPair:
    if driver == "mssql-python" and not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    pair = (MssqlPythonPair if driver == "mssql-python" else MssqlPair)(bridge_home)
    pair.create_target("dbo.sliced_small", [Col("id", "int", pk=True), Col("region", "text"), Col("v", "int")])
    pair.insert_target_rows("dbo.sliced_small", ["id", "region", "v"], ROWS)
    return pair


@pytest.mark.parametrize("driver", ["pymssql", "mssql-python"])
def test_a_replace_bringing_rows_of_another_slice_is_refused_naming_the_first(bridge_home: Path, driver: str) -> None:
    pair = sliced_pair(bridge_home, driver)
    pair.create_source("lake.s.reload_a", {"id": "int", "region": "text", "v": "int"},
                       [(1, "A", 10), (7, "B", 70), (8, "C", 80), (2, "A", 20)])
    event = submit(pair.lake, "replace", "dbo.sliced_small", source_table="lake.s.reload_a", primary_keys=["id"],
                   filter_conditions={"region": "A"})
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    message = stored.error_message or ""
    assert "2 of 4 source rows fall outside the slice" in message, message
    assert message.endswith("First: (id=7, region='B')"), message  # the first in the source's order
    assert pair.target_rows("dbo.sliced_small", ["id", "region", "v"], "id") == ROWS


@pytest.mark.parametrize("operation", ["upsert", "replace"])
def test_a_key_twice_in_the_source_is_refused_before_anything_is_written(bridge_home: Path, operation: str) -> None:
    """UPSERT's and REPLACE's statements read the stage without ranking rows per key: they rely
    on this refusal coming first."""
    pair = sliced_pair(bridge_home, "pymssql")
    pair.create_source("lake.s.twice", {"id": "int", "region": "text", "v": "int"},
                       [(1, "A", 10), (4, "A", 40), (1, "A", 11), (5, "A", 50)])
    event = submit(pair.lake, operation, "dbo.sliced_small", source_table="lake.s.twice", primary_keys=["id"],
                   filter_conditions={"region": "A"} if operation == "replace" else None)
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    assert "source has 1 duplicate key(s) (2 rows)" in (stored.error_message or ""), stored.error_message
    assert (stored.error_message or "").endswith("First: id=1"), stored.error_message
    assert pair.target_rows("dbo.sliced_small", ["id", "region", "v"], "id") == ROWS
