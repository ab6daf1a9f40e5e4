"""Submit, wait and the queue as scripts meet them: failures say why, an explicit id means now."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests import test_cli
from tests.backends import LocalPair
from tests.test_cli import (
    CHANGED_USERS,
    NEW_USERS,
    TERMINAL,
    USERS_TARGET,
    all_events,
    event,
    failing_insert,
    insert_users,
    run,
    show,
    submit,
    user_rows,
)

users = test_cli.users  # the fixture: a users source and target


def test_a_failed_wait_says_why_on_stderr_even_when_quiet(users: LocalPair) -> None:
    failing = failing_insert()
    assert run("process-once").exit_code == 0
    waited = run("wait", failing, "--timeout", "5")
    assert waited.exit_code == 1, show(waited)
    assert f"event {failing} failed: target table dbo.missing does not exist" in waited.stderr



def test_submit_wait_quiet_prints_the_id_and_says_why_it_failed(users: LocalPair) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=users.engine().run_worker, args=(stop, 0.05))
    worker.start()
    try:
        quiet = run("submit", "insert", "--source", NEW_USERS, "--target", "dbo.missing",
                    "--pk", "username", "-q", "--wait", "--timeout", "60",
                    env={"BRIDGE_POLL_INTERVAL": "1"})
    finally:
        stop.set()
        worker.join()
    assert quiet.exit_code == 1, show(quiet)
    event_id = quiet.stdout.strip()
    assert event(event_id)["status"] == "failed"
    assert f"event {event_id} failed: target table dbo.missing does not exist" in quiet.stderr


def test_wait_strict_says_which_warning_made_it_fail(users: LocalPair) -> None:
    insert_users()
    event_id = submit("update", "--source", CHANGED_USERS, "--target", USERS_TARGET,
                      "--pk", "username", "--expected", "5")
    assert run("process-once").exit_code == 0
    strict = run("wait", event_id, "--strict", "--json")
    assert strict.exit_code == 1, show(strict)
    assert f"event {event_id} completed, but --strict: rows_expected=5 but rows_affected=2" in strict.stderr


def delayed(local: LocalPair, event_id: str) -> None:
    """As after a transient error: pending, with a retry an hour away."""
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1)
    local.set_event_fields(event_id, attempts=1, next_attempt_at=later)


def test_an_explicit_id_runs_an_event_waiting_out_its_retry_delay_now(users: LocalPair) -> None:
    event_id = insert_users()
    delayed(users, event_id)
    assert "no pending events" in run("process-once").stderr  # not due for a worker
    result = run("process-once", "--event-id", event_id)
    assert result.exit_code == 0, show(result)
    assert event(event_id)["status"] == "completed"
    assert len(user_rows(users)) == 3


def test_requeue_clears_a_retry_delay(users: LocalPair) -> None:
    event_id = insert_users()
    delayed(users, event_id)
    result = run("requeue", event_id)
    assert result.exit_code == 0, show(result)
    assert event(event_id)["next_attempt_at"] is None
    assert run("process-once").exit_code == 0
    assert event(event_id)["status"] == "completed"
    again = run("requeue", event_id)
    assert again.exit_code == 1 and "completed events are never requeued" in again.stderr


def test_status_on_an_event_table_made_from_the_guide_says_run_init_upgrade(local: LocalPair) -> None:
    local.recreate_seed_event_table()
    for args in (["status"], ["status", "--summary"], ["status", "nope"]):
        result = run(*args)
        assert result.exit_code == 5, show(result)
        assert "lacks lifecycle columns" in result.stderr and "`bridge init --upgrade`" in result.stderr
        assert "Binder" not in result.output


def test_the_init_hint_names_the_store_it_looked_at(bridge_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    result = run("status", env={"BRIDGE_HOME": str(elsewhere)})
    assert result.exit_code == 5, show(result)
    assert str(elsewhere.resolve() / "lake") in result.stderr and "run `bridge init`" in result.stderr
    assert not elsewhere.exists()  # looking created nothing


def test_an_event_with_a_status_bridge_does_not_know_is_reported_not_ignored(local: LocalPair) -> None:
    normal = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    odd = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "b"}')
    local.set_event_fields(odd, status="PENDING")  # as a job's own SQL might write it
    table = run("status", env=TERMINAL)
    assert table.exit_code == 0, show(table)
    line = next(x for x in table.stdout.splitlines() if odd in x)
    assert "'PENDING' (unknown)" in line
    assert "unknown statuses, never processed: 'PENDING': 1" in table.stdout
    summary = run("status", "--summary", "--json")
    assert json.loads(summary.stdout) == {"pending": 1, "unknown": {"PENDING": 1}}
    assert run("status", "--summary").stdout.splitlines() == ["pending\t1", "unknown:PENDING\t1"]
    assert event(normal)["status"] == "pending"


def write_profile(tmp_path: Path, extra: str) -> dict[str, str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(f"profiles:\n  p:\n    lake: {{kind: duckdb}}\n    target: {{kind: sqlite}}\n{extra}")
    return {"BRIDGE_CONFIG": str(path)}


def test_submit_refuses_a_target_outside_allowed_targets(users: LocalPair, tmp_path: Path) -> None:
    env = write_profile(tmp_path, "    allowed_targets: ['dbo.other*']\n")
    result = run("submit", "insert", "--source", NEW_USERS, "--target", USERS_TARGET, "--pk", "username",
                 env=env)
    assert result.exit_code == 2, show(result)
    assert "target table dbo.users is not allowed by this profile" in result.stderr
    assert all_events() == []


@pytest.mark.parametrize("args,message", [
    (["insert", "--source", "lakecat.sales.nope", "--target", USERS_TARGET, "--pk", "username"],
     "lakecat.sales.nope"),
    (["insert", "--source", NEW_USERS, "--target", "dbo.nope", "--pk", "username"],
     "target table dbo.nope does not exist in the target database"),
    (["insert", "--source", NEW_USERS, "--target", USERS_TARGET, "--pk", "email"],
     "primary key 'email' is not a column of target table dbo.users"),
    (["update", "--source", NEW_USERS, "--target", USERS_TARGET, "--pk", "username", "--pk", "id"],
     "primary key column(s) id not in source table"),
    (["delete", "--target", USERS_TARGET, "--filter", '{"nickname": "a"}'],
     "filter_conditions column 'nickname' is not a column of target table"),
])
def test_submit_check_refuses_what_the_worker_would_fail_with_its_message(
    users: LocalPair, args: list[str], message: str
) -> None:
    result = run("submit", *args, "--check")
    assert result.exit_code == 2, show(result)
    assert message in result.stderr
    assert all_events() == []  # nothing written


def test_submit_check_writes_a_good_event(users: LocalPair) -> None:
    result = run("submit", "insert", "--source", NEW_USERS, "--target", USERS_TARGET, "--pk", "username",
                 "--check", "-q")
    assert result.exit_code == 0, show(result)
    assert event(result.stdout.strip())["status"] == "pending"


@pytest.mark.parametrize("args,hint", [
    (["submit", "delete", "--target", "t", "--filter", '{"a": 1}', "--timeout", "5"], "--timeout"),
    (["submit", "delete", "--target", "t", "--filter", '{"a": 1}', "-q", "--json"], "--json"),
    (["status", "some-id", "--limit", "5"], "--limit"),
    (["status", "--summary", "--status", "failed"], "--summary"),
    (["process-once", "--event-id", "x", "--max-events", "2"], "--max-events"),
])
def test_options_that_would_do_nothing_are_usage_errors(local: LocalPair, args: list[str], hint: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, show(result)
    assert hint in result.stderr
