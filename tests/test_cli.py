"""Every `bridge` command through Typer's CliRunner: exit codes and what a user would see."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bridge_cli.cli import app
from tests.backends import Col, LocalPair

runner = CliRunner()

# Wide enough that rich never folds an event id; no colour forced in from the outer shell.
BASE_ENV: dict[str, str | None] = {
    "COLUMNS": "250",
    "FORCE_COLOR": None,
    "NO_COLOR": None,
    "TTY_COMPATIBLE": None,
    "TTY_INTERACTIVE": None,
}
EVENT_ID = re.compile(r"^(insert|update|delete)-[0-9a-f]{12}$")
ANSI = re.compile(r"\x1b\[")


def run(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    return runner.invoke(app, list(args), env={**BASE_ENV, **(env or {})})


# rich treats the output as a terminal (tables), without colour codes to match around.
TERMINAL = {"TTY_COMPATIBLE": "1", "NO_COLOR": "1"}


def show(result: Result) -> str:
    return f"exit {result.exit_code}\n--stdout--\n{result.stdout}\n--stderr--\n{result.stderr}"


def submit(*args: str, env: Mapping[str, str | None] | None = None) -> str:
    result = run("submit", *args, "-q", env=env)
    assert result.exit_code == 0, show(result)
    event_id = result.stdout.strip()
    assert EVENT_ID.match(event_id), show(result)
    return event_id


def event(event_id: str) -> dict[str, Any]:
    result = run("status", event_id, "--json")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def all_events() -> list[dict[str, Any]]:
    result = run("status", "--json", "--limit", "1000")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- fixtures: real source and target tables ------------------------------------------------
USERS_TARGET = "dbo.users"
NEW_USERS = "lakecat.sales.new_users"
CHANGED_USERS = "lakecat.sales.changed_users"


@pytest.fixture
def users(local: LocalPair) -> LocalPair:
    """A source of 3 new users, a source of 2 changes, and an empty target users table."""
    local.create_source(
        NEW_USERS,
        {"username": "text", "team": "text", "is_admin": "bool"},
        [("ana", "a", False), ("bruno", "a", False), ("carla", "b", True)],
    )
    local.create_source(
        CHANGED_USERS, {"username": "text", "is_admin": "bool"}, [("ana", True), ("bruno", True)]
    )
    local.create_target(
        USERS_TARGET,
        [
            Col("id", "int", identity=True),
            Col("username", "text", unique=True, not_null=True),
            Col("team", "text"),
            Col("is_admin", "bool"),
        ],
    )
    return local


def insert_users(*extra: str) -> str:
    return submit("insert", "--source", NEW_USERS, "--target", USERS_TARGET, "--pk", "username",
                  *extra)


def user_rows(pair: LocalPair) -> list[tuple[Any, ...]]:
    return pair.target_rows(USERS_TARGET, ["username", "team", "is_admin"], "username")


def failing_insert() -> str:
    """An INSERT into a target table that does not exist: it fails when processed."""
    return submit("insert", "--source", NEW_USERS, "--target", "dbo.missing", "--pk", "username")


# -- top level -------------------------------------------------------------------------------
def test_version_and_help(bridge_home: Path) -> None:
    result = run("--version")
    assert result.exit_code == 0, show(result)
    assert re.match(r"^bridge \d+\.\d+\.\d+", result.stdout)

    result = run("--help")
    assert result.exit_code == 0, show(result)
    for command in ("init", "submit", "status", "wait", "process-once", "worker", "requeue"):
        assert command in result.stdout


# -- init ------------------------------------------------------------------------------------
def test_init_creates_then_reports_up_to_date(bridge_home: Path) -> None:
    first = run("init")
    assert first.exit_code == 0, show(first)
    assert "created event table" in first.stdout
    assert "created ledger" in first.stdout
    assert (bridge_home / "lake").is_dir()
    assert (bridge_home / "target").is_dir()

    second = run("init")
    assert second.exit_code == 0, show(second)
    assert "created" not in second.stdout
    assert second.stdout.count("up to date") == 2


SEED_ONLY_DDL = (
    "CREATE TABLE {events} (event_id VARCHAR NOT NULL, operation VARCHAR, source_table VARCHAR, "
    "target_table VARCHAR, primary_keys VARCHAR[], priority INTEGER, status VARCHAR, "
    "rows_expected INTEGER, rows_affected INTEGER, discrepancy INTEGER, warning VARCHAR, "
    "error_message VARCHAR, filter_conditions VARCHAR, metadata VARCHAR, created_at TIMESTAMP, "
    "processed_at TIMESTAMP)"
)
LIFECYCLE = ("attempts", "worker_id", "claim_token", "lease_expires_at", "next_attempt_at",
             "updated_at")


def test_init_on_a_seed_only_event_table_asks_for_upgrade(local: LocalPair) -> None:
    local.event_sql("DROP TABLE {events}")
    local.event_sql(SEED_ONLY_DDL)

    refused = run("init")
    assert refused.exit_code == 5, show(refused)
    assert "bridge init --upgrade" in refused.stderr
    assert "attempts" in refused.stderr  # names what is missing

    upgraded = run("init", "--upgrade")
    assert upgraded.exit_code == 0, show(upgraded)
    for column in LIFECYCLE:
        assert f"added column {column}" in upgraded.stdout

    again = run("init")
    assert again.exit_code == 0, show(again)
    assert "is up to date" in again.stdout
    # and the upgraded table takes events
    event_id = submit("delete", "--target", "dbo.x", "--filter", '{"k": 1}')
    assert event(event_id)["status"] == "pending"


# -- submit ----------------------------------------------------------------------------------
def test_submit_prints_the_id_and_a_note(local: LocalPair) -> None:
    result = run("submit", "insert", "--source", NEW_USERS, "--target", USERS_TARGET,
                 "--pk", "username", "--priority", "3")
    assert result.exit_code == 0, show(result)
    event_id = result.stdout.strip()
    assert EVENT_ID.match(event_id) and event_id.startswith("insert-")
    assert f"submitted INSERT event {event_id} (priority 3)" in result.stderr
    stored = event(event_id)
    assert stored["status"] == "pending"
    assert stored["priority"] == 3
    assert stored["primary_keys"] == ["username"]


def test_submit_update_and_delete(local: LocalPair) -> None:
    update = submit("update", "--source", CHANGED_USERS, "--target", USERS_TARGET,
                    "--pk", "username", "--expected", "2")
    delete = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": ["ana", "bo"]}')
    assert update.startswith("update-") and delete.startswith("delete-")
    assert event(update)["rows_expected"] == 2
    assert event(delete)["filter_conditions"] == {"username": ["ana", "bo"]}


def test_submit_quiet_prints_only_the_id(local: LocalPair) -> None:
    result = run("submit", "delete", "--target", USERS_TARGET, "--filter", '{"username": "x"}',
                 "-q")
    assert result.exit_code == 0, show(result)
    assert EVENT_ID.match(result.stdout.strip())
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_submit_json_prints_the_pending_event(local: LocalPair) -> None:
    result = run("submit", "insert", "--source", NEW_USERS, "--target", USERS_TARGET,
                 "--pk", "username", "--json")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    assert data["status"] == "pending"
    assert data["operation"] == "INSERT"
    assert EVENT_ID.match(data["event_id"])
    assert event(data["event_id"])["status"] == "pending"


@pytest.mark.parametrize("priority", ["0", "11"])
def test_submit_priority_out_of_range_is_a_usage_error(local: LocalPair, priority: str) -> None:
    result = run("submit", "insert", "--source", NEW_USERS, "--target", USERS_TARGET,
                 "--pk", "username", "--priority", priority)
    assert result.exit_code == 2, show(result)
    assert "--priority" in result.stderr
    assert all_events() == []


def test_submit_delete_without_filter_is_a_usage_error(local: LocalPair) -> None:
    result = run("submit", "delete", "--target", USERS_TARGET)
    assert result.exit_code == 2, show(result)
    assert "DELETE needs --filter" in result.stderr
    assert all_events() == []


def test_submit_filter_that_is_not_json(local: LocalPair) -> None:
    result = run("submit", "delete", "--target", USERS_TARGET, "--filter", "username=ana")
    assert result.exit_code == 2, show(result)
    assert "--filter" in result.stderr
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.output
    assert all_events() == []


def test_submit_hostile_target_name_is_refused_and_nothing_written(local: LocalPair) -> None:
    result = run("submit", "delete", "--target", "dbo.t; DROP TABLE x",
                 "--filter", '{"username": "ana"}')
    assert result.exit_code == 2, show(result)
    assert "target table" in result.stderr
    assert "DROP TABLE" in result.stderr  # quotes what was refused
    assert "Traceback" not in result.output
    listed = run("status", "--json")
    assert listed.exit_code == 0, show(listed)
    assert json.loads(listed.stdout) == []


def test_submit_wait_with_zero_timeout_on_pending_event_exits_3(local: LocalPair) -> None:
    result = run("submit", "insert", "--source", NEW_USERS, "--target", USERS_TARGET,
                 "--pk", "username", "--wait", "--timeout", "0")
    assert result.exit_code == 3, show(result)
    event_id = result.stdout.strip().splitlines()[0]
    assert EVENT_ID.match(event_id)
    assert "not processed within 0s" in result.stderr
    assert event(event_id)["status"] == "pending"


# -- status ----------------------------------------------------------------------------------
def test_status_table_shows_events_and_counts(users: LocalPair) -> None:
    done = insert_users()
    assert run("process-once").exit_code == 0
    waiting = [submit("delete", "--target", USERS_TARGET, "--filter", f'{{"username": "u{i}"}}')
               for i in range(2)]

    result = run("status", env=TERMINAL)
    assert result.exit_code == 0, show(result)
    for event_id in (done, *waiting):
        assert event_id in result.stdout
    assert "counts by status: completed: 1, pending: 2" in result.stdout


def test_status_of_empty_table_says_no_events(local: LocalPair) -> None:
    result = run("status", env=TERMINAL)
    assert result.exit_code == 0, show(result)
    assert "no events" in result.stdout


def test_status_json_one_event_is_an_object_all_events_an_array(local: LocalPair) -> None:
    first = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    second = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "b"}')

    one = run("status", first, "--json")
    assert one.exit_code == 0, show(one)
    data = json.loads(one.stdout)
    assert isinstance(data, dict) and data["event_id"] == first

    many = run("status", "--json")
    assert many.exit_code == 0, show(many)
    listed = json.loads(many.stdout)
    assert isinstance(listed, list)
    assert sorted(e["event_id"] for e in listed) == sorted([first, second])


def test_status_single_event_table(local: LocalPair) -> None:
    event_id = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    result = run("status", event_id, env=TERMINAL)
    assert result.exit_code == 0, show(result)
    assert f"event {event_id}" in result.stdout
    assert "pending" in result.stdout
    assert "dbo.users" in result.stdout


def test_status_unknown_event_exits_4(local: LocalPair) -> None:
    result = run("status", "nope")
    assert result.exit_code == 4, show(result)
    assert "no event with id 'nope'" in result.stderr


def test_status_filter_by_status(users: LocalPair) -> None:
    bad = failing_insert()
    assert run("process-once").exit_code == 0
    pending = insert_users()

    table = run("status", "--status", "failed")
    assert table.exit_code == 0, show(table)
    assert bad in table.stdout
    assert pending not in table.stdout

    listed = run("status", "--status", "failed", "--json")
    assert listed.exit_code == 0, show(listed)
    assert [e["event_id"] for e in json.loads(listed.stdout)] == [bad]

    wrong = run("status", "--status", "broken")
    assert wrong.exit_code == 2, show(wrong)


def test_status_before_init_exits_5_with_hint(bridge_home: Path) -> None:
    result = run("status")
    assert result.exit_code == 5, show(result)
    assert "bridge init" in result.stderr


# -- wait ------------------------------------------------------------------------------------
def test_wait_completed_exits_0(users: LocalPair) -> None:
    event_id = insert_users()
    assert run("process-once").exit_code == 0
    result = run("wait", event_id, "--timeout", "5")
    assert result.exit_code == 0, show(result)
    assert "completed" in result.stdout

    as_json = run("wait", event_id, "--json")
    assert as_json.exit_code == 0, show(as_json)
    assert json.loads(as_json.stdout)["status"] == "completed"


def test_wait_failed_exits_1_and_shows_why(users: LocalPair) -> None:
    event_id = failing_insert()
    assert run("process-once").exit_code == 0
    result = run("wait", event_id, "--timeout", "5")
    assert result.exit_code == 1, show(result)
    assert "failed" in result.stdout
    assert "does not exist" in result.stdout


def test_wait_discrepancy_only_fails_with_strict(users: LocalPair) -> None:
    # 2 changed users but 5 expected: completed, with a discrepancy of 3.
    insert_users()
    event_id = submit("update", "--source", CHANGED_USERS, "--target", USERS_TARGET,
                      "--pk", "username", "--expected", "5")
    assert run("process-once").exit_code == 0
    stored = event(event_id)
    assert stored["status"] == "completed" and stored["discrepancy"] == 3

    lenient = run("wait", event_id, "--timeout", "5")
    assert lenient.exit_code == 0, show(lenient)
    strict = run("wait", event_id, "--timeout", "5", "--strict")
    assert strict.exit_code == 1, show(strict)
    assert "discrepancy" in strict.stdout


def test_wait_unknown_event_exits_4(local: LocalPair) -> None:
    result = run("wait", "nope", "--timeout", "1")
    assert result.exit_code == 4, show(result)
    assert "nope" in result.stderr


def test_wait_pending_times_out_with_3_and_no_progress_off_terminal(local: LocalPair) -> None:
    event_id = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    result = run("wait", event_id, "--timeout", "0.2", "--interval", "1")
    assert result.exit_code == 3, show(result)
    assert "not processed within 0.2s (status: pending)" in result.stderr
    # not a terminal: the only thing on stderr is the one error line, no progress chatter
    assert "waiting for" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1

    as_json = run("wait", event_id, "--timeout", "0", "--json")
    assert as_json.exit_code == 3, show(as_json)
    assert json.loads(as_json.stdout)["status"] == "pending"


def test_wait_with_bad_bridge_yaml_exits_5_with_one_line(local: LocalPair, tmp_path: Path) -> None:
    (tmp_path / "bridge.yaml").write_text(
        "profiles:\n  local:\n    lake:\n      kind: oracle\n    target:\n      kind: sqlite\n",
        encoding="utf-8",
    )
    # default terminal width, as a log file or a CI job sees it
    result = run("wait", "some-event", "--timeout", "1", env={"COLUMNS": None})
    assert result.exit_code == 5, show(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, show(result)
    assert "lake.kind" in lines[0]
    assert "bridge.yaml" in lines[0]
    assert "oracle" in lines[0]
    assert "Traceback" not in result.output


# -- process-once ----------------------------------------------------------------------------
def test_process_once_applies_insert_update_delete(users: LocalPair) -> None:
    inserted = insert_users()
    updated = submit("update", "--source", CHANGED_USERS, "--target", USERS_TARGET,
                     "--pk", "username")
    deleted = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "carla"}')

    result = run("process-once", env=TERMINAL)
    assert result.exit_code == 0, show(result)
    assert "processed events" in result.stdout
    for event_id in (inserted, updated, deleted):
        assert event_id in result.stdout
    assert result.stdout.count("completed") == 3
    assert user_rows(users) == [("ana", "a", 1), ("bruno", "a", 1)]
    assert {e["status"] for e in all_events()} == {"completed"}
    assert event(inserted)["rows_affected"] == 3
    assert event(updated)["rows_affected"] == 2
    assert event(deleted)["rows_affected"] == 1

    nothing = run("process-once")
    assert nothing.exit_code == 0, show(nothing)
    assert "no pending events" in nothing.stderr


def test_process_once_json(users: LocalPair) -> None:
    event_id = insert_users()
    result = run("process-once", "--json")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert [(r["event_id"], r["status"], r["rows_affected"]) for r in data] == [
        (event_id, "completed", 3)
    ]


def test_process_once_exits_0_when_an_event_failed(users: LocalPair) -> None:
    bad = failing_insert()
    good = insert_users()
    result = run("process-once")
    assert result.exit_code == 0, show(result)
    assert bad in result.stdout and good in result.stdout
    assert "failed" in result.stdout
    assert "dbo.missing does not exist" in result.stdout
    assert event(bad)["status"] == "failed"
    assert event(good)["status"] == "completed"
    assert len(user_rows(users)) == 3


def test_process_once_max_events_processes_one(users: LocalPair) -> None:
    first = insert_users()
    second = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "ana"}')
    result = run("process-once", "--max-events", "1")
    assert result.exit_code == 0, show(result)
    assert first in result.stdout
    assert second not in result.stdout
    assert event(first)["status"] == "completed"
    assert event(second)["status"] == "pending"


def test_process_once_event_id_processes_only_that_one(users: LocalPair) -> None:
    users.create_target("dbo.other", [Col("username", "text", pk=True)])
    first = insert_users()
    second = submit("delete", "--target", "dbo.other", "--filter", '{"username": "ana"}', "--priority", "9")
    result = run("process-once", "--event-id", second)
    assert result.exit_code == 0, show(result)
    assert second in result.stdout
    assert first not in result.stdout
    assert event(second)["status"] == "completed"
    assert event(first)["status"] == "pending"

    again = run("process-once", "--event-id", second)
    assert again.exit_code == 0, show(again)
    assert f"event {second} is completed: nothing to do" in again.stderr
    assert event(first)["status"] == "pending"

    unknown = run("process-once", "--event-id", "nope")
    assert unknown.exit_code == 4, show(unknown)


def test_process_once_event_id_refuses_an_event_waiting_behind_its_target(users: LocalPair) -> None:
    first = insert_users()
    second = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "ana"}', "--priority", "9")
    result = run("process-once", "--event-id", second)
    assert result.exit_code == 1, show(result)
    assert f"waits for 1 earlier event(s) on target {USERS_TARGET}, first {first} (pending)" in result.stderr
    assert event(second)["status"] == "pending" and event(first)["status"] == "pending"

    # Applying the first one lets the second run.
    assert run("process-once", "--event-id", first).exit_code == 0
    after = run("process-once", "--event-id", second)
    assert after.exit_code == 0, show(after)
    assert event(second)["status"] == "completed"


def test_process_once_without_init_exits_5_with_hint(bridge_home: Path) -> None:
    result = run("process-once")
    assert result.exit_code == 5, show(result)
    assert "run `bridge init`" in result.stderr
    assert "Traceback" not in result.output


# -- worker (the long-running loop, bounded by --max-events) ---------------------------------
def test_worker_max_events_processes_and_exits(users: LocalPair) -> None:
    event_id = insert_users()
    result = run("worker", "--max-events", "1", "--poll-interval", "0.05")
    assert result.exit_code == 0, show(result)
    assert "started" in result.stderr
    assert "worker stopped after 1 event(s)" in result.stderr
    assert event(event_id)["status"] == "completed"
    assert len(user_rows(users)) == 3


# -- requeue ---------------------------------------------------------------------------------
def test_requeue_failed_event_then_processing_works(users: LocalPair) -> None:
    bad = failing_insert()
    assert run("process-once").exit_code == 0
    assert event(bad)["status"] == "failed"

    result = run("requeue", bad)
    assert result.exit_code == 0, show(result)
    assert bad in result.stdout and "requeued" in result.stdout
    stored = event(bad)
    assert stored["status"] == "pending"
    assert stored["error_message"] is None

    # fix the cause, then it goes through
    users.create_target("dbo.missing", [Col("username", "text", pk=True), Col("team"),
                                        Col("is_admin", "bool")])
    assert run("process-once").exit_code == 0
    assert event(bad)["status"] == "completed"
    assert users.target_rows("dbo.missing", ["username"], "username") == [
        ("ana",), ("bruno",), ("carla",)
    ]


def test_requeue_all_failed(users: LocalPair) -> None:
    bad = [failing_insert() for _ in range(2)]
    assert run("process-once").exit_code == 0
    result = run("requeue", "--failed", "--json")
    assert result.exit_code == 0, show(result)
    assert sorted(r["event_id"] for r in json.loads(result.stdout) if r["requeued"]) == sorted(bad)
    assert {event(e)["status"] for e in bad} == {"pending"}


def test_requeue_completed_event_is_refused(users: LocalPair) -> None:
    done = insert_users()
    assert run("process-once").exit_code == 0
    result = run("requeue", done)
    assert result.exit_code == 1, show(result)
    assert "never requeued" in result.output
    assert event(done)["status"] == "completed"


def test_requeue_dry_run_changes_nothing(users: LocalPair) -> None:
    bad = failing_insert()
    assert run("process-once").exit_code == 0
    result = run("requeue", bad, "--dry-run")
    assert result.exit_code == 0, show(result)
    assert "would requeue" in result.stdout
    stored = event(bad)
    assert stored["status"] == "failed"
    assert "does not exist" in stored["error_message"]


def _mark_processing(pair: LocalPair, event_id: str, lease_expires_at: datetime) -> None:
    pair.event_sql(
        "UPDATE {events} SET status = 'processing', worker_id = 'gone-host:1', "
        "claim_token = 'tok', attempts = 1, lease_expires_at = ? WHERE event_id = ?",
        [lease_expires_at, event_id],
    )


def test_requeue_stale_takes_expired_leases_only(users: LocalPair) -> None:
    stale = insert_users()
    live = insert_users()
    _mark_processing(users, stale, utcnow() - timedelta(minutes=5))
    _mark_processing(users, live, utcnow() + timedelta(minutes=5))

    result = run("requeue", "--stale")
    assert result.exit_code == 0, show(result)
    assert stale in result.stdout
    assert live not in result.stdout
    assert event(stale)["status"] == "pending"
    assert event(live)["status"] == "processing"

    refused = run("requeue", live, "--stale")
    assert refused.exit_code == 1, show(refused)
    assert "being processed by gone-host:1" in refused.output
    assert event(live)["status"] == "processing"
    assert users.lake.get_event(live).claim_token == "tok"


def test_requeue_unknown_event_exits_4(local: LocalPair) -> None:
    result = run("requeue", "nope")
    assert result.exit_code == 4, show(result)
    assert "no event with id 'nope'" in result.stderr


def test_requeue_needs_something_to_requeue(local: LocalPair) -> None:
    result = run("requeue")
    assert result.exit_code == 2, show(result)
    assert "--failed" in result.stderr


# -- configuration ---------------------------------------------------------------------------
TWO_PROFILES = """\
default_profile: first
profiles:
  first:
    lake: {kind: duckdb, path: first/lake}
    target: {kind: sqlite, path: first/target}
  second:
    lake: {kind: duckdb, path: "${DATA_DIR}/lake"}
    target: {kind: sqlite, path: "${DATA_DIR}/target"}
"""


def test_profiles_from_bridge_yaml(bridge_home: Path, tmp_path: Path) -> None:
    (tmp_path / "bridge.yaml").write_text(TWO_PROFILES, encoding="utf-8")
    data = tmp_path / "data-dir"
    env = {"DATA_DIR": str(data)}

    default = run("init", env=env)
    assert default.exit_code == 0, show(default)
    assert "first/lake" in default.stdout
    assert (tmp_path / "first" / "lake").is_dir()
    assert not data.exists()

    chosen = run("--profile", "second", "init", env=env)
    assert chosen.exit_code == 0, show(chosen)
    assert str(data / "lake") in chosen.stdout  # ${DATA_DIR} expanded
    assert (data / "lake").is_dir() and (data / "target").is_dir()

    # BRIDGE_PROFILE picks it too: the event written there is not in the first profile
    event_id = submit("delete", "--target", "dbo.t", "--filter", '{"k": 1}',
                      env={**env, "BRIDGE_PROFILE": "second"})
    in_second = run("status", event_id, "--json", env={**env, "BRIDGE_PROFILE": "second"})
    assert in_second.exit_code == 0, show(in_second)
    in_first = run("status", event_id, env=env)
    assert in_first.exit_code == 4, show(in_first)

    unknown = run("--profile", "third", "status", env=env)
    assert unknown.exit_code == 5, show(unknown)
    assert "third" in unknown.stderr and "first, second" in unknown.stderr


def test_missing_variable_in_bridge_yaml_exits_5_naming_it(bridge_home: Path,
                                                            tmp_path: Path) -> None:
    (tmp_path / "bridge.yaml").write_text(TWO_PROFILES, encoding="utf-8")
    result = run("--profile", "second", "init", env={"DATA_DIR": None})
    assert result.exit_code == 5, show(result)
    assert "DATA_DIR" in result.stderr
    assert "is not set" in result.stderr
    assert not (tmp_path / "first").exists()


def test_bad_override_in_environment_exits_5(local: LocalPair) -> None:
    result = run("status", env={"BRIDGE_MAX_DELETE_ROWS": "lots"})
    assert result.exit_code == 5, show(result)
    assert "BRIDGE_MAX_DELETE_ROWS" in result.stderr


def test_max_delete_rows_from_environment_stops_a_big_delete(users: LocalPair) -> None:
    insert_users()
    assert run("process-once").exit_code == 0
    before = user_rows(users)
    assert len(before) == 3

    event_id = submit("delete", "--target", USERS_TARGET, "--filter", '{"team": "a"}')
    result = run("process-once", env={"BRIDGE_MAX_DELETE_ROWS": "1"})
    assert result.exit_code == 0, show(result)
    assert "failed" in result.stdout
    stored = event(event_id)
    assert stored["status"] == "failed"
    assert "max_delete_rows=1" in stored["error_message"]
    assert "split" in stored["error_message"]
    assert "max_delete_rows" in result.stdout
    assert user_rows(users) == before  # nothing deleted


# -- colour ----------------------------------------------------------------------------------
def _colourful(env: Mapping[str, str | None]) -> str:
    """Outputs that use styles: tables, statuses, an error; FORCE_COLOR stands for a terminal."""
    event_id = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    outputs = [run("status", env=env), run("status", event_id, env=env),
               run("process-once", env=env), run("status", "nope", env=env)]
    return "".join(r.output for r in outputs)


def test_colour_on_a_terminal_without_no_color(users: LocalPair) -> None:
    # the control for the NO_COLOR test below: styles do reach a terminal
    assert ANSI.search(_colourful({"FORCE_COLOR": "1"}))


def test_no_color_means_no_escape_codes(users: LocalPair) -> None:
    assert not ANSI.search(_colourful({"NO_COLOR": "1"}))
    assert not ANSI.search(_colourful({"NO_COLOR": "1", "FORCE_COLOR": "1"}))


# -- untrusted text is shown verbatim --------------------------------------------------------
def test_error_message_with_brackets_is_shown_verbatim(local: LocalPair) -> None:
    for odd in ("[/oops]", "[bold]x"):
        result = run("status", odd)
        assert result.exit_code == 4, show(result)
        assert f"no event with id '{odd}'" in result.stderr
        assert "Traceback" not in result.output


def test_event_row_written_by_a_job_is_shown_verbatim(local: LocalPair) -> None:
    # A Databricks job writes rows directly; SQL Server people write [schema].[table].
    odd_id, odd_target = "job-[/1]", "[dbo].[MarketScopeAccess]"
    local.event_sql(
        "INSERT INTO {events} (event_id, operation, source_table, target_table, primary_keys, "
        "priority, status, created_at) VALUES (?, 'INSERT', 'c.s.t', ?, ['id'], 5, 'pending', ?)",
        [odd_id, odd_target, utcnow()],
    )
    for args in (["status"], ["status", odd_id], ["process-once"], ["status", odd_id]):
        result = run(*args)
        assert result.exit_code == 0, show(result)
        assert odd_id in result.stdout, show(result)
        assert odd_target in result.stdout, show(result)
    assert event(odd_id)["status"] == "failed"

    requeued = run("requeue", odd_id)
    assert requeued.exit_code == 0, show(requeued)
    assert odd_id in requeued.stdout


def test_worker_without_init_exits_5_with_a_hint(bridge_home) -> None:
    result = CliRunner().invoke(app, ["worker", "--poll-interval", "0.1"])
    assert result.exit_code == 5
    assert "bridge init" in result.output


@pytest.mark.parametrize("option,named", [
    ("driver: odbc", "target.driver: 'odbc'"),
    ("driver: pymssql\n      write_method: arrays",
     "write_method: 'arrays' is not one of auto, bulk, values (driver pymssql)"),
    ("driver: mssql-python\n      write_method: values",
     "write_method: 'values' is not one of auto, bulk, arrays (driver mssql-python)"),
])
def test_an_unknown_sql_server_driver_or_method_exits_5_with_one_line(
    bridge_home: Path, tmp_path: Path, option: str, named: str
) -> None:
    (tmp_path / "bridge.yaml").write_text(
        "profiles:\n  prod:\n    lake:\n      kind: duckdb\n    target:\n      kind: sqlserver\n"
        f"      host: 127.0.0.1\n      database: d\n      user: u\n      password: pw-0123\n      {option}\n",
        encoding="utf-8",
    )
    result = run("init", env={"COLUMNS": None})
    assert result.exit_code == 5, show(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, show(result)
    assert named in lines[0] and "bridge.yaml" in lines[0]
