"""`bridge pause` / `resume` and `bridge cancel` of a processing event, with real `bridge worker`
processes on the embedded pair (DuckDB lake, SQLite target)."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bridge_cli.api import cancel_events, submit_event
from bridge_cli.events import Operation, SubmitRequest
from tests import test_cli_process
from tests.backends import Col, LocalPair
from tests.test_cli_process import bridge, cli_env, ok, show, stderr_of, wait_until
from tests.test_worker_process import SLOW, big_event, status

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end

# Polls every 0.1 s, never backing off past 0.2 s: "within one poll" is then a fraction of a second.
FAST = {"BRIDGE_IDLE_POLL_MAX": "0.2"}


def people(local: LocalPair, target: str, rows: int = 3) -> str:
    """A source of `rows` people (once) and an INSERT event into `target` (created empty)."""
    local.create_source("lakecat.s.people", {"id": "int", "name": "text"},
                        [(i, f"name-{i}") for i in range(rows)])
    local.create_target(target, [Col("id", "int", pk=True), Col("name")])
    return submit(local, target, "lakecat.s.people")


def submit(local: LocalPair, target: str, source: str) -> str:
    return submit_event(local.lake, SubmitRequest(
        operation=Operation.INSERT, target_table=target, source_table=source, primary_keys=("id",),
    ), local.settings).event_id


def stop(worker: subprocess.Popen[str]) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


def test_two_workers_obey_a_pause_within_one_poll_and_resume_completes_everything(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    big = big_event(local)
    workers = [spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOW, **FAST)) for _ in range(2)]
    wait_until(lambda: status(local, big) == "processing", 60, "the big event's claim", every=0.02)
    paused = ok("pause", "--reason", "SQL Server maintenance")
    assert "every target (*)" in paused.stdout and "SQL Server maintenance" in paused.stdout
    time.sleep(0.5)  # one poll of each worker: from here on, nothing is claimed
    waiting = [people(local, f"dbo.people{i}") for i in range(4)]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # 30 polls of each worker
        for event_id in waiting:
            stored = local.lake.get_event(event_id)
            assert stored is not None and (stored.status, stored.attempts) == ("pending", 0), stored
        time.sleep(0.05)
    wait_until(lambda: status(local, big) == "completed", 120, "the event in hand to finish")
    for event_id in waiting:
        assert status(local, event_id) == "pending"
    wait_until(lambda: any("paused: every target (*)" in stderr_of(tmp_path, n) for n in (0, 1)), 10,
               "a worker's 'paused:' line")
    for n in (0, 1):  # one line per change of the pauses, not one per poll
        assert stderr_of(tmp_path, n).count("paused: every target") <= 1
    summary = ok("status", "--summary")
    assert "paused:*\t" in summary.stdout and "SQL Server maintenance" in summary.stdout

    resumed = ok("resume")
    assert "resumed every target (*)" in resumed.stdout
    wait_until(lambda: all(status(local, e) == "completed" for e in waiting), 60, "every event after resume")
    for i in range(4):
        assert local.target_rows(f"dbo.people{i}", ["id"], "id") == [(0,), (1,), (2,)]
    assert local.target_rows("dbo.big", ["id"], "id")[-1] == (test_cli_process.BIG_ROWS - 1,)
    for worker in workers:
        stop(worker)


def test_a_pause_by_target_pattern_holds_its_targets_and_lets_the_others_proceed(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    ok("pause", "--target", "dbo.held_*", "--reason", "index rebuild")
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**FAST))
    held = [people(local, "dbo.held_a"), people(local, "dbo.held_b")]
    free = [people(local, "dbo.free"), people(local, "other.held_a")]
    wait_until(lambda: all(status(local, e) == "completed" for e in free), 60, "the other targets")
    time.sleep(1)
    assert [status(local, e) for e in held] == ["pending", "pending"]
    assert local.target_rows("dbo.held_a", ["id"], "id") == []
    listed = bridge("workers")
    assert listed.returncode == 0, show(listed)
    assert "paused (workers claim none of their events): dbo.held_* (by " in listed.stderr

    still = bridge("resume", "--target", "dbo.held_b")  # no pause of its own, and held by dbo.held_*
    assert still.returncode == 1, show(still)
    assert "nothing was paused with the pattern dbo.held_b" in still.stderr
    assert "dbo.held_b is still paused by dbo.held_* (by" in still.stderr
    assert "resumed dbo.held_* (by" in ok("resume", "--target", "DBO.HELD_*").stdout
    wait_until(lambda: all(status(local, e) == "completed" for e in held), 60, "the held targets")
    log = stderr_of(tmp_path, 0)
    assert "paused: dbo.held_* (by" in log and "resumed: nothing is paused" in log
    stop(worker)


def test_cancel_of_a_processing_event_rolls_back_fails_it_and_the_worker_takes_the_next(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    big = big_event(local)
    # A lease of 3 s: renewals (each with a look for a cancel request) every second.
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOW, **FAST, BRIDGE_LEASE_SECONDS="3"))
    wait_until(lambda: status(local, big) == "processing", 60, "the claim", every=0.02)
    result = bridge("cancel", big, "--timeout", "60")
    assert result.returncode == 0, show(result)
    assert "cancelled by" in result.stdout
    stored = local.lake.get_event(big)
    assert stored is not None and stored.status == "failed"
    assert (stored.error_message or "").startswith("cancelled by "), stored.error_message
    assert local.target_rows("dbo.big", ["id"], "id") == []  # nothing applied
    assert big not in local.ledger_ids()
    assert local.event_sql(f"SELECT count(*) FROM {local.lake._control}") == [(0,)]  # request gone
    assert worker.poll() is None  # the worker lives on, and takes the next event
    after = people(local, "dbo.after")
    wait_until(lambda: status(local, after) == "completed", 60, "the next event")
    assert "cancel requested by" in stderr_of(tmp_path, 0)
    stop(worker)


def test_a_cancel_racing_the_commit_never_leaves_a_failed_event_with_its_rows_applied(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    local.create_source("lakecat.s.mid", {"id": "int", "name": "text"}, [(i, f"n{i}") for i in range(20_000)])
    worker = spawn("worker", "--poll-interval", "0.05",
                   env=cli_env(**FAST, BRIDGE_BATCH_ROWS="2000", BRIDGE_LEASE_SECONDS="1"))
    rng = random.Random(18)
    outcomes = []
    for i in range(8):
        target = f"dbo.race{i}"
        local.create_target(target, [Col("id", "int", pk=True), Col("name")])
        event_id = submit(local, target, "lakecat.s.mid")
        wait_until(lambda e=event_id: status(local, e) != "pending", 60, "the claim", every=0.005)
        time.sleep(rng.uniform(0.0, 0.25))  # right at the end of the event, more or less
        [result] = cancel_events(local.lake, [event_id], wait=60)
        stored = local.lake.get_event(event_id)
        assert stored is not None
        rows = len(local.target_rows(target, ["id"], "id"))
        applied = event_id in local.ledger_ids()
        if stored.status == "failed":
            assert result.cancelled and (stored.error_message or "").startswith("cancelled by ")
            assert (rows, applied) == (0, False), f"{event_id} failed with its rows applied"
        else:
            assert stored.status == "completed", stored
            assert not result.cancelled
            assert ("completed before its worker saw the cancel; nothing was changed" in result.reason
                    or result.reason.startswith("already completed")), result.reason
            assert (rows, applied) == (20_000, True)
        outcomes.append((stored.status, result.reason[:30]))
    assert local.event_sql(f"SELECT count(*) FROM {local.lake._control}") == [(0,)]
    assert worker.poll() is None, stderr_of(tmp_path, 0)
    stop(worker)
    print("race outcomes:", outcomes)
