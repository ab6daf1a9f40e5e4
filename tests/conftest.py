from __future__ import annotations

import os
import sys
import tempfile
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
)
from tests.databricks_env import ENV, NO_WAREHOUSE

if ENV is not None and ENV.standin and ENV.compat_dir:
    # Only on the stand-in: its shim lets the real connector talk to Spark's Thrift Server.
    sys.path.insert(0, ENV.compat_dir)
    import dbx_standin_compat

    dbx_standin_compat.install()

MSSQL_SKIP = "BRIDGE_TEST_MSSQL_URL is not set: the SQL Server target was not tested"


def pytest_report_header() -> str:
    url = mssql_url()
    where = f"{url['host']}:{url['port']}/{url['database']}" if url else "not set (SQL Server tests skipped)"
    databricks = ENV.describe() if ENV else "none (Databricks tests skipped)"
    return f"bridge: BRIDGE_TEST_MSSQL_URL {where}; Databricks: {databricks}"


@pytest.fixture(scope="session", autouse=True)
def databricks_cleanup() -> Iterator[None]:
    """Workspace mode: the schemas and tables this session made are dropped at its end, whatever
    the tests did; a drop that fails is an error of the session, not a quiet leftover."""
    yield
    if ENV is None or ENV.mode != "workspace" or not ENV.cleanup.pending():
        return
    from tests.backends import databricks_lake

    lake = databricks_lake(Path(tempfile.gettempdir()) / "bridge-databricks-cleanup")
    try:
        failures = ENV.cleanup.run(lake.execute, iceberg=ENV.standin)
    finally:
        lake.close()
    assert not failures, "workspace cleanup left these behind:\n" + "\n".join(failures)


@pytest.fixture
def bridge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BRIDGE_HOME and working directory, with no bridge.yaml or BRIDGE_* leaking in."""
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
    if request.param is DatabricksPair and ENV is None:
        pytest.skip(NO_WAREHOUSE)
    pair = request.param(bridge_home)
    if hasattr(pair, "close"):
        request.addfinalizer(pair.close)
    return pair


@pytest.fixture
def local(bridge_home: Path) -> LocalPair:
    return LocalPair(bridge_home)
