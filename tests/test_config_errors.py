"""Configuration that fails loudly and early: unknown keys, wrong types, variables, and where a
bad setting came from. Each error is one line naming the file, profile and key, and exits 5."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge_cli.config import ADAPTER_OPTIONS, load_settings
from bridge_cli.errors import ConfigError
from tests.test_cli import run, show

ROOT = Path(__file__).resolve().parent.parent


def profile(tmp_path: Path, lake: str, target: str, extra: str = "") -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(f"profiles:\n  p:\n    lake: {lake}\n    target: {target}\n{extra}")
    return path


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(str(path), env=env or {})
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("lake,target,message", [
    ("{kind: duckdb, pth: x}", "{kind: sqlite}",
     "profiles.p.lake.pth: unknown option for kind duckdb (did you mean 'path'?)"),
    ("{kind: duckdb}", "{kind: sqlserver, host: h, database: d, user: u, pasword: secret}",
     "profiles.p.target.pasword: unknown option for kind sqlserver (did you mean 'password'?)"),
    ("{kind: databricks, server_hostname: h, http_path: p, colour: red}", "{kind: sqlite}",
     "profiles.p.lake.colour: unknown option for kind databricks (known: "),
])
def test_an_unknown_adapter_option_is_an_error_with_a_suggestion(
    tmp_path: Path, lake: str, target: str, message: str
) -> None:
    path = profile(tmp_path, lake, target)
    text = error_of(path)
    assert str(path) in text and message in text


def test_every_option_an_adapter_reads_is_a_known_option() -> None:
    # The adapters read options as config.get("x"), options.get("x") or helpers such as
    # _integer(options, "x", ...): each of those keys must be in ADAPTER_OPTIONS for its kind.
    reads = re.compile(r'(?:config|options)(?:\.get\(|, |\[)"([a-z_]+)"')
    files = {
        "duckdb": ["bridge_cli/lakes/duckdb.py"],
        "databricks": ["bridge_cli/lakes/databricks.py"],
        "sqlite": ["bridge_cli/targets/sqlite.py"],
        "sqlserver": [str(p.relative_to(ROOT)) for p in (ROOT / "bridge_cli/targets/sqlserver").glob("*.py")],
    }
    for kind, paths in files.items():
        found = {key for p in paths for key in reads.findall((ROOT / p).read_text())}
        assert found, kind
        assert found <= ADAPTER_OPTIONS[kind] | {"kind"}, (kind, found - ADAPTER_OPTIONS[kind])


def test_an_invalid_event_table_names_the_file_and_key_and_exits_5(bridge_home: Path, tmp_path: Path) -> None:
    path = profile(tmp_path, "{kind: duckdb, event_table: 'events.bad name'}", "{kind: sqlite}")
    result = run("--config", str(path), "status")
    assert result.exit_code == 5, show(result)
    assert f"{path}: profiles.p.lake.event_table:" in result.stderr


@pytest.mark.parametrize("target,command,message", [
    ("{kind: sqlserver, host: h, database: d, user: u, password: secretpw, login_timeout: soon}", "init",
     "profiles.p.target.login_timeout: expected an integer, got 'soon'"),
    ("{kind: sqlserver, host: h, database: d, user: u, password: secretpw, batch_rows: many}",
     "process-once", "profiles.p.target.batch_rows: expected an integer, got 'many'"),
])
def test_a_wrongly_typed_adapter_option_is_one_line_and_exit_5(
    bridge_home: Path, tmp_path: Path, target: str, command: str, message: str
) -> None:
    path = profile(tmp_path, "{kind: duckdb}", target)
    result = run("--config", str(path), command)
    assert result.exit_code == 5, show(result)
    assert message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_variables_with_defaults_and_literal_dollars(tmp_path: Path) -> None:
    path = profile(tmp_path, "{kind: duckdb, path: '${DATA:-/srv/lake}'}",
                   "{kind: sqlite, path: '${TARGET_DIR:-/unused}/t$$x'}")
    settings = load_settings(str(path), env={"TARGET_DIR": "/data"})
    assert settings.lake.options["path"] == "/srv/lake"
    assert settings.target.options["path"] == "/data/t$x"


@pytest.mark.parametrize("value", ["$DATA_DIR/lake", "${X:-", "cost$", "${1}"])
def test_a_dollar_that_is_not_a_variable_reference_is_an_error(
    tmp_path: Path, bridge_home: Path, value: str
) -> None:
    path = profile(tmp_path, f"{{kind: duckdb, path: '{value}'}}", "{kind: sqlite}")
    text = error_of(path, {"DATA_DIR": "/d", "X": "x"})
    assert "profiles.p.lake.path" in text and "is not a variable reference" in text
    assert not list(tmp_path.glob("$*"))  # no folder literally named $DATA_DIR


def test_where_a_bad_config_came_from_is_named(tmp_path: Path, bridge_home: Path) -> None:
    folder = run("--config", str(tmp_path), "status")
    assert folder.exit_code == 5 and f"--config: {tmp_path} is a directory" in folder.stderr
    from_env = run("status", env={"BRIDGE_CONFIG": str(tmp_path / "nope.yaml")})
    assert from_env.exit_code == 5
    assert f"BRIDGE_CONFIG: config file {tmp_path / 'nope.yaml'} does not exist" in from_env.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  p:\n    lake: {kind: duckdb\n    target: x\n")
    result = run("--config", str(bad), "status")
    assert result.exit_code == 5, show(result)
    assert re.search(r"bad\.yaml line \d+, column \d+: not valid YAML: .+", result.stderr)
