"""The installed `bridge` entry point in real processes: the demo flow, a worker, a kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.api import submit_event
from bridge_cli.events import Operation, SubmitRequest
from tests.backends import Col, LocalPair


def _bridge_command() -> list[str]:
    beside = Path(sys.executable).parent / "bridge"  # the virtualenv's own entry point
    if beside.is_file():
        return [str(beside)]
    # Not shutil.which: Linux's iproute2 installs an unrelated `bridge` on PATH.
    return [sys.executable, "-m", "bridge_cli"]


BRIDGE = _bridge_command()
STEP_TIMEOUT = 120  # no single command may hang the suite


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment (BRIDGE_HOME set by the fixture), without forced colour."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update({"COLUMNS": "250", **extra})
    assert "BRIDGE_HOME" in env
    return env


def bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BRIDGE, *args], env=env or cli_env(), capture_output=True, text=True,
        timeout=STEP_TIMEOUT, check=False,
    )


def show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--stdout--\n{result.stdout}\n--stderr--\n{result.stderr}"


def ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = bridge(*args, env=env)
    assert result.returncode == 0, show(result)
    return result


def status_of(event_id: str) -> dict[str, Any]:
    data = json.loads(ok("status", event_id, "--json").stdout)
    assert isinstance(data, dict)
    return data


def wait_until(condition: Callable[[], bool], seconds: float, what: str,
               every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds:g}s waiting for {what}")
        time.sleep(every)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT does what it does for a command run at a terminal. A test suite run in
    the background (`.ci/run &`) inherits SIGINT ignored, which would make Ctrl-C tests meaningless."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `bridge worker` processes; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        n = len(started)
        out = (tmp_path / f"worker{n}.out").open("w")
        err = (tmp_path / f"worker{n}.err").open("w")
        proc = subprocess.Popen([*BRIDGE, *args], env=env or cli_env(), stdout=out, stderr=err,
                                text=True, preexec_fn=ctrl_c_as_in_a_terminal)
        out.close()
        err.close()
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def stderr_of(tmp_path: Path, n: int) -> str:
    return (tmp_path / f"worker{n}.err").read_text()


def target_count(pair: LocalPair, table: str, column: str) -> tuple[int, int]:
    """(rows, distinct values of column) in a dbo table, read with plain sqlite3."""
    connection = sqlite3.connect(pair.target.schema_path("dbo"))
    try:
        row = connection.execute(
            f'SELECT count(*), count(DISTINCT "{column}") FROM "{table}"'
        ).fetchone()
    finally:
        connection.close()
    return int(row[0]), int(row[1])


# -- the entry point and the demo flow -------------------------------------------------------
def test_version(bridge_home: Path) -> None:
    result = ok("--version")
    assert result.stdout.startswith("bridge ")
    assert result.stdout.split()[1][0].isdigit()


def test_module_entry_point(bridge_home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bridge_cli", "--version"], env=cli_env(),
                            capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
    assert result.returncode == 0, show(result)
    assert result.stdout.startswith("bridge ")


def test_demo_flow(bridge_home: Path) -> None:
    demo = subprocess.run([sys.executable, "-m", "bridge_cli.demo"], env=cli_env(),
                          capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
    assert demo.returncode == 0, show(demo)
    assert "dbo.MarketScopeAccess" in demo.stdout

    init = ok("init")
    assert "created event table" in init.stdout

    target = "dbo.MarketScopeAccess"
    inserted = ok("submit", "insert", "--source", "`mi-catalog`.`mi-schema`.datos_nuevos",
                  "--target", target, "--pk", "username").stdout.strip()
    updated = ok("submit", "update", "--source", "mi-catalog.mi-schema.datos_actualizados",
                 "--target", target, "--pk", "username", "-q").stdout.strip()
    deleted = ok("submit", "delete", "--target", target,
                 "--filter", '{"username": "elena"}', "-q").stdout.strip()
    assert inserted.startswith("insert-")
    assert updated.startswith("update-")
    assert deleted.startswith("delete-")

    processed = ok("process-once")
    for event_id in (inserted, updated, deleted):
        assert event_id in processed.stdout

    events = json.loads(ok("status", "--json").stdout)
    assert {e["event_id"]: e["status"] for e in events} == {
        inserted: "completed", updated: "completed", deleted: "completed"
    }
    rows = {e["event_id"]: e["rows_affected"] for e in events}
    assert rows == {inserted: 5, updated: 2, deleted: 1}

    pair = LocalPair(bridge_home)
    assert pair.target_rows(target, ["username", "is_user", "is_admin"], "username") == [
        ("ana", 1, 0), ("bruno", 1, 1), ("carla", 1, 1), ("diego", 1, 1),
    ]


# -- the worker ------------------------------------------------------------------------------
def test_worker_processes_then_stops_on_sigterm(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    local.create_source("lakecat.s.people", {"id": "int", "name": "text"},
                        [(1, "ana"), (2, "bruno")])
    local.create_target("dbo.people", [Col("id", "int", pk=True), Col("name")])
    worker = spawn("worker", "--poll-interval", "0.2")

    event_id = ok("submit", "insert", "--source", "lakecat.s.people", "--target", "dbo.people",
                  "--pk", "id", "-q").stdout.strip()
    wait_until(lambda: status_of(event_id)["status"] == "completed", 30, "the worker",
               every=0.2)
    assert worker.poll() is None  # still polling for more

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    err = stderr_of(tmp_path, 0)
    assert "started" in err
    assert "stopping" in err
    assert "worker stopped after 1 event(s)" in err
    assert local.target_rows("dbo.people", ["id", "name"], "id") == [(1, "ana"), (2, "bruno")]


BIG_ROWS = 300_000


def test_kill_9_mid_event_leaves_nothing_partial_and_is_recovered(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    local.lake_sql("bigcat", "CREATE SCHEMA IF NOT EXISTS s")
    local.lake_sql(
        "bigcat",
        "CREATE OR REPLACE TABLE s.rows AS "
        f"SELECT range AS id, 'name-' || range::VARCHAR AS name FROM range({BIG_ROWS})",
    )
    local.create_target("dbo.big", [Col("id", "int"), Col("name")])  # no key: dupes would show
    event_id = submit_event(local.lake, SubmitRequest(
        operation=Operation.INSERT, target_table="dbo.big", source_table="bigcat.s.rows",
        primary_keys=("id",), rows_expected=BIG_ROWS,
    ), local.settings).event_id

    worker = spawn("worker", "--poll-interval", "0.2",
                   env=cli_env(BRIDGE_BATCH_ROWS="1000", BRIDGE_LEASE_SECONDS="2"))

    def current() -> Any:
        event = local.lake.get_event(event_id)
        assert event is not None
        return event

    wait_until(lambda: current().status == "processing", 30, "the worker to claim the event",
               every=0.02)
    worker.kill()
    worker.wait(timeout=10)
    killed = current()
    assert killed.status == "processing", "the kill came after the event finished: no fault"

    rows, _ = target_count(local, "big", "id")
    assert rows in (0, BIG_ROWS), f"partial copy: {rows} rows after kill -9"

    # the dead worker's lease runs out, then anyone may take the event over
    wait_until(lambda: current().lease_expires_at is not None
               and current().lease_expires_at < utcnow(), 30, "the lease to expire")
    result = ok("process-once", env=cli_env(BRIDGE_BATCH_ROWS="1000"))
    assert event_id in result.stdout

    final = status_of(event_id)
    assert final["status"] == "completed", final
    assert final["rows_affected"] == BIG_ROWS
    assert final["discrepancy"] == 0
    assert target_count(local, "big", "id") == (BIG_ROWS, BIG_ROWS)
    assert local.ledger_ids().count(event_id) == 1
    assert len(local.ledger_ids()) == 1


def test_two_workers_apply_each_event_exactly_once(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    per_event = 5
    local.create_target("dbo.many", [Col("id", "int"), Col("name")])  # no key: dupes would show
    event_ids = []
    for n in range(20):
        source = f"manycat.s.part{n:02d}"
        local.create_source(source, {"id": "int", "name": "text"},
                            [(n * 100 + i, f"row-{n}-{i}") for i in range(per_event)])
        event_ids.append(submit_event(local.lake, SubmitRequest(
            operation=Operation.INSERT, target_table="dbo.many", source_table=source,
            primary_keys=("id",),
        ), local.settings).event_id)

    workers = [spawn("worker", "--poll-interval", "0.1") for _ in range(2)]

    def done() -> bool:
        events = local.lake.list_events(None, 100)
        return all(e.status in ("completed", "failed") for e in events)

    wait_until(done, 120, "20 events to finish", every=0.2)
    for worker in workers:
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
    for n, worker in enumerate(workers):
        assert worker.wait(timeout=30) == 0, stderr_of(tmp_path, n)
        assert "worker stopped after" in stderr_of(tmp_path, n)

    events = {e.event_id: e for e in local.lake.list_events(None, 100)}
    assert sorted(events) == sorted(event_ids)
    for event in events.values():
        assert event.status == "completed", event
        assert event.rows_affected == per_event, event
        assert event.warning is None, event  # "already applied" would mean a double claim
    assert local.ledger_ids() == sorted(event_ids)
    assert target_count(local, "many", "id") == (20 * per_event, 20 * per_event)
    processed = sum(
        int(stderr_of(tmp_path, n).split("worker stopped after ")[1].split()[0]) for n in range(2)
    )
    assert processed == 20


def test_a_shell_command_waits_for_a_locked_lake_file_instead_of_failing(local: LocalPair) -> None:
    """Another process (a worker, say) holds the event file for a moment: `bridge submit` and
    `bridge status` wait for it and succeed."""
    path = local.lake.catalog_path(local.lake.event_table.catalog)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "time.sleep(3); c.close()", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        submitted = ok("submit", "delete", "--target", "dbo.t", "--filter", '{"k": 1}', "-q")
        assert time.monotonic() - started > 1  # it really waited for the other process
        assert status_of(submitted.stdout.strip())["status"] == "pending"
    finally:
        holder.wait(timeout=30)
