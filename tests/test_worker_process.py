"""`bridge worker` and `process-once` as an operator runs them, in real processes: interrupts that
release the claim, SIGHUP, and log lines an operator can use."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from bridge_cli.api import submit_event
from bridge_cli.events import Operation, SubmitRequest
from tests import test_cli_process
from tests.backends import Col, LocalPair
from tests.test_cli_process import BIG_ROWS, cli_env, ok, stderr_of, wait_until

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end

SLOW = {"BRIDGE_BATCH_ROWS": "500"}  # small batches: the big event takes seconds, not a blink


def big_event(local: LocalPair, rows: int = BIG_ROWS) -> str:
    local.lake_sql("bigcat", "CREATE SCHEMA IF NOT EXISTS s")
    local.lake_sql("bigcat", "CREATE OR REPLACE TABLE s.rows AS "
                   f"SELECT range AS id, 'name-' || range::VARCHAR AS name FROM range({int(rows)})")
    local.create_target("dbo.big", [Col("id", "int"), Col("name")])  # no key: dupes would show
    return submit_event(local.lake, SubmitRequest(
        operation=Operation.INSERT, target_table="dbo.big", source_table="bigcat.s.rows",
        primary_keys=("id",), rows_expected=rows,
    ), local.settings).event_id


def status(local: LocalPair, event_id: str) -> str | None:
    event = local.lake.get_event(event_id)
    assert event is not None
    return event.status


def assert_released_then_applied_once(local: LocalPair, event_id: str) -> None:
    event = local.lake.get_event(event_id)
    assert event is not None
    assert (event.status, event.claim_token, event.attempts) == ("pending", None, 1)
    assert "interrupted" in (event.warning or "")
    assert local.target_rows("dbo.big", ["id"], "id") == []  # rolled back
    # Released at once: no waiting for a lease; a second run applies it exactly once.
    ok("process-once", "--event-id", event_id)
    done = local.lake.get_event(event_id)
    assert done is not None and (done.status, done.rows_affected, done.attempts) == ("completed", BIG_ROWS, 2)
    assert local.ledger_ids() == [event_id]


def mid_event(local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], *args: str
              ) -> tuple[str, subprocess.Popen[str]]:
    """A big event, and a `bridge` process started on it that has claimed it."""
    event_id = big_event(local)
    proc = spawn(*args, env=cli_env(**SLOW))
    wait_until(lambda: status(local, event_id) == "processing", 60, "the claim", every=0.02)
    return event_id, proc


def test_a_second_ctrl_c_rolls_back_releases_the_event_and_exits_130(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    event_id, worker = mid_event(local, spawn, "worker", "--poll-interval", "0.1")
    worker.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping on SIGINT" in stderr_of(tmp_path, 0), 30, "the first Ctrl-C")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=60) == 130, stderr_of(tmp_path, 0)
    assert "aborted" in stderr_of(tmp_path, 0)
    assert_released_then_applied_once(local, event_id)


def test_ctrl_c_on_process_once_releases_the_event_and_exits_130(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    event_id, run = mid_event(local, spawn, "process-once")
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) == 130, stderr_of(tmp_path, 0)
    assert_released_then_applied_once(local, event_id)


def test_sighup_stops_a_worker_as_sigterm_does(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    event_id, worker = mid_event(local, spawn, "worker", "--poll-interval", "0.1")
    worker.send_signal(signal.SIGHUP)
    assert worker.wait(timeout=120) == 0, stderr_of(tmp_path, 0)
    assert status(local, event_id) == "completed"  # the event in hand was finished
    assert "stopping on SIGHUP" in stderr_of(tmp_path, 0)


LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) bridge[\w.]* worker=\S+:\d+:[0-9a-f]{6} "
)


def test_worker_log_lines_carry_time_level_worker_and_event(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    local.create_source("lakecat.s.people", {"id": "int", "name": "text"}, [(1, "ana"), (2, "bruno")])
    local.create_target("dbo.people", [Col("id", "int", pk=True), Col("name")])
    good = ok("submit", "insert", "--source", "lakecat.s.people", "--target", "dbo.people",
              "--pk", "id", "-q").stdout.strip()
    bad = ok("submit", "insert", "--source", "lakecat.s.people", "--target", "dbo.missing",
             "--pk", "id", "-q").stdout.strip()
    worker = spawn("worker", "--poll-interval", "0.1", "-v", env=cli_env(COLUMNS="40"))
    wait_until(lambda: status(local, good) == "completed" and status(local, bad) == "failed", 60,
               "both events")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    lines = stderr_of(tmp_path, 0).splitlines()
    assert lines and all(LINE.match(x) for x in lines), "\n".join(x for x in lines if not LINE.match(x))
    text = "\n".join(lines)
    for record in ("INFO bridge.worker", "worker started", "stopping on SIGTERM", "worker stopped after 2 event(s)",
                   f"event={good}", f"claimed event {good}", "completed: 2 rows in", "rows/s",
                   "DEBUG bridge", "no event due"):
        assert record in text, record
    failed = next(x for x in lines if f"event {bad}" in x and "failed" in x)
    assert " WARNING " in failed and "dbo.missing does not exist" in failed
    assert f"event={bad}" in failed


def test_log_format_json_writes_one_object_per_line(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    worker = spawn("worker", "--poll-interval", "0.1", "--log-format", "json",
                   env=cli_env(BRIDGE_LOG_LEVEL="debug"))
    wait_until(lambda: "no event due" in stderr_of(tmp_path, 0), 30, "a poll")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    records = [json.loads(x) for x in stderr_of(tmp_path, 0).splitlines()]
    assert {"time", "level", "logger", "worker_id", "message"} <= set(records[0])
    assert records[0]["time"].endswith("Z") and records[0]["message"].startswith("worker started")
    assert records[-1]["message"].startswith("worker stopped")


def test_a_worker_warns_about_events_whose_status_it_does_not_know(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    odd = ok("submit", "delete", "--target", "dbo.t", "--filter", '{"k": 1}', "-q").stdout.strip()
    local.set_event_fields(odd, status="PENDING")  # as a job's own SQL might write it
    worker = spawn("worker", "--poll-interval", "0.1")
    wait_until(lambda: "worker started" in stderr_of(tmp_path, 0), 30, "the start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    warning = next(x for x in stderr_of(tmp_path, 0).splitlines() if "does not know" in x)
    assert " WARNING " in warning and "'PENDING': 1" in warning and "set their status to 'pending'" in warning
    assert status(local, odd) == "PENDING"  # reported, not touched
