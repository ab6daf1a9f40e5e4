"""`bridge config show` (every value and where it came from) and `bridge doctor` (each check a
deployment needs, in order, with what to do), on real stores."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import TERMINAL, run, show

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
    assert settings["target.login_timeout"] == (None, "default")  # every adapter option is listed
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
