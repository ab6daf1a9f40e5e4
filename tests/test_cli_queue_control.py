"""Queue control and retention as an operator meets them: `cancel`, the `status` filters, `prune`."""

from __future__ import annotations

import getpass
import json
import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from bridge_cli.lakes import Lake
from tests import test_cli
from tests.backends import LocalPair
from tests.test_cli import (
    USERS_TARGET,
    event,
    failing_insert,
    insert_users,
    run,
    show,
    submit,
    utcnow,
)

users = test_cli.users  # the fixture: a users source and target


def delete_event(name: str = "a") -> str:
    return submit("delete", "--target", USERS_TARGET, "--filter", json.dumps({"username": name}))


class AfterRead:
    """The real lake; `then` runs once, right after the named method returns: one interleaving of
    a race between two processes, each doing its real conditional update."""

    def __init__(self, lake: Lake, method: str, then: Callable[[], Any]) -> None:
        self.lake = lake
        self.method = method
        self.then: Callable[[], Any] | None = then

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.lake, name)
        if name != self.method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            value = real(*args, **kwargs)
            then, self.then = self.then, None
            if then is not None:
                then()
            return value

        return call


# -- cancel ----------------------------------------------------------------------------------
def test_cancel_moves_a_pending_event_to_failed_saying_who_and_when(users: LocalPair) -> None:
    event_id = insert_users()
    before = utcnow().replace(microsecond=0)
    result = run("cancel", event_id)
    assert result.exit_code == 0, show(result)
    stored = event(event_id)
    assert stored["status"] == "failed"
    found = re.fullmatch(r"cancelled by (.+)@(.+) at (\S+)Z", stored["error_message"])
    assert found, stored["error_message"]
    assert (found[1], found[2]) == (getpass.getuser(), socket.gethostname())
    assert before <= datetime.fromisoformat(found[3]) <= utcnow()
    assert event_id in result.stdout and "cancelled by" in result.stdout
    # A worker never runs it, and the four statuses stay the only ones.
    assert run("process-once").exit_code == 0
    assert event(event_id)["status"] == "failed"
    assert json.loads(run("status", "--summary", "--json").stdout) == {"failed": 1}


def test_cancel_refuses_completed_and_failed_events_saying_why(users: LocalPair) -> None:
    done = insert_users()
    assert run("process-once").exit_code == 0
    bad = failing_insert()
    assert run("process-once").exit_code == 0
    for event_id, reason in ((done, "already completed"), (bad, "already failed")):
        result = run("cancel", event_id)
        assert result.exit_code == 1, show(result)
        assert f"{event_id}: {reason}" in result.stderr
    assert [event(e)["status"] for e in (done, bad)] == ["completed", "failed"]
    assert event(bad)["error_message"].startswith("target table dbo.missing does not exist")


def test_cancel_json_lists_each_event_and_cancels_the_pending_ones(users: LocalPair) -> None:
    done = insert_users()
    assert run("process-once").exit_code == 0
    first, second = delete_event("a"), delete_event("b")
    result = run("cancel", first, done, second, "--json")
    assert result.exit_code == 1, show(result)  # one refused: the others are cancelled all the same
    rows = {r["event_id"]: r for r in json.loads(result.stdout)}
    assert [rows[e]["cancelled"] for e in (first, done, second)] == [True, False, True]
    assert rows[done]["previous_status"] == "completed"
    assert rows[first]["reason"].startswith("cancelled by ")
    assert [event(e)["status"] for e in (first, second)] == ["failed", "failed"]


def test_cancel_an_unknown_event_exits_4_and_cancels_the_known_ones(users: LocalPair) -> None:
    event_id = delete_event()
    result = run("cancel", "nope", event_id)
    assert result.exit_code == 4, show(result)
    assert "no event with id 'nope'" in result.stderr
    assert event(event_id)["status"] == "failed"
    assert run("cancel").exit_code == 2  # an id is required


def test_a_worker_claiming_between_cancels_read_and_write_wins_cleanly(
    users: LocalPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = delete_event()
    worker = users.engine(worker_id="vm:7")
    claims: list[Any] = []
    lake = AfterRead(users.lake, "get_event", lambda: claims.append(worker.claim_next_event(event_id)))
    monkeypatch.setattr("bridge_cli.cli_queue.open_lake", lambda _settings: lake)
    result = run("cancel", event_id)
    assert claims and claims[0] is not None  # the worker's claim went first
    assert result.exit_code == 1, show(result)
    assert "changed by someone else meanwhile (now processing); not cancelled" in result.stderr
    stored = event(event_id)
    assert (stored["status"], stored["worker_id"], stored["error_message"]) == ("processing", "vm:7", None)


def test_a_cancel_between_a_workers_read_and_its_claim_wins_cleanly(users: LocalPair) -> None:
    event_id = delete_event()
    cancelled: list[int] = []
    engine = users.engine()
    engine.lake = AfterRead(users.lake, "claimable_events",  # type: ignore[assignment]
                            lambda: cancelled.append(run("cancel", event_id).exit_code))
    assert engine.claim_next_event() is None  # it read the event as pending, but lost the claim
    assert cancelled == [0]
    assert event(event_id)["status"] == "failed"
    assert engine.process_once() == []


def test_cancel_racing_a_claim_at_most_one_wins(users: LocalPair) -> None:
    ids = [delete_event(f"u{i}") for i in range(8)]
    engine = users.engine()
    for event_id in ids:
        start = threading.Barrier(2)
        claimed: list[Any] = []

        def claim(event_id: str = event_id, start: threading.Barrier = start,
                  claimed: list[Any] = claimed) -> None:
            start.wait()
            claimed.append(engine.claim_next_event(event_id))

        thread = threading.Thread(target=claim)
        thread.start()
        start.wait()
        result = run("cancel", event_id, "--no-wait")
        thread.join()
        stored = event(event_id)
        if claimed[0] is not None:  # claimed first: its worker is asked to stop it
            assert result.exit_code == 0, show(result)
            assert "cancel requested" in result.stdout
            assert stored["status"] == "processing" and stored["error_message"] is None
            assert users.lake.cancel_request(event_id, claimed[0].claim_token) is not None
        else:
            assert result.exit_code == 0, show(result)
            assert stored["status"] == "failed" and stored["error_message"].startswith("cancelled by")


# -- status filters --------------------------------------------------------------------------
def ids(*args: str) -> list[str]:
    result = run("status", "--json", *args)
    assert result.exit_code == 0, show(result)
    return sorted(e["event_id"] for e in json.loads(result.stdout))


def test_status_filters_narrow_the_list_and_combine(users: LocalPair) -> None:
    inserted = insert_users()
    deleted = submit("delete", "--target", "`USERS`", "--filter", '{"username": "ana"}')  # dbo.users too
    other = submit("delete", "--target", "sales.orders", "--filter", '{"id": 1}')
    old = submit("update", "--source", test_cli.CHANGED_USERS, "--target", "DBO.Users", "--pk", "username")
    users.set_event_fields(old, created_at=utcnow() - timedelta(hours=3))
    claimed = users.engine(worker_id="vm:1").claim_next_event(other)
    assert claimed is not None

    assert ids("--target", "dbo.users") == sorted([inserted, deleted, old])
    assert ids("--target", "users") == ids("--target", "`dbo`.`USERS`") == ids("--target", "dbo.users")
    assert ids("--target", "sales.orders") == [other]
    assert ids("--target", "dbo.orders") == []
    assert ids("--operation", "delete") == sorted([deleted, other])
    assert ids("--operation", "UPDATE") == [old]
    assert ids("--since", "2h") == sorted([inserted, deleted, other])
    assert ids("--since", "4h") == sorted([inserted, deleted, other, old])
    assert ids("--worker", "vm:1") == [other]
    assert ids("--worker", "vm:2") == []
    # They combine, with each other and with --status and --limit.
    assert ids("--target", "dbo.users", "--operation", "delete", "--since", "1h") == [deleted]
    assert ids("--status", "pending", "--operation", "delete") == [deleted]
    assert ids("--status", "processing", "--worker", "vm:1") == [other]
    assert len(ids("--target", "dbo.users", "--limit", "2")) == 2
    piped = run("status", "--operation", "update")
    assert piped.exit_code == 0 and [line.split("\t")[0] for line in piped.stdout.splitlines()] == [old]


@pytest.mark.parametrize("args,hint,message", [
    (["status", "some-id", "--target", "dbo.users"], "--target", "lists events"),
    (["status", "some-id", "--operation", "insert"], "--operation", "lists events"),
    (["status", "some-id", "--since", "2h"], "--since", "lists events"),
    (["status", "some-id", "--worker", "vm:1"], "--worker", "lists events"),
    (["status", "--summary", "--since", "2h"], "--summary", "leave out --since"),
    (["status", "--since", "2 days"], "--since", "expected a duration such as 30m, 2h or 7d"),
    (["status", "--since", "0h"], "--since", "expected a duration"),
    (["status", "--operation", "merge"], "--operation", "merge"),
])
def test_status_filters_that_would_do_nothing_or_mean_nothing_are_usage_errors(
    local: LocalPair, args: list[str], hint: str, message: str
) -> None:
    result = run(*args)
    assert result.exit_code == 2, show(result)
    assert hint in result.stderr and message in result.stderr


# -- prune -----------------------------------------------------------------------------------
def days_ago(days: int) -> datetime:
    return utcnow() - timedelta(days=days)


def exists(event_id: str) -> bool:
    result = run("status", event_id, "--json")
    assert result.exit_code in (0, 4), show(result)
    return result.exit_code == 0


@pytest.fixture
def history(users: LocalPair) -> dict[str, str]:
    """Finished events old and new (each completed one with its ledger row), and old unfinished ones."""
    names = {
        "done_old": insert_users(),
        "done_new": delete_event("nobody"),
        "done_old_unstamped": delete_event("nobody-either"),  # no processed_at: created_at counts
        "failed_old": failing_insert(),
    }
    assert run("process-once").exit_code == 0
    users.set_event_fields(names["done_old"], processed_at=days_ago(40))
    users.set_event_fields(names["done_old_unstamped"], processed_at=None, created_at=days_ago(45))
    users.set_event_fields(names["failed_old"], processed_at=days_ago(40))
    names["pending_old"] = delete_event("p")
    names["processing_old"] = submit("delete", "--target", "dbo.other", "--filter", '{"id": 1}')
    assert users.engine().claim_next_event(names["processing_old"]) is not None
    for name in ("pending_old", "processing_old"):
        users.set_event_fields(names[name], created_at=days_ago(60))
    done = [names[n] for n in ("done_old", "done_new", "done_old_unstamped")]
    assert users.ledger_ids() == sorted(done)
    return names


def test_prune_dry_run_counts_and_changes_nothing(users: LocalPair, history: dict[str, str]) -> None:
    before = (sorted(e["event_id"] for e in test_cli.all_events()), users.ledger_ids())
    result = run("prune", "--older-than", "30d", "--dry-run", "--json")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert data["dry_run"] is True and data["statuses"] == ["completed"]
    assert sorted(data["event_ids"]) == sorted([history["done_old"], history["done_old_unstamped"]])
    assert (data["events_deleted"], data["ledger_rows_deleted"]) == (2, 2)
    assert (sorted(e["event_id"] for e in test_cli.all_events()), users.ledger_ids()) == before
    table = run("prune", "--older-than", "30d", "--dry-run", env=test_cli.TERMINAL)
    assert "would delete 2 completed event(s) finished before" in table.stdout
    assert "and 2 ledger row(s)" in table.stdout


def test_piped_prune_dry_run_says_would_delete_as_the_table_does(
    users: LocalPair, history: dict[str, str]
) -> None:
    piped = run("prune", "--older-than", "30d", "--dry-run")
    assert piped.exit_code == 0, show(piped)
    assert piped.stdout.splitlines() == ["events_would_delete\t2", "ledger_rows_would_delete\t2"]
    table = run("prune", "--older-than", "30d", "--dry-run", env=test_cli.TERMINAL)
    assert table.exit_code == 0, show(table)
    assert table.stdout.startswith("would delete 2 completed event(s)"), show(table)
    assert exists(history["done_old"])  # nothing was deleted


def test_prune_deletes_old_completed_events_with_their_ledger_rows(
    users: LocalPair, history: dict[str, str]
) -> None:
    result = run("prune", "--older-than", "30d")
    assert result.exit_code == 0, show(result)
    assert result.stdout.splitlines() == ["events_deleted\t2", "ledger_rows_deleted\t2"]
    gone = {history["done_old"], history["done_old_unstamped"]}
    for name, event_id in history.items():
        assert exists(event_id) == (event_id not in gone), name
    assert users.ledger_ids() == [history["done_new"]]  # the newer one keeps its ledger row
    assert event(history["pending_old"])["status"] == "pending"
    assert event(history["processing_old"])["status"] == "processing"
    again = run("prune", "--older-than", "30d", "--json")
    assert json.loads(again.stdout)["events_deleted"] == 0


def test_prune_failed_also_deletes_old_failed_events_never_unfinished_ones(
    users: LocalPair, history: dict[str, str]
) -> None:
    result = run("prune", "--older-than", "30d", "--failed", "--json")
    assert result.exit_code == 0, show(result)
    data = json.loads(result.stdout)
    assert data["statuses"] == ["completed", "failed"]
    deleted = {history["done_old"], history["done_old_unstamped"], history["failed_old"]}
    assert set(data["event_ids"]) == deleted and data["ledger_rows_deleted"] == 2
    kept = sorted(e["event_id"] for e in test_cli.all_events())
    assert kept == sorted(set(history.values()) - deleted)
    # Even with a duration of one second, an unfinished event is never deleted.
    users.set_event_fields(history["done_new"], processed_at=utcnow() - timedelta(minutes=1))
    assert run("prune", "--older-than", "1s", "--failed").exit_code == 0
    assert sorted(e["event_id"] for e in test_cli.all_events()) == sorted(
        [history["pending_old"], history["processing_old"]]
    )
    assert users.ledger_ids() == []


@pytest.mark.parametrize("args,message", [
    (["prune"], "--older-than"),
    (["prune", "--older-than", "30"], "expected a duration such as 30m, 2h or 7d"),
    (["prune", "--older-than", "-3d"], "expected a duration"),
])
def test_prune_needs_a_duration(local: LocalPair, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, show(result)
    assert message in result.stderr
