"""`driver: auto`, the default: mssql-python where it imports and its ODBC driver loads, pymssql
otherwise; what it chose is said by the worker's start line, `doctor` and `config show`.

The fallback is tested for real: the bridge process starts with LD_LIBRARY_PATH naming a folder
whose `libltdl.so.7` is not a library, so the system's loader fails to load mssql-python's ODBC
driver exactly as it does where the library is missing (a loader error naming libltdl.so.7).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.errors import ConfigError
from bridge_cli.targets.sqlserver.connect_options import connect_spec
from bridge_cli.targets.sqlserver.driver_choice import choose_driver, mssql_python_unavailable
from tests.test_cli_process import BRIDGE, cli_env

SOURCE = "bridge.yaml: profiles.prod.target"
SERVER = {"host": "127.0.0.1", "port": 1, "database": "Sales", "user": "loader", "password": "pw-1"}
LOADABLE = mssql_python_unavailable() is None
needs_mssql_python = pytest.mark.skipif(
    not LOADABLE, reason=f"mssql-python does not load here: {mssql_python_unavailable()}"
)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_LIBRARY_PATH is the Linux loader's")

CONFIG = """\
profiles:
  prod:
    lake:
      kind: duckdb
    target:
      kind: sqlserver
      host: 127.0.0.1
      port: 1
      database: Sales
      user: loader
      password: pw-1
      login_timeout: 2
{extra}"""


# -- the choice, in this process (mssql-python loads here) ------------------------------------
@needs_mssql_python
def test_a_profile_naming_no_driver_gets_mssql_python_and_says_why() -> None:
    choice = choose_driver(SERVER, SOURCE)
    assert (choice.driver, choice.requested, choice.fell_back) == ("mssql-python", "auto", False)
    assert choice.describe() == "mssql-python (auto: mssql-python and its ODBC driver load here)"
    assert choose_driver({**SERVER, "driver": "AUTO "}, SOURCE) == choice


def test_a_named_driver_is_taken_as_named() -> None:
    choice = choose_driver({**SERVER, "driver": "pymssql"}, SOURCE)
    assert (choice.driver, choice.requested) == ("pymssql", "pymssql")
    assert choice.describe() == "pymssql (named in the profile)"


@pytest.mark.parametrize(("options", "named"), [
    ({"appname": "nightly"}, "appname"),
    ({"tds_version": "7.4"}, "tds_version"),
    ({"rows_per_trip": 5000}, "rows_per_trip"),
    ({"write_method": "values"}, "write_method: values"),
])
def test_options_only_pymssql_takes_make_auto_choose_it(options: dict[str, Any], named: str) -> None:
    choice = choose_driver({**SERVER, **options}, SOURCE)
    assert choice.driver == "pymssql" and not choice.fell_back
    assert choice.reason == f"the profile sets {named}, which only pymssql takes"


@needs_mssql_python
@pytest.mark.parametrize(("options", "named"), [
    ({"encrypt": "strict"}, "encrypt: strict"),
    ({"trust_server_certificate": False}, "trust_server_certificate: false"),
    ({"write_method": "arrays"}, "write_method: arrays"),
    ({"packet_size": 8192}, "packet_size"),
])
def test_options_only_mssql_python_takes_make_auto_choose_it(options: dict[str, Any], named: str) -> None:
    choice = choose_driver({**SERVER, **options}, SOURCE)
    assert choice.driver == "mssql-python" and choice.reason == f"the profile sets {named}, which needs it"


def test_options_for_both_drivers_at_once_are_one_clear_refusal() -> None:
    with pytest.raises(ConfigError) as caught:
        choose_driver({**SERVER, "appname": "x", "encrypt": "strict"}, SOURCE)
    message = str(caught.value)
    assert message.startswith(SOURCE) and "\n" not in message
    assert "encrypt: strict only mssql-python takes, and appname only pymssql" in message
    assert "name the driver you want" in message


def test_an_unknown_driver_lists_auto_among_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"\.driver: 'odbc' is not one of auto, pymssql, mssql-python$"):
        choose_driver({**SERVER, "driver": "odbc"}, SOURCE)


# -- what a SQL login means on mssql-python under auto ----------------------------------------
@needs_mssql_python
def test_auto_keeps_what_a_profile_without_a_driver_always_meant_for_encryption() -> None:
    # pymssql (FreeTDS) encrypts the login, the data when the server requires it, and validates no
    # certificate; mssql-python's own defaults (Mandatory, validated) would refuse such servers.
    spec = connect_spec(SERVER, SOURCE)
    assert spec.driver == "mssql-python"
    assert spec.connection_string is not None
    assert spec.connection_string.endswith(";Encrypt=Optional;TrustServerCertificate=Yes")
    mandatory = connect_spec({**SERVER, "encrypt": "mandatory"}, SOURCE).connection_string or ""
    assert mandatory.endswith(";Encrypt=Mandatory;TrustServerCertificate=Yes")
    validated = connect_spec({**SERVER, "encrypt": "mandatory", "trust_server_certificate": False}, SOURCE)
    assert (validated.connection_string or "").endswith(";Encrypt=Mandatory;TrustServerCertificate=No")
    # named explicitly, the driver's own defaults apply, as before
    named = connect_spec({**SERVER, "driver": "mssql-python"}, SOURCE).connection_string or ""
    assert "Encrypt=" not in named and "TrustServerCertificate" not in named


@needs_mssql_python
def test_entra_sign_in_under_auto_keeps_the_drivers_validated_encryption() -> None:
    spec = connect_spec({"host": "srv.database.windows.net", "database": "Sales",
                         "authentication": "ActiveDirectoryDefault"}, SOURCE)
    assert spec.driver == "mssql-python"
    assert "Encrypt=" not in (spec.connection_string or "")
    assert "TrustServerCertificate" not in (spec.connection_string or "")


# -- the fallback, in a process whose loader cannot load mssql-python's ODBC driver -----------
@pytest.fixture
def unloadable(tmp_path: Path) -> dict[str, str]:
    """An environment in which the system loader fails on libltdl.so.7 (not a library)."""
    libs = tmp_path / "unloadable-libs"
    libs.mkdir()
    (libs / "libltdl.so.7").write_text("not a shared library: makes mssql-python's ODBC driver unloadable\n")
    return {"LD_LIBRARY_PATH": str(libs)}


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.format(extra=extra))
    return path


def _bridge(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, "--config", str(config), *args], capture_output=True, text=True,
                          env=cli_env(**(env or {})), timeout=120)


@linux_only
def test_config_show_says_auto_fell_back_and_what_would_fix_it(
    bridge_home: Path, tmp_path: Path, unloadable: dict[str, str]
) -> None:
    result = _bridge(_config(tmp_path), "config", "show", "--json", env=unloadable)
    assert result.returncode == 0, result.stderr
    shown = {s["key"]: (s["value"], s["source"]) for s in json.loads(result.stdout)["settings"]}
    assert shown["target.driver"] == ("auto", "default")
    value, why = shown["target.driver_chosen"]
    assert value == "pymssql"
    assert why.startswith("auto fell back: mssql-python's ODBC driver does not load: ")
    assert "libltdl.so.7" in why and "apt-get install libltdl7 libkrb5-3 libgssapi-krb5-2" in why
    assert shown["target.appname"] == ("bridge", "default")  # pymssql's: it is the one that connects


@needs_mssql_python
def test_config_show_says_auto_chose_mssql_python(bridge_home: Path, tmp_path: Path) -> None:
    result = _bridge(_config(tmp_path), "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    shown = {s["key"]: (s["value"], s["source"]) for s in json.loads(result.stdout)["settings"]}
    assert shown["target.driver_chosen"] == ("mssql-python", "auto: mssql-python and its ODBC driver load here")
    assert shown["target.appname"] == (None, "default")


@linux_only
def test_doctor_warns_that_auto_fell_back_and_gives_the_install_line(
    bridge_home: Path, tmp_path: Path, unloadable: dict[str, str]
) -> None:
    result = _bridge(_config(tmp_path), "doctor", "--json", env=unloadable)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    driver = checks["driver"]
    assert driver["status"] == "warning", driver
    assert driver["detail"].startswith("pymssql, because auto fell back: mssql-python's ODBC driver does not load")
    assert "libltdl.so.7" in driver["detail"]
    assert driver["fix"].startswith("apt-get install libltdl7 libkrb5-3 libgssapi-krb5-2")
    assert "driver: pymssql" in driver["fix"]
    # the fallback still connects (here: nothing listens on port 1, through pymssql)
    assert checks["target"]["status"] == "failed" and "127.0.0.1:1" in checks["target"]["detail"]


@needs_mssql_python
def test_doctor_shows_the_driver_auto_chose(bridge_home: Path, tmp_path: Path) -> None:
    result = _bridge(_config(tmp_path), "doctor", "--json")
    driver = {c["name"]: c for c in json.loads(result.stdout)}["driver"]
    assert driver["status"] == "ok"
    assert driver["detail"] == "mssql-python (auto: mssql-python and its ODBC driver load here)"


@linux_only
def test_a_named_mssql_python_that_cannot_load_is_a_config_error_naming_the_library(
    bridge_home: Path, tmp_path: Path, unloadable: dict[str, str]
) -> None:
    config = _config(tmp_path, "      driver: mssql-python\n")
    result = _bridge(config, "process-once", env=unloadable)
    assert result.returncode == 5, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "target.driver: mssql-python cannot be used here: mssql-python's ODBC driver does not load" in lines[0]
    assert "libltdl.so.7" in lines[0] and "apt-get install libltdl7" in lines[0]
    doctor = {c["name"]: c for c in json.loads(_bridge(config, "doctor", "--json", env=unloadable).stdout)}
    assert doctor["driver"]["status"] == "failed" and "libltdl.so.7" in doctor["driver"]["detail"]


def _worker_log(tmp_path: Path, env: dict[str, str]) -> str:
    """What a real `bridge worker` logged up to its start line (nothing listens on port 1: it keeps
    retrying the target, which is not what these tests look at), then stopped."""
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([*BRIDGE, "--config", str(_config(tmp_path)), "worker", "--poll-interval", "0.2"],
                                  stdout=subprocess.DEVNULL, stderr=out, env=env)
        try:
            deadline = time.monotonic() + 60
            while "worker started" not in log.read_text() and time.monotonic() < deadline:
                assert worker.poll() is None, log.read_text()
                time.sleep(0.1)
        finally:
            worker.terminate()
            worker.wait(30)
    return next(line for line in log.read_text().splitlines() if "worker started" in line)


@linux_only
def test_the_worker_start_line_names_the_fallback_and_why(
    bridge_home: Path, tmp_path: Path, unloadable: dict[str, str]
) -> None:
    started = _worker_log(tmp_path, cli_env(**unloadable))
    assert "SQL Server driver pymssql (auto fell back: mssql-python's ODBC driver does not load" in started
    assert "libltdl.so.7" in started and "apt-get install libltdl7" in started


@needs_mssql_python
def test_the_worker_start_line_names_mssql_python(bridge_home: Path, tmp_path: Path) -> None:
    env = cli_env()
    env.pop("LD_LIBRARY_PATH", None)
    started = _worker_log(tmp_path, env)
    assert "SQL Server driver mssql-python (auto: mssql-python and its ODBC driver load here)" in started


def test_the_embedded_default_names_no_driver(bridge_home: Path) -> None:
    result = subprocess.run([*BRIDGE, "config", "show", "--json"], capture_output=True, text=True,
                            env=cli_env(), timeout=60)
    keys = {s["key"] for s in json.loads(result.stdout)["settings"]}
    assert "target.driver_chosen" not in keys  # SQLite: nothing to choose
