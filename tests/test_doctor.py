"""`bridge config show` (every value and where it came from) and `bridge doctor` (each check a
deployment needs, in order, with what to do), on real stores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.backends import LocalPair, mssql_url
from tests.helpers import submit
from tests.test_cli import TERMINAL, run, show
from tests.test_cli_process import BRIDGE

CONFIG = """\
profiles:
  p:
    max_attempts: 3
    poll_interval: 2
    lake:
      kind: duckdb
      path: ${LAKE_DIR}
    target:
      kind: sqlserver
      host: db.example
      database: sales
      user: loader
      password: ${DB_PASSWORD}
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG)
    return path


SHOW_ENV = {"LAKE_DIR": "/srv/lake", "DB_PASSWORD": "s3cret-pw", "BRIDGE_MAX_ATTEMPTS": "9"}


def test_config_show_json_says_where_each_value_came_from(bridge_home: Path, tmp_path: Path) -> None:
    path = _config(tmp_path)
    result = run("--config", str(path), "config", "show", "--json", env=SHOW_ENV)
    assert result.exit_code == 0, show(result)
    assert "s3cret-pw" not in result.output
    data = json.loads(result.stdout)
    assert data["profile"] == "p" and data["config_file"] == str(path)
    settings = {s["key"]: (s["value"], s["source"]) for s in data["settings"]}
    assert settings["poll_interval"] == (2.0, f"{path}:4")  # a file value, with its line
    assert settings["max_attempts"] == (9, "BRIDGE_MAX_ATTEMPTS (environment)")  # env wins over line 3
    assert settings["lake.path"] == ("/srv/lake", f"${{LAKE_DIR}} in {path}:7")
    assert settings["target.password"] == ("***", f"${{DB_PASSWORD}} in {path}:13")
    assert settings["batch_rows"] == (5000, "default")
    assert settings["target.login_timeout"] == (30, "default")  # every adapter option is listed
    assert settings["target.encrypt"] == (None, "default")  # with its default where bridge knows it
    assert settings["target.kind"] == ("sqlserver", f"{path}:9")


def test_config_show_text_on_a_terminal_and_piped(bridge_home: Path, tmp_path: Path) -> None:
    path = _config(tmp_path)
    table = run("--config", str(path), "config", "show", env={**SHOW_ENV, **TERMINAL})
    assert table.exit_code == 0, show(table)
    assert "s3cret-pw" not in table.output
    lines = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if line.count("│") >= 3}
    assert "BRIDGE_MAX_ATTEMPTS (environment)" in lines["max_attempts"]
    assert f"{path}:4" in lines["poll_interval"]
    assert "***" in lines["target.password"] and f"${{DB_PASSWORD}} in {path}:13" in lines["target.password"]
    piped = run("--config", str(path), "config", "show", env=SHOW_ENV)
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in piped.stdout.splitlines()}
    assert rows["target.password"] == ["***", f"${{DB_PASSWORD}} in {path}:13"]
    assert rows["lake.path"] == ["/srv/lake", f"${{LAKE_DIR}} in {path}:7"]
    assert rows["ordering"] == ["per_target", "default"]


def test_config_show_of_the_embedded_default_and_of_a_broken_config(bridge_home: Path, tmp_path: Path) -> None:
    result = run("config", "show", "--json")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert data["profile"] == "local" and data["config_file"] is None
    settings = {s["key"]: (s["value"], s["source"]) for s in data["settings"]}
    assert settings["lake.kind"] == ("duckdb", "default")
    assert settings["home"] == (str(bridge_home), "BRIDGE_HOME (environment)")
    broken = _config(tmp_path)  # ${LAKE_DIR} and ${DB_PASSWORD} unset
    failed = run("--config", str(broken), "config", "show")
    assert failed.exit_code == 5, show(failed)
    assert "environment variable LAKE_DIR is not set" in failed.stderr


# -- bridge doctor ---------------------------------------------------------------------------------
CHECKS = ["config", "lake", "event table", "driver", "target", "ledger", "staging", "allowed tables",
          "leftover stages", "statuses", "leases", "workers", "pauses", "spark"]


def doctor(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, dict[str, dict[str, Any]]]:
    result = run(*args, "doctor", "--json", env=env)
    data = json.loads(result.stdout)
    assert [c["name"] for c in data] == CHECKS, show(result)
    return result.exit_code, {c["name"]: c for c in data}


def statuses(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


def test_doctor_after_init_on_the_embedded_default_is_all_ok(bridge_home: Path) -> None:
    assert run("init").exit_code == 0
    code, checks = doctor()
    assert code == 0, checks
    others = ("workers", "spark", "allowed tables", "driver")
    expected = {n: "ok" for n in CHECKS if n not in others}
    assert {n: s for n, s in statuses(checks).items() if n not in others} == expected
    assert checks["driver"]["status"] == "skipped" and "sqlite target has no driver" in checks["driver"]["detail"]
    assert checks["allowed tables"]["status"] == "warning"  # any table: worth a change, not a failure
    assert checks["workers"]["status"] == "skipped"  # no worker has run yet
    assert checks["spark"]["status"] == "skipped" and "no spark: section" in checks["spark"]["detail"]
    assert all(c["seconds"] >= 0 for c in checks.values())
    table = run("doctor", env=TERMINAL)
    assert table.exit_code == 0, show(table)
    assert "bridge doctor" in table.stdout and "failed" not in table.stdout
    piped = run("doctor")
    assert [line.split("\t")[:2] for line in piped.stdout.splitlines()][:3] == [
        ["config", "ok"], ["lake", "ok"], ["event table", "ok"]]


def test_doctor_without_init_fails_at_the_event_table_and_skips_what_needs_it(bridge_home: Path) -> None:
    code, checks = doctor()
    assert code == 5
    assert statuses(checks)["lake"] == "ok"
    assert checks["event table"]["status"] == "failed"
    assert "run `bridge init`" in checks["event table"]["detail"]
    assert checks["statuses"]["status"] == checks["leases"]["status"] == "skipped"
    assert "event table" in checks["statuses"]["detail"]


def test_doctor_with_a_missing_ledger(local: LocalPair, bridge_home: Path) -> None:
    local.target.schema_path(local.target.ledger.schema).unlink()
    code, checks = doctor()
    assert code == 5
    assert statuses(checks)["event table"] == "ok" and statuses(checks)["target"] == "ok"
    assert checks["ledger"]["status"] == "failed" and "bridge init" in checks["ledger"]["detail"]
    assert checks["staging"]["status"] == "skipped"
    text = run("doctor")
    assert text.exit_code == 5 and "ledger\tfailed" in text.stdout


def test_doctor_names_events_in_unknown_statuses(local: LocalPair) -> None:
    event = submit(local.lake, "delete", "dbo.t", filter_conditions={"k": 1})
    assert local.lake.update_event_if(event.event_id, {"status": "pending"}, {"status": "PENDING"})
    code, checks = doctor()
    assert code == 5
    assert checks["statuses"]["status"] == "failed"
    assert "'PENDING': 1" in checks["statuses"]["detail"] and "pending" in checks["statuses"]["fix"]


def test_doctor_names_processing_events_whose_lease_expired(local: LocalPair) -> None:
    event = submit(local.lake, "delete", "dbo.t", filter_conditions={"k": 1})
    past = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=10)
    assert local.lake.update_event_if(event.event_id, {"status": "pending"}, {
        "status": "processing", "worker_id": "gone:1", "claim_token": "t", "lease_expires_at": past})
    code, checks = doctor()
    assert code == 5
    leases = checks["leases"]
    assert leases["status"] == "failed" and event.event_id in leases["detail"]
    assert "bridge requeue --stale" in leases["fix"]
    assert run("requeue", "--stale").exit_code == 0
    assert doctor()[0] == 0


DATABRICKS_PORT_1 = ("{kind: databricks, server_hostname: 127.0.0.1, port: 1, http_path: /sql/1.0/warehouses/x, "
                     "token: dapi-test-token-0123, connect_timeout: 5}")


def doctor_process(tmp_path: Path, lake: str, target: str = "{kind: sqlite}") -> tuple[float, dict[str, dict[str, Any]], int]:
    config = tmp_path / "bridge.yaml"
    config.write_text(f"profiles:\n  p:\n    lake: {lake}\n    target: {target}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "DATABRICKS_"))}
    env.update(BRIDGE_CONFIG=str(config), BRIDGE_HOME=str(tmp_path / ".bridge"), HOME=str(tmp_path))
    start = time.monotonic()
    done = subprocess.run([*BRIDGE, "doctor", "--json"], env=env, capture_output=True, text=True,
                          timeout=90, check=False)  # a hang fails the test here
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    return time.monotonic() - start, checks, done.returncode


def test_an_unreachable_databricks_host_fails_the_lake_check_within_the_bound(tmp_path: Path) -> None:
    seconds, checks, code = doctor_process(tmp_path, DATABRICKS_PORT_1)
    assert code == 5
    lake = checks["lake"]
    assert lake["status"] == "failed" and lake["seconds"] <= 5 + 1, lake
    assert "127.0.0.1:1" in lake["detail"] and "dapi-test-token-0123" not in json.dumps(checks)
    assert checks["event table"]["status"] == "skipped" and checks["leases"]["status"] == "skipped"
    assert checks["target"]["status"] == "ok"  # the target does not need the lake
    assert seconds < 30


def test_an_unreachable_sql_server_fails_the_target_check_within_its_login_timeout(tmp_path: Path) -> None:
    target = "{kind: sqlserver, host: 127.0.0.1, port: 1, database: d, user: u, password: pw-x1, login_timeout: 5}"
    seconds, checks, code = doctor_process(tmp_path, "{kind: duckdb}", target)
    assert code == 5
    assert checks["target"]["status"] == "failed" and checks["target"]["seconds"] <= 5 + 1, checks["target"]
    assert checks["ledger"]["status"] == checks["staging"]["status"] == "skipped"
    assert checks["leftover stages"]["status"] == "skipped"
    assert seconds < 30


@pytest.mark.skipif(mssql_url() is None, reason="needs BRIDGE_TEST_MSSQL_URL")
def test_a_wrong_sql_server_password_fails_the_target_check(tmp_path: Path) -> None:
    url = mssql_url()
    assert url is not None
    target = (f"{{kind: sqlserver, host: '{url['host']}', port: {url['port']}, database: '{url['database']}', "
              f"user: '{url['user']}', password: not-the-password, encrypt: optional, "
              "trust_server_certificate: true, login_timeout: 5}")
    _, checks, code = doctor_process(tmp_path, "{kind: duckdb}", target)
    assert code == 5
    assert checks["target"]["status"] == "failed" and "Login failed" in checks["target"]["detail"]
    assert "not-the-password" not in json.dumps(checks)
    assert checks["ledger"]["status"] == "skipped"


def test_a_databricks_host_that_never_answers_fails_within_connect_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        lake = DATABRICKS_PORT_1.replace("port: 1,", f"port: {port},")
        seconds, checks, code = doctor_process(tmp_path, lake)
    assert code == 5
    assert checks["lake"]["status"] == "failed" and checks["lake"]["seconds"] <= 5 + 1, checks["lake"]
    assert checks["event table"]["status"] == "skipped"
    assert seconds < 30


def test_doctor_checks_that_a_worker_is_alive_once_one_has_run(bridge_home: Path, tmp_path: Path) -> None:
    assert run("init").exit_code == 0
    assert doctor()[1]["workers"]["status"] == "skipped"  # before deploying: nothing to judge
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update(BRIDGE_LEASE_SECONDS="2", BRIDGE_IDLE_POLL_MAX="0.5")
    worker = subprocess.Popen([*BRIDGE, "worker", "--poll-interval", "0.1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while doctor()[1]["workers"]["status"] != "ok":
            assert time.monotonic() < deadline, "the worker never showed as alive"
            time.sleep(0.2)
        assert "1 alive" in doctor()[1]["workers"]["detail"]
        worker.kill()
        worker.wait(timeout=30)
        while doctor()[1]["workers"]["status"] != "failed":  # gone once its heartbeat is stale
            assert time.monotonic() < deadline, "the killed worker never showed as gone"
            time.sleep(0.2)
        code, checks = doctor()
        assert code == 5 and "no worker alive" in checks["workers"]["detail"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)


def test_doctor_checks_the_spark_section_before_any_event_needs_it(bridge_home: Path, tmp_path: Path) -> None:
    import importlib.util
    import shutil

    path = tmp_path / "bridge.yaml"
    spark = "    spark:\n      kind: local\n      jdbc_driver: jtds\n      partitions: 3\n"
    path.write_text(CONFIG.replace("${LAKE_DIR}", str(tmp_path / "lake")).replace("${DB_PASSWORD}", "pw")
                    .replace("host: db.example", "host: 127.0.0.1\n      port: 1\n      login_timeout: 2") + spark)
    code, checks = doctor("--config", str(path))
    assert code == 5  # the target cannot be reached; the spark check does not need it
    ready = importlib.util.find_spec("pyspark") is not None and shutil.which("java") is not None
    assert checks["spark"]["status"] == ("ok" if ready else "failed"), checks["spark"]
    if ready:
        assert checks["spark"]["detail"] == "local Spark, 3 JDBC writers (jtds); jdbc:jtds:sqlserver://127.0.0.1:1/sales"
    path.write_text(path.read_text().replace("partitions: 3", "partitions: 3\n      jars: [/no/such.jar]"))
    code, checks = doctor("--config", str(path))
    assert code == 5
    assert checks["config"]["status"] == "ok"  # the profile itself loads
    assert checks["spark"]["status"] == "failed" and "jars: /no/such.jar is not a file" in checks["spark"]["detail"]
    # A value out of its range is the profile's own error (it no longer loads): the spark check waits for it.
    path.write_text(path.read_text().replace("partitions: 3", "partitions: 0"))
    code, checks = doctor("--config", str(path))
    assert code == 5
    assert checks["config"]["status"] == "failed" and "spark.partitions: must be at least 1" in checks["config"]["detail"]
    assert checks["spark"]["status"] == "skipped"
