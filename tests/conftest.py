from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import (
    PAIRS,
    DatabricksPair,
    LocalPair,
    MssqlAutoPair,
    MssqlPair,
    MssqlPythonPair,
    MssqlSparkPair,
    auto_pair_unavailable,
    mssql_python_available,
    mssql_url,
    spark_unavailable,
    standin_settings,
)

if os.environ.get("DBX_STANDIN_COMPAT_DIR"):
    # Test-only: the stand-in's shim lets the real connector talk to the local warehouse.
    sys.path.insert(0, os.environ["DBX_STANDIN_COMPAT_DIR"])
    import dbx_standin_compat

    dbx_standin_compat.install()

DATABRICKS_SKIP = "the Databricks stand-in is not running (make test-databricks starts it)"

MSSQL_SKIP = "BRIDGE_TEST_MSSQL_URL is not set: the SQL Server target was not tested"


def pytest_report_header() -> str:
    url = mssql_url()
    where = f"{url['host']}:{url['port']}/{url['database']}" if url else "not set (SQL Server tests skipped)"
    standin = "running" if standin_settings() else "not running (Databricks tests skipped)"
    return f"bridge: BRIDGE_TEST_MSSQL_URL {where}; Databricks stand-in {standin}"


@pytest.fixture
def bridge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BRIDGE_HOME and working directory, with no bridge.yaml or BRIDGE_* leaking in."""
    import os

    for key in list(os.environ):
        # The tests' own settings stay (BRIDGE_TEST_*: the server, the jar, the driver expected);
        # bridge's settings (BRIDGE_HOME, BRIDGE_PROFILE, ...) must not leak in.
        if key.startswith("BRIDGE_") and not key.startswith("BRIDGE_TEST_"):
            monkeypatch.delenv(key)
    home = tmp_path / ".bridge"
    monkeypatch.setenv("BRIDGE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield home


@pytest.fixture(params=PAIRS, ids=lambda p: p.name)
def pair(request: pytest.FixtureRequest, bridge_home: Path) -> LocalPair:
    """Each lake/target adapter pair, with the event table and ledger created; a pair whose
    server is not reachable here is skipped, saying so."""
    if issubclass(request.param, MssqlPair) and mssql_url() is None:
        pytest.skip(MSSQL_SKIP)
    if request.param is MssqlPythonPair and not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    if request.param is MssqlAutoPair and auto_pair_unavailable():
        pytest.skip(str(auto_pair_unavailable()))
    if request.param is MssqlSparkPair and spark_unavailable():
        pytest.skip(f"the Spark staging path cannot run here: {spark_unavailable()}")
    if request.param is DatabricksPair and standin_settings() is None:
        pytest.skip(DATABRICKS_SKIP)
    pair = request.param(bridge_home)
    if hasattr(pair, "close"):
        request.addfinalizer(pair.close)
    return pair


@pytest.fixture
def local(bridge_home: Path) -> LocalPair:
    return LocalPair(bridge_home)
