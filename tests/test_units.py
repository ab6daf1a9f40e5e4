"""Names, configuration, event validation and backoff: the pieces every adapter relies on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bridge_cli.config import load_settings
from bridge_cli.engine import backoff_seconds
from bridge_cli.errors import ConfigError, ValidationError
from bridge_cli.events import Event, Operation, SubmitRequest, build_job, event_from_request
from bridge_cli.identifiers import (
    parse_source_table,
    parse_target_table,
    quote_backtick,
    quote_bracket,
    quote_double,
    split_name,
)


@pytest.mark.parametrize("text,parts", [
    ("`mi-catalog`.`mi-schema`.t", ["mi-catalog", "mi-schema", "t"]),
    ("mi-catalog.mi-schema.t", ["mi-catalog", "mi-schema", "t"]),
    ("`000-sql-databricks-bridge`.`events`.bridge_events",
     ["000-sql-databricks-bridge", "events", "bridge_events"]),
    ("  dbo.t  ", ["dbo", "t"]),
    ("[dbo].[users]", ["dbo", "users"]),  # SQL Server's quoting
    ("c.s.[t]", ["c", "s", "t"]),
])
def test_split_name_accepts_backticks_or_not(text: str, parts: list[str]) -> None:
    assert split_name(text) == parts


@pytest.mark.parametrize("text", [
    "c.s.t; DROP TABLE x", "c.s.`t", "c.s.t'--", "c.s.[t", "c.s.[t]x", "c.s.[t;x]", "c..t", "c.s.t x", "`a.b`.s.t",
    "c.s.t\nx", "c.s.t\n;", "c.s.ta\u00f1o",
])
def test_hostile_or_broken_source_names_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_source_table(text)


def test_target_names_are_schema_dot_table_and_default_to_dbo() -> None:
    assert parse_target_table("t").parts == ("dbo", "t")
    assert parse_target_table("`mi-esquema`.t").parts == ("mi-esquema", "t")
    with pytest.raises(ValidationError, match="schema.table"):
        parse_target_table("db.dbo.t")


def test_quoting_doubles_the_closing_character() -> None:
    assert quote_double('a"b') == '"a""b"'
    assert quote_bracket("a]b") == "[a]]b]"
    assert quote_backtick("a`b") == "`a``b`"


# -- configuration ---------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bridge.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_no_config_means_the_embedded_default(tmp_path: Path) -> None:
    settings = load_settings(env={"BRIDGE_HOME": str(tmp_path / "h")})
    assert (settings.lake.kind, settings.target.kind, settings.profile) == ("duckdb", "sqlite", "local")
    assert settings.max_delete_rows == 10000
    assert settings.home == tmp_path / "h"


def test_profiles_env_expansion_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, """
default_profile: a
profiles:
  a:
    lake: {kind: duckdb, path: "${DATA}/lake"}
    target: {kind: sqlite}
    max_delete_rows: 10
    allowed_targets: ["dbo.*"]
  b:
    lake: {kind: duckdb}
    target: {kind: sqlite}
""")
    env = {"DATA": "/data", "BRIDGE_MAX_ATTEMPTS": "9"}
    settings = load_settings(path, env=env)
    assert settings.profile == "a"
    assert settings.lake.get("path") == "/data/lake"
    assert (settings.max_delete_rows, settings.max_attempts) == (10, 9)
    assert settings.allowed_targets == ("dbo.*",)
    assert load_settings(path, "b", env=env).profile == "b"
    assert load_settings(path, env={**env, "BRIDGE_PROFILE": "b"}).profile == "b"


@pytest.mark.parametrize("body,env,message", [
    ("profiles:\n  p:\n    lake: {kind: oracle}\n    target: {kind: sqlite}\n", {},
     "profiles.p.lake.kind: 'oracle' is not one of duckdb, databricks"),
    ("profiles:\n  p:\n    lake: {kind: duckdb}\n", {}, "profiles.p.target: missing"),
    ("profiles:\n  p:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n    max_delete_rows: lots\n",
     {}, "profiles.p.max_delete_rows: expected an integer, got 'lots'"),
    ("profiles:\n  p:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n    colour: red\n",
     {}, "profiles.p.colour: unknown setting"),
    ("profiles:\n  p:\n    lake: {kind: duckdb, path: '${NOPE}'}\n    target: {kind: sqlite}\n",
     {}, "profiles.p.lake.path: environment variable NOPE is not set"),
    ("profiles:\n  p:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n",
     {"BRIDGE_MAX_ATTEMPTS": "0"}, "BRIDGE_MAX_ATTEMPTS: must be at least 1"),
    ("profiles:\n  p:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n    ordering: fifo\n",
     {}, "profiles.p.ordering: 'fifo' is not one of per_target, none"),
    ("profiles:\n  p:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n",
     {"BRIDGE_ORDERING": "strict"}, "BRIDGE_ORDERING: 'strict' is not one of per_target, none"),
    ("profiles: [\n", {}, "not valid YAML"),
    ("lake: {kind: duckdb}\n", {}, "expected a 'profiles:' mapping"),
])
def test_config_errors_are_one_line_naming_key_and_file(
    tmp_path: Path, body: str, env: dict[str, str], message: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    if "BRIDGE_" not in message:
        assert path in text


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles:\n  a:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n")
    with pytest.raises(ConfigError, match=r"no profile 'prod' \(profiles: a\)"):
        load_settings(path, "prod", env={})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.yaml"), env={})


# -- events ----------------------------------------------------------------------------------
def test_submit_validation_matches_the_worker() -> None:
    event = event_from_request(SubmitRequest(
        operation=Operation.DELETE, target_table="dbo.t", primary_keys=("username",),
        filter_conditions={"username": ["a", "b"]}))
    assert event.event_id.startswith("delete-") and len(event.event_id) == len("delete-") + 12
    assert event.source_table == "" and event.status == "pending" and event.priority == 5
    job = build_job(event)
    assert job.filters == {"username": ["a", "b"]}


@pytest.mark.parametrize("request_,message", [
    (SubmitRequest(Operation.DELETE, "dbo.t", ("username",), filter_conditions={"other": 1}),
     "must appear in the filter"),
    (SubmitRequest(Operation.DELETE, "dbo.t", (), source_table="c.s.t", filter_conditions={"a": 1}),
     "DELETE takes no source"),
    (SubmitRequest(Operation.INSERT, "dbo.t", ("k",), source_table="c.s.t", priority=11),
     "priority must be between 1 and 10"),
    (SubmitRequest(Operation.INSERT, "dbo.t", ("k",), source_table="c.s.t",
                   filter_conditions={"a": 1}), "only for DELETE"),
    (SubmitRequest(Operation.DELETE, "dbo.t", (), filter_conditions={"a": {"$gt": 1}}),
     "must be a string, number, boolean, null"),
    (SubmitRequest(Operation.DELETE, "dbo.t", (), filter_conditions={"a": []}), "empty list"),
    (SubmitRequest(Operation.UPDATE, "dbo.t", ("k; --",), source_table="c.s.t"),
     "invalid primary key column"),
])
def test_bad_submissions_are_refused(request_: SubmitRequest, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        event_from_request(request_)


def test_operation_is_case_insensitive_in_stored_events() -> None:
    job = build_job(Event("e", operation="insert", source_table="c.s.t", target_table="dbo.t",
                          primary_keys=["k"]))
    assert job.operation is Operation.INSERT


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    first = [backoff_seconds(1, 10, 600, rng) for _ in range(200)]
    third = [backoff_seconds(3, 10, 600, rng) for _ in range(200)]
    capped = [backoff_seconds(30, 10, 600, rng) for _ in range(200)]
    assert min(first) >= 5 and max(first) <= 10
    assert min(third) >= 20 and max(third) <= 40
    assert max(capped) <= 600 and len(set(first)) > 100
