"""Connection failures a person meets at a shell: bounded, once, with the cause (real sockets,
real drivers; nothing listens on port 1 and `.invalid` never resolves)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.backends import mssql_url
from tests.test_cli_process import BRIDGE

DATABRICKS = "{kind: databricks, server_hostname: %s, port: %d, http_path: /sql/1.0/warehouses/x%s, connect_timeout: 5}"


def bridge_with(tmp_path: Path, lake: str, target: str = "{kind: sqlite}", *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(f"profiles:\n  p:\n    lake: {lake}\n    target: {target}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "DATABRICKS_"))}
    env.update(BRIDGE_CONFIG=str(config), BRIDGE_HOME=str(tmp_path / ".bridge"), HOME=str(tmp_path))
    # The bound under test: a hang would hit this timeout and fail the test.
    return subprocess.run([*BRIDGE, *(args or ("status",))], env=env, capture_output=True, text=True,
                          timeout=90, check=False)


@pytest.mark.parametrize("host,port,cause", [
    ("adb-nope.invalid", 443, "DNS: cannot resolve adb-nope.invalid"),
    ("127.0.0.1", 1, "connection refused by 127.0.0.1:1"),
])
def test_an_unreachable_databricks_host_fails_once_with_its_cause(
    tmp_path: Path, host: str, port: int, cause: str
) -> None:
    done = bridge_with(tmp_path, DATABRICKS % (host, port, ", token: dapi-test-token-0123"))
    assert done.returncode == 5, done.stderr
    assert f"cannot connect to Databricks at {host}:{port}: {cause}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # no retry chatter
    assert "dapi-test-token-0123" not in done.stderr


def test_unified_auth_without_credentials_fails_quickly_and_cleanly(tmp_path: Path) -> None:
    done = bridge_with(tmp_path, DATABRICKS % ("adb-nope.invalid", 443, ""))
    assert done.returncode == 5, done.stderr
    assert "Databricks authentication failed for adb-nope.invalid" in done.stderr
    assert "set lake.token (or DATABRICKS_TOKEN)" in done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(mssql_url() is None, reason="needs BRIDGE_TEST_MSSQL_URL")
@pytest.mark.parametrize("driver", ["pymssql", "mssql-python"])
def test_a_wrong_sql_server_password_is_exit_5_with_the_server_text_once(tmp_path: Path, driver: str) -> None:
    url = mssql_url()
    assert url is not None
    target = (f"{{kind: sqlserver, driver: {driver}, host: '{url['host']}', port: {url['port']}, "
              f"database: '{url['database']}', user: '{url['user']}', password: not-the-password, "
              "encrypt: optional, trust_server_certificate: true}")
    done = bridge_with(tmp_path, "{kind: duckdb}", target, "init")
    assert done.returncode == 5, done.stderr
    assert done.stderr.count("Login failed") == 1, done.stderr
    assert "not-the-password" not in done.stderr


# process-once logs in while it starts (connect_ahead, in a thread): what that login or ledger
# check meets is still raised once, by the command, as a one-line exit 5.
@pytest.mark.parametrize("driver", ["pymssql", "mssql-python", "auto"])
def test_process_once_against_an_unreachable_sql_server_is_exit_5_once(tmp_path: Path, driver: str) -> None:
    target = (f"{{kind: sqlserver, driver: {driver}, host: 127.0.0.1, port: 1, database: d, user: u, password: p, "
              "login_timeout: 5, encrypt: optional, trust_server_certificate: true}")
    done = bridge_with(tmp_path, "{kind: duckdb}", target, "process-once")
    assert done.returncode == 5, done.stderr
    assert done.stderr.count("cannot connect to SQL Server at 127.0.0.1:1") == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr


@pytest.mark.skipif(mssql_url() is None, reason="needs BRIDGE_TEST_MSSQL_URL")
@pytest.mark.parametrize("password,expected", [
    ("not-the-password", "Login failed"),
    (None, "target ledger bridge.never_made_0451 does not exist"),  # the real password: no ledger
])
def test_process_once_says_once_why_the_target_is_not_ready(tmp_path: Path, password: str | None,
                                                            expected: str) -> None:
    url = mssql_url()
    assert url is not None
    target = (f"{{kind: sqlserver, host: '{url['host']}', port: {url['port']}, database: '{url['database']}', "
              f"user: '{url['user']}', password: '{password or url['password']}', encrypt: optional, "
              "trust_server_certificate: true, ledger_table: bridge.never_made_0451}")
    done = bridge_with(tmp_path, "{kind: duckdb}", target, "process-once")
    assert done.returncode == 5, done.stderr
    assert done.stderr.count(expected) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr
