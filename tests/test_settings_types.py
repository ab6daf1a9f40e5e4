"""Every setting has a type and a range, checked when the configuration loads (issue 16, items 3, 4,
11 and 12): a value that would break a worker is one line naming the file, the profile and the key,
and exit 5, before anything runs. Also: allowed_sources / allowed_targets are never empty and every
pattern is checked on load; doctor warns when either allows any table; `config show` shows the
adapters' defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.config import load_settings
from bridge_cli.identifiers import parse_source_table, parse_target_table
from tests.test_cli import TERMINAL, run, show

SQLSERVER = "{kind: sqlserver, host: db.example, database: sales, user: loader, password: pw-secret-1"


def write(tmp_path: Path, lake: str = "{kind: duckdb}", target: str = "{kind: sqlite}", extra: str = "") -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(f"profiles:\n  p:\n    lake: {lake}\n    target: {target}\n{extra}")
    return path


def refused(path: Path, key: str, message: str, env: dict[str, str | None] | None = None,
            command: tuple[str, ...] = ("config", "show")) -> None:
    """The command exits 5 with one line naming the file, profile and key, and the reason."""
    result = run("--config", str(path), *command, env=env)
    assert result.exit_code == 5, show(result)
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.output, show(result)
    assert f"{path}: profiles.p.{key}: " in line, show(result)
    assert message in line, show(result)


def refused_from_env(variable: str, value: str, message: str, tmp_path: Path) -> None:
    path = write(tmp_path)
    result = run("--config", str(path), "config", "show", env={variable: value})
    assert result.exit_code == 5, show(result)
    assert f"the environment: {variable}: {message}" in result.stderr, show(result)


# -- the profile's settings -------------------------------------------------------------------------
def test_lease_seconds_zero_is_refused_on_load(bridge_home: Path, tmp_path: Path) -> None:
    """lease_seconds: 0 failed every event; the floor is 1 second."""
    refused(write(tmp_path, extra="    lease_seconds: 0\n"), "lease_seconds", "must be at least 1, got 0",
            command=("init",))
    refused_from_env("BRIDGE_LEASE_SECONDS", "0.5", "must be at least 1, got '0.5'", tmp_path)


def test_poll_interval_zero_is_refused_in_the_profile(bridge_home: Path, tmp_path: Path) -> None:
    """A worker polling with no pause spins on the event table; the floor is 0.05 s."""
    refused(write(tmp_path, extra="    poll_interval: 0\n"), "poll_interval", "must be at least 0.05, got 0")
    refused_from_env("BRIDGE_POLL_INTERVAL", "0", "must be at least 0.05, got '0'", tmp_path)


def test_worker_poll_interval_option_zero_is_a_usage_error(bridge_home: Path, tmp_path: Path) -> None:
    """`worker --poll-interval 0` has the profile's floor, refused before any configuration is read."""
    result = run("--config", str(tmp_path / "absent.yaml"), "worker", "--poll-interval", "0")
    assert result.exit_code == 2, show(result)
    assert "must be at least 0.05, got 0" in result.stderr


def test_an_integer_setting_refuses_a_fraction(bridge_home: Path, tmp_path: Path) -> None:
    """max_delete_rows: 1.5 silently became 1; "1.5" from the environment is refused as well."""
    refused(write(tmp_path, extra="    max_delete_rows: 1.5\n"), "max_delete_rows", "expected an integer, got 1.5")
    refused_from_env("BRIDGE_MAX_DELETE_ROWS", "1.5", "expected an integer, got '1.5'", tmp_path)
    settings = load_settings(str(write(tmp_path, extra="    max_delete_rows: 20.0\n")), env={})
    assert settings.max_delete_rows == 20 and isinstance(settings.max_delete_rows, int)


def test_an_adapter_integer_refuses_a_fraction(bridge_home: Path, tmp_path: Path) -> None:
    """rows_per_trip: 1.5 became 1 in the target; now refused when the profile loads."""
    refused(write(tmp_path, target=SQLSERVER + ", rows_per_trip: 1.5}"), "target.rows_per_trip",
            "expected an integer, got 1.5")


def test_lock_timeout_zero_is_refused(bridge_home: Path, tmp_path: Path) -> None:
    refused(write(tmp_path, extra="    lock_timeout: 0\n"), "lock_timeout", "must be between 0.1 and")


def test_idle_poll_max_below_poll_interval_is_refused_when_both_are_set(bridge_home: Path, tmp_path: Path) -> None:
    path = write(tmp_path, extra="    poll_interval: 30\n    idle_poll_max: 10\n")
    refused(path, "idle_poll_max", "must be at least poll_interval (30), got 10")
    # One of them set: the other's default does not stand in the way (the worker uses the larger).
    assert load_settings(str(write(tmp_path, extra="    idle_poll_max: 0.5\n")), env={}).idle_poll_max == 0.5


def test_retry_backoff_max_below_retry_backoff_is_refused(bridge_home: Path, tmp_path: Path) -> None:
    path = write(tmp_path, extra="    retry_backoff_max: 5\n")
    result = run("--config", str(path), "config", "show", env={"BRIDGE_RETRY_BACKOFF": "60"})
    assert result.exit_code == 5, show(result)
    assert f"{path}: profiles.p.retry_backoff_max: must be at least retry_backoff (60), got 5" in result.stderr


def test_ordering_is_a_choice_in_any_case_stored_in_lower_case(bridge_home: Path, tmp_path: Path) -> None:
    """BRIDGE_ORDERING=NONE was refused although the CLI takes choices in any case."""
    path = write(tmp_path, extra="    ordering: Per_Target\n")
    assert load_settings(str(path), env={}).ordering == "per_target"
    assert load_settings(str(path), env={"BRIDGE_ORDERING": "NONE"}).ordering == "none"
    refused(write(tmp_path, extra="    ordering: fifo\n"), "ordering", "'fifo' is not one of per_target, none")


def test_a_boolean_is_refused_for_a_number(bridge_home: Path, tmp_path: Path) -> None:
    refused(write(tmp_path, target=SQLSERVER + ", login_timeout: yes}"), "target.login_timeout",
            "expected an integer, got True")
    refused(write(tmp_path, extra="    poll_interval: true\n"), "poll_interval", "expected a number, got True")


# -- adapter options ----------------------------------------------------------------------------------
def test_a_list_for_a_path_is_refused_and_creates_no_folder(bridge_home: Path, tmp_path: Path) -> None:
    """target: {path: [a]} created a folder named "['a']"."""
    refused(write(tmp_path, target="{kind: sqlite, path: [a]}"), "target.path", "expected text, got a list",
            command=("init",))
    assert not list(tmp_path.glob("[[]*"))


def test_a_port_that_is_not_a_number_fails_config_show_and_doctor(bridge_home: Path, tmp_path: Path) -> None:
    path = write(tmp_path, target=SQLSERVER + ", port: abc}")
    refused(path, "target.port", "expected an integer, got 'abc'")
    result = run("--config", str(path), "doctor", "--json")
    assert result.exit_code == 5, show(result)
    config = json.loads(result.stdout)[0]
    assert config["name"] == "config" and config["status"] == "failed"
    assert f"{path}: profiles.p.target.port: expected an integer" in config["detail"]
    refused(write(tmp_path, target=SQLSERVER + ", port: 70000}"), "target.port", "must be between 1 and 65535")


def test_a_password_that_is_a_list_is_refused_without_showing_it(bridge_home: Path, tmp_path: Path) -> None:
    path = write(tmp_path, target="{kind: sqlserver, host: h, database: d, user: u, password: [hunter2x, b]}")
    refused(path, "target.password", "expected text, got a list")
    result = run("--config", str(path), "doctor", "--json")
    assert result.exit_code == 5 and "hunter2x" not in result.output + result.stderr
    assert json.loads(result.stdout)[0]["status"] == "failed"


def test_login_timeout_zero_is_refused(bridge_home: Path, tmp_path: Path) -> None:
    """A login that may wait forever is not bounded; timeouts are at least 1 s (the query timeout's 0 is
    "none", as documented)."""
    refused(write(tmp_path, target=SQLSERVER + ", login_timeout: 0}"), "target.login_timeout",
            "must be at least 1, got 0")


def test_numbers_from_variables_are_numbers(bridge_home: Path, tmp_path: Path) -> None:
    """`port: ${PORT}` is text after expansion: "1433" is read as 1433, and the Databricks lake, which
    refused connect_timeout "5" as not a number, gets 5.0."""
    path = write(tmp_path, target=SQLSERVER + ", port: '${PORT}', login_timeout: '${LOGIN}'}")
    settings = load_settings(str(path), env={"PORT": "1433", "LOGIN": "12"})
    assert settings.target.options["port"] == 1433 and settings.target.options["login_timeout"] == 12
    lake = ("{kind: databricks, server_hostname: h.example, http_path: /sql/1.0/w/x, token: t0k3n-x, "
            "connect_timeout: '${CT}', port: '${LP}'}")
    settings = load_settings(str(write(tmp_path, lake=lake)), env={"CT": "5", "LP": "8443"})
    assert settings.lake.options["connect_timeout"] == 5.0 and settings.lake.options["port"] == 8443
    from bridge_cli.lakes.databricks import DatabricksLake

    assert DatabricksLake(settings).budget == 5.0


def test_choices_and_kinds_compare_in_any_case(bridge_home: Path, tmp_path: Path) -> None:
    """kind: DuckDB was refused; write_method: BULK was refused by the target; all stored in canonical case."""
    target = SQLSERVER + ", driver: PyMSSQL, write_method: BULK, authentication: sqlpassword, encrypt: Optional}"
    spark = "    spark: {kind: Local, jdbc_driver: JTDS}\n"
    settings = load_settings(str(write(tmp_path, lake="{kind: DuckDB}", target=target, extra=spark)), env={})
    assert (settings.lake.kind, settings.target.kind, settings.spark and settings.spark.kind) == (
        "duckdb", "sqlserver", "local")
    options = settings.target.options
    assert (options["driver"], options["write_method"], options["encrypt"]) == ("pymssql", "bulk", "optional")
    assert options["authentication"] == "SqlPassword"  # the spelling the drivers and the JDBC path compare
    assert settings.spark is not None and settings.spark.options["jdbc_driver"] == "jtds"
    refused(write(tmp_path, target=SQLSERVER + ", write_method: fast}"), "target.write_method",
            "'fast' is not one of auto, bulk, values, arrays")


def test_flags_take_true_false_yes_no_as_text(bridge_home: Path, tmp_path: Path) -> None:
    """serverless: "false" (text, from a variable) was True; a flag is now a boolean."""
    spark = ("    spark: {kind: databricks, serverless: '${SERVERLESS}', cluster_id: c-1, wheel: /w.whl, "
             "password_secret: s/k}\n")
    target = SQLSERVER + ", trust_server_certificate: 'No'}"
    settings = load_settings(str(write(tmp_path, target=target, extra=spark)), env={"SERVERLESS": "false"})
    assert settings.spark is not None and settings.spark.options["serverless"] is False
    assert settings.target.options["trust_server_certificate"] is False
    refused(write(tmp_path, target=SQLSERVER + ", trust_server_certificate: 1}"),
            "target.trust_server_certificate", "expected true or false")


def test_spark_options_are_checked_on_load(bridge_home: Path, tmp_path: Path) -> None:
    refused(write(tmp_path, target=SQLSERVER + "}", extra="    spark: {kind: local, partitions: 0}\n"),
            "spark.partitions", "must be at least 1, got 0")
    refused(write(tmp_path, target=SQLSERVER + "}", extra="    spark: {kind: local, spark_conf: [a]}\n"),
            "spark.spark_conf", "must be a mapping")


def test_the_specs_choices_are_the_adapters_own() -> None:
    """The spec lists what each adapter takes (it cannot import them: they import config)."""
    from bridge_cli import settings_spec as spec
    from bridge_cli.spark.jdbc import JDBC_DRIVERS
    from bridge_cli.targets.sqlserver.connect_options import AUTHENTICATIONS, DRIVERS, ENCRYPT_VALUES
    from bridge_cli.targets.sqlserver.driver_choice import DRIVER_VALUES
    from bridge_cli.targets.sqlserver.mssql_python_driver import MssqlPythonDriver
    from bridge_cli.targets.sqlserver.pymssql_driver import PymssqlDriver

    assert spec.SQLSERVER_DRIVERS == DRIVER_VALUES and set(DRIVERS) == set(DRIVER_VALUES) - {"auto"}
    assert spec.SQLSERVER_AUTHENTICATIONS == AUTHENTICATIONS
    assert spec.ENCRYPT_VALUES == ENCRYPT_VALUES and spec.JDBC_DRIVERS == JDBC_DRIVERS
    methods = {"auto", *PymssqlDriver.capabilities.methods, *MssqlPythonDriver.capabilities.methods}
    assert set(spec.WRITE_METHODS) == methods


def test_tenant_id_is_a_known_sqlserver_option(bridge_home: Path, tmp_path: Path) -> None:
    """connect_options reads tenant_id (README names it) but it was refused as an unknown option."""
    target = ("{kind: sqlserver, driver: mssql-python, host: h, database: d, authentication: "
              "ActiveDirectoryServicePrincipal, client_id: app-1, client_secret: s3cr3t-x, tenant_id: t-1}")
    assert load_settings(str(write(tmp_path, target=target)), env={}).target.options["tenant_id"] == "t-1"


# -- allowed_sources / allowed_targets --------------------------------------------------------------
@pytest.mark.parametrize("key", ["allowed_targets", "allowed_sources"])
@pytest.mark.parametrize("value", ["''", "[]", "' , '"])
def test_an_empty_allowed_list_in_the_profile_is_refused(bridge_home: Path, tmp_path: Path, key: str,
                                                         value: str) -> None:
    """allowed_targets: "" denied every event; an empty list names no table."""
    refused(write(tmp_path, extra=f"    {key}: {value}\n"), key,
            "must name at least one pattern ('*' allows any table)")


@pytest.mark.parametrize("variable", ["BRIDGE_ALLOWED_TARGETS", "BRIDGE_ALLOWED_SOURCES"])
def test_an_empty_allowed_list_variable_is_refused_never_any_table(bridge_home: Path, tmp_path: Path,
                                                                   variable: str) -> None:
    """BRIDGE_ALLOWED_TARGETS='' fell back to "*" (any table)."""
    path = write(tmp_path, extra="    allowed_targets: ['dbo.*']\n    allowed_sources: ['c.*']\n")
    result = run("--config", str(path), "status", env={variable: ""})
    assert result.exit_code == 5, show(result)
    assert f"the environment: {variable}: must name at least one pattern ('*' allows any table)" in result.stderr


@pytest.mark.parametrize("key,pattern,message", [
    ("allowed_targets", "dbo.[users", "unclosed ["),
    ("allowed_targets", "a.b.c", "has more parts than schema.table"),
    ("allowed_sources", "c.s", "must name catalog.schema.table, or end with '.*'"),
    ("allowed_sources", "c.s.t;drop", "may only use letters"),
])
def test_a_malformed_pattern_is_refused_when_the_profile_loads(bridge_home: Path, tmp_path: Path, key: str,
                                                               pattern: str, message: str) -> None:
    """Patterns were parsed only when an event was submitted or processed: `bridge init` ran."""
    refused(write(tmp_path, extra=f"    {key}: ['dbo.*', '{pattern}']\n" if key == "allowed_targets"
                  else f"    {key}: ['c.*', '{pattern}']\n"), key, message, command=("init",))


def test_a_malformed_pattern_from_the_environment_is_refused(bridge_home: Path, tmp_path: Path) -> None:
    refused_from_env("BRIDGE_ALLOWED_SOURCES", "c.*,`x", "pattern '`x': unclosed `", tmp_path)


def _policy(env: dict[str, str]) -> Any:
    from bridge_cli.policy import table_policy

    return table_policy(load_settings(env={"BRIDGE_HOME": "/tmp/unused", **env}))


@pytest.mark.parametrize("pattern,allowed,refused_names", [
    ("[dbo].[users]", ["dbo.users", "DBO.Users", "users"], ["o.s", "dbo.users2", "sales.users"]),
    ("dbo.*", ["dbo.users", "dbo.x_1"], ["sales.users"]),
    ("*", ["dbo.users", "sales.anything"], []),
    ("dbo.user*", ["dbo.users", "dbo.user"], ["dbo.customer"]),
])
def test_target_patterns_are_sql_server_names(pattern: str, allowed: list[str], refused_names: list[str]) -> None:
    """`[dbo].[users]` is the table dbo.users (brackets quote, they are not glob classes); `*` is the
    only wildcard; names compare in any case."""
    from bridge_cli.errors import PermanentError

    policy = _policy({"BRIDGE_ALLOWED_TARGETS": pattern})
    for name in allowed:
        policy.check_target(parse_target_table(name))
    for name in refused_names:
        with pytest.raises(PermanentError, match="is not allowed by this profile"):
            policy.check_target(parse_target_table(name))


@pytest.mark.parametrize("pattern,allowed,refused_names", [
    ("c.*", ["c.s.t", "C.sales.x"], ["d.s.t"]),
    ("`mi-catalog`.`mi-schema`.*", ["`mi-catalog`.`mi-schema`.datos", "MI-CATALOG.mi-schema.t"],
     ["`mi-catalog`.other.t"]),
    ("main.sales_exports.*", ["main.sales_exports.daily"], ["main.hr.salaries"]),
])
def test_source_patterns_name_catalog_schema_table(pattern: str, allowed: list[str], refused_names: list[str]) -> None:
    from bridge_cli.errors import PermanentError

    policy = _policy({"BRIDGE_ALLOWED_SOURCES": pattern})
    for name in allowed:
        policy.check_source(parse_source_table(name))
    for name in refused_names:
        with pytest.raises(PermanentError, match="is not allowed by this profile"):
            policy.check_source(parse_source_table(name))


# -- doctor and config show ---------------------------------------------------------------------------
def _allowed_check(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, dict[str, Any]]:
    result = run(*args, "doctor", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return result.exit_code, checks["allowed tables"]


def test_doctor_warns_when_any_lake_table_may_be_copied(bridge_home: Path) -> None:
    """allowed_sources left at "*": a warning (exit 0), naming both lists; set, the check is ok."""
    assert run("init").exit_code == 0
    code, check = _allowed_check()
    assert code == 0 and check["status"] == "warning", check
    assert "allowed_sources: *" in check["detail"] and "allowed_targets: *" in check["detail"]
    assert "every lake table the credentials can read may be copied" in check["detail"]
    assert "allowed_sources" in check["fix"]
    code, check = _allowed_check(env={"BRIDGE_ALLOWED_SOURCES": "main.sales_exports.*",
                                      "BRIDGE_ALLOWED_TARGETS": "dbo.*"})
    assert code == 0 and check["status"] == "ok", check
    assert check["detail"] == "allowed_sources: main.sales_exports.*; allowed_targets: dbo.*"
    piped = run("doctor", env={"BRIDGE_ALLOWED_TARGETS": "dbo.*"})
    assert piped.exit_code == 0 and "allowed tables\twarning" in piped.stdout, show(piped)
    table = run("doctor", env=TERMINAL)
    assert table.exit_code == 0 and "warning" in table.stdout, show(table)


def test_config_show_gives_the_adapters_defaults(bridge_home: Path, tmp_path: Path) -> None:
    """event_table and ledger_table showed blank; each option's default is shown, from "default"."""
    result = run("config", "show", "--json")
    assert result.exit_code == 0, show(result)
    shown = {s["key"]: (s["value"], s["source"]) for s in json.loads(result.stdout)["settings"]}
    assert shown["lake.event_table"] == ("`000-sql-databricks-bridge`.`events`.bridge_events", "default")
    assert shown["target.ledger_table"] == ("bridge.applied_events", "default")
    assert shown["lake.path"] == (str(bridge_home / "lake"), "default")
    assert shown["allowed_sources"] == (["*"], "default")
    path = write(tmp_path, target=SQLSERVER + "}")
    result = run("--config", str(path), "config", "show", "--json")
    shown = {s["key"]: (s["value"], s["source"]) for s in json.loads(result.stdout)["settings"]}
    assert shown["target.port"] == (1433, "default") and shown["target.driver"] == ("auto", "default")
    assert shown["target.batch_rows"] == (5000, "default")  # the profile's batch_rows
    assert shown["target.encrypt"] == (None, "default")  # the driver's own: not known here
    assert shown["target.password"] == ("***", f"{path}:4")
