from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import PAIRS, LocalPair, MssqlPair, mssql_url

MSSQL_SKIP = "BRIDGE_TEST_MSSQL_URL is not set: the SQL Server target was not tested"


def pytest_report_header() -> str:
    url = mssql_url()
    where = f"{url['host']}:{url['port']}/{url['database']}" if url else "not set (SQL Server tests skipped)"
    return f"bridge: BRIDGE_TEST_MSSQL_URL {where}"


@pytest.fixture
def bridge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BRIDGE_HOME and working directory, with no bridge.yaml or BRIDGE_* leaking in."""
    import os

    for key in list(os.environ):
        if key.startswith("BRIDGE_") and key != "BRIDGE_TEST_MSSQL_URL":
            monkeypatch.delenv(key)
    home = tmp_path / ".bridge"
    monkeypatch.setenv("BRIDGE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield home


@pytest.fixture(params=PAIRS, ids=lambda p: p.name)
def pair(request: pytest.FixtureRequest, bridge_home: Path) -> LocalPair:
    """Each lake/target adapter pair, with the event table and ledger created; a pair whose
    server is not reachable here is skipped, saying so."""
    if request.param is MssqlPair and mssql_url() is None:
        pytest.skip(MSSQL_SKIP)
    return request.param(bridge_home)


@pytest.fixture
def local(bridge_home: Path) -> LocalPair:
    return LocalPair(bridge_home)
