"""Submit, wait and the queue as scripts meet them: failures say why, an explicit id means now."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests import test_cli
from tests.backends import LocalPair
from tests.test_cli import (
    CHANGED_USERS,
    NEW_USERS,
    TERMINAL,
    USERS_TARGET,
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
