"""`make test` ends with the skipped tests grouped by what they need, each with its command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.skip_summary import summarize

ROOT = Path(__file__).resolve().parent.parent

SKIPPING = '''
import pytest

@pytest.mark.skipif(True, reason="BRIDGE_TEST_MSSQL_URL is not set: SQL Server not tested")
def test_sql_server_1(): pass

@pytest.mark.skipif(True, reason="BRIDGE_TEST_MSSQL_URL is not set: SQL Server not tested")
def test_sql_server_2(): pass

def test_databricks():
    pytest.skip("the Databricks stand-in is not running (make test-databricks starts it)")

def test_something_new():
    pytest.skip("needs a flux capacitor")

def test_runs(): pass
'''


def test_the_summary_groups_skips_and_names_the_command(tmp_path: Path) -> None:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.skip_summary", "-p", "no:cacheprovider",
         str(tmp_path / "test_skipping.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "4 skipped, by what they need and how to run them" in line)
    assert lines[start + 1].startswith("  SQL Server (2): set BRIDGE_TEST_MSSQL_URL=mssql://")
    assert lines[start + 2].startswith("  Databricks (1): make test-databricks")
    assert lines[start + 3] == "  Other: needs a flux capacitor (1): see the reason"  # never hidden


def test_no_skips_no_summary(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_runs(): pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.skip_summary", "-p", "no:cacheprovider",
         str(tmp_path / "test_plain.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0 and "by what they need" not in result.stdout


def test_each_kind_of_skip_in_the_suite_has_its_group() -> None:
    reasons = [
        "container tests run only under `make test-container` (BRIDGE_TEST_CONTAINER=1, a Docker daemon)",
        "this server's bulk load does not work with pymssql: refused",
        "mssql-python is not installed (pip install 'bridge-cli[mssql-python]')",
        "pyspark or Java is not installed: the Spark job tests need a local SparkSession",
        "long soak: set BRIDGE_STRESS_LONG=1",
        "no TDS server at 127.0.0.1:1433 (refused); set BRIDGE_TEST_MSSQL_URL",
    ]
    lines = summarize(reasons)
    assert [line.split(" (")[0].strip() for line in lines] == [
        "Container image", "SQL Server, what this server refuses", "mssql-python", "Local Spark", "Long soak",
        "SQL Server",
    ]
