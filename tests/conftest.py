from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import PAIRS, LocalPair


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
    """Each available lake/target adapter pair, with the event table and ledger created."""
    return request.param(bridge_home)


@pytest.fixture
def local(bridge_home: Path) -> LocalPair:
    return LocalPair(bridge_home)
