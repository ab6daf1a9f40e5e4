"""Issue 18 §1 and §2: a worker's row is written on every change that matters (claim, phase, end)
and every progress_seconds while busy, off the event's path; worker ids are unique and a live
one's id refuses a second worker; gone workers can be forgotten; /metrics shows the event in hand.
Real `bridge worker` processes on the embedded pair, except where a test says otherwise."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.api import list_workers
from bridge_cli.engine import Engine
from bridge_cli.events import Operation, SubmitRequest
from bridge_cli.lakes import WorkerBeat
from tests import test_cli_process
from tests.backends import Col, LocalPair
from tests.test_cli_process import bridge, cli_env, ok, stderr_of, wait_until
from tests.test_metrics import free_port, scrape, value
from tests.test_worker_process import big_event, status
from tests.test_workers import WATCHED_ROWS, the_worker, wait_busy

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end


def _log_times(stderr: str) -> dict[str, float]:
    """When the worker's JSON log says each phase began (the first time), as Unix time."""
    first: dict[str, float] = {}
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        message = str(record.get("message", ""))
        key = message.removeprefix("phase: ") if message.startswith("phase: ") else None
        if message.startswith("claimed event "):
            key = "claim"
        if key is not None and key not in first:
            when = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            first[key] = when.timestamp()
    return first


def test_workers_show_the_claim_each_phase_and_the_end_within_two_seconds(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # Default lease (300 s) and progress_seconds (15 s): only the beats on each change can show
    # these phases of a ~20 s event in time.
    worker = spawn("-v", "--log-format", "json", "worker", "--poll-interval", "0.1", env=cli_env())
    wait_until(lambda: the_worker(worker.pid) is not None, 30, "the worker's first heartbeat")
    seen: dict[str, float] = {}  # what the workers table showed first, and when (Unix time)
    done = threading.Event()

    def watch() -> None:  # reads the table as `bridge workers` does, 20 times a second
        while not done.is_set():
            for state in list_workers(local.lake):
                if state.beat.pid == worker.pid:
                    beat = state.beat
                    key = "idle" if beat.event_id is None else beat.phase
                    if "claim" not in seen and beat.event_id is not None:
                        seen["claim"] = time.time()
                    if key is not None and (key != "idle" or "claim" in seen):
                        seen.setdefault(key, time.time())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        event_id = big_event(local, WATCHED_ROWS)
        wait_until(lambda: status(local, event_id) == "completed", 180, "the event completed", every=0.2)
        wait_until(lambda: "idle" in seen, 10, "the worker idle again")
    finally:
        done.set()
        watcher.join()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    began = _log_times(stderr_of(tmp_path, 0))
    for phase in ("claim", "staging", "applying", "idle"):
        assert phase in began and phase in seen, (phase, began, seen)
        assert seen[phase] - began[phase] < 2.0, f"{phase} shown {seen[phase] - began[phase]:.2f}s after it began"


def test_a_worker_id_in_use_refuses_a_second_worker_and_a_gone_ones_id_is_taken_over(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    first = spawn("worker", "--poll-interval", "0.1", env=cli_env(BRIDGE_WORKER_ID="pod-a"))
    wait_until(lambda: the_worker(first.pid) is not None, 30, "the first worker's heartbeat")
    second = bridge("worker", "--max-events", "1", "--worker-id", "pod-a", env=cli_env())
    assert second.returncode == 5, second.stderr
    assert "worker id 'pod-a' is in use by a live worker" in second.stderr
    assert f"pid {first.pid}" in second.stderr and "--worker-id" in second.stderr
    assert (the_worker(first.pid) or {}).get("worker_id") == "pod-a"  # its row untouched
    # Killed, and gone: a new worker under that id (a restarted pod) takes its row over.
    first.kill()
    first.wait(timeout=10)
    wait_until(lambda: (the_worker(first.pid) or {}).get("state") == "gone", 60, "the first worker gone")
    third = spawn("worker", "--poll-interval", "0.1", "--worker-id", "pod-a",
                  env=cli_env(BRIDGE_PROGRESS_SECONDS="0.5"))
    wait_until(lambda: the_worker(third.pid) is not None, 30, "the new worker's heartbeat")
    assert [w["worker_id"] for w in json.loads(ok("workers", "--json").stdout)] == ["pod-a"]
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=60) == 0, stderr_of(tmp_path, 1)


def test_default_worker_ids_differ_and_ids_are_checked(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    workers = [spawn("worker", "--poll-interval", "0.1", env=cli_env()) for _ in range(2)]
    for worker in workers:
        wait_until(lambda w=worker: the_worker(w.pid) is not None, 30, "a heartbeat")  # type: ignore[misc]
    ids = [the_worker(w.pid)["worker_id"] for w in workers]  # type: ignore[index]
    assert len(set(ids)) == 2
    bad = bridge("worker", "--worker-id", "a\x1b[2Jb", env=cli_env())
    assert bad.returncode == 2 and "printable" in bad.stderr
    long = bridge("worker", env=cli_env(BRIDGE_WORKER_ID="x" * 201))
    assert long.returncode == 5 and "BRIDGE_WORKER_ID: at most 200 characters" in long.stderr


def test_forget_gone_removes_gone_workers_rows_and_leaves_their_events(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    alive = spawn("worker", "--poll-interval", "0.1", env=cli_env(BRIDGE_ORDERING="none"))
    killed = spawn("worker", "--poll-interval", "0.1", env=cli_env(BRIDGE_PROGRESS_SECONDS="0.5",
                                                                   BRIDGE_ORDERING="none"))
    wait_until(lambda: the_worker(alive.pid) is not None, 30, "a heartbeat")
    alive.send_signal(signal.SIGSTOP)  # so the killed one takes the event
    try:
        event_id = big_event(local, WATCHED_ROWS)
        wait_busy(killed.pid, event_id)
    finally:
        alive.send_signal(signal.SIGCONT)
    killed.kill()
    killed.wait(timeout=10)
    wait_until(lambda: (the_worker(killed.pid) or {}).get("state") == "gone", 30, "the worker gone")
    gone_id = the_worker(killed.pid)["worker_id"]  # type: ignore[index]
    kept = ok("workers", "--forget-gone", "--older-than", "1h")
    assert "no worker gone for longer than 1h" in kept.stderr and the_worker(killed.pid) is not None
    forgot = ok("workers", "--forget-gone")
    assert f"forgot 1 gone worker(s): {gone_id}" in forgot.stdout
    assert f"the events they held ({event_id}) are untouched" in forgot.stdout
    assert the_worker(killed.pid) is None and the_worker(alive.pid) is not None  # the live one stays
    assert status(local, event_id) == "processing"  # untouched: `requeue --stale` is for it
    misuse = bridge("workers", "--older-than", "1h", env=cli_env())
    assert misuse.returncode == 2 and "--forget-gone" in misuse.stderr
    alive.send_signal(signal.SIGTERM)
    assert alive.wait(timeout=60) == 0


def test_metrics_show_the_event_in_hand_its_rows_and_phase_without_event_ids(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    port = free_port()
    worker = spawn("worker", "--poll-interval", "0.1", "--metrics-port", str(port),
                   env=cli_env(BRIDGE_PROGRESS_SECONDS="0.5"))
    wait_until(lambda: the_worker(worker.pid) is not None, 30, "a heartbeat")
    idle = scrape(port)
    assert value(idle, "bridge_worker_busy") == 0 and value(idle, "bridge_event_rows_so_far") == 0
    event_id = big_event(local, WATCHED_ROWS)
    wait_busy(worker.pid, event_id)
    busy: dict[Any, float] = {}

    def staging_seen() -> bool:
        busy.clear()
        busy.update(scrape(port))
        return value(busy, "bridge_event_rows_so_far") > 0
    wait_until(staging_seen, 30, "rows so far in /metrics")
    assert value(busy, "bridge_worker_busy") == 1
    phases = {dict(labels).get("phase") for (name, labels) in busy if name == "bridge_event_phase_seconds"}
    assert len(phases) == 1 and phases <= {"staging", "applying"}
    assert all(event_id not in str(labels) for (_, labels) in busy)  # no event ids as labels
    wait_until(lambda: status(local, event_id) == "completed", 180, "the event completed", every=0.2)
    wait_until(lambda: value(scrape(port), "bridge_worker_busy") == 0, 10, "idle again in /metrics")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


# -- in-process, on the real embedded lake --------------------------------------------------------
class CountingLakeSpy:
    """The real DuckDB lake, with its heartbeat writes counted and, if asked, slowed or failing:
    a spy on the real store (no store here is slow or broken on demand)."""

    def __init__(self, lake: Any, delay: float = 0.0, fail: bool = False) -> None:
        self._lake = lake
        self.delay = delay
        self.fail = fail
        self.beats: list[WorkerBeat] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lake, name)

    def heartbeat(self, beat: WorkerBeat) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the workers table is unreachable")
        self._lake.heartbeat(beat)
        self.beats.append(beat)


def _people(local: LocalPair, events: int) -> list[str]:
    local.create_source("lakecat.s.people", {"id": "int", "name": "text"}, [(i, f"n{i}") for i in range(50)])
    local.create_target("dbo.people", [Col("id", "int", pk=True), Col("name")])
    from bridge_cli.api import submit_event

    ids = []
    for n in range(events):
        ids.append(submit_event(local.lake, SubmitRequest(
            operation=Operation.UPSERT, target_table="dbo.people", source_table="lakecat.s.people",
            primary_keys=("id",), event_id=f"people-{n}"), local.settings).event_id)
    return ids


def _run(engine: Engine, events: int) -> list[Any]:
    stop = threading.Event()
    results: list[Any] = []
    engine.run_worker(stop, poll_interval=0.05, max_events=events, on_result=results.append)
    return results


def test_an_idle_worker_writes_one_heartbeat_per_poll(local: LocalPair) -> None:
    spy = CountingLakeSpy(local.lake)
    polls = 0

    def no_sleep(stop: threading.Event, seconds: float) -> None:
        nonlocal polls
        polls += 1
        assert engine.beats is not None and engine.beats.flush()  # written during the wait
        if polls >= 20:
            stop.set()

    engine = Engine(local.settings, spy, local.target, wait=no_sleep)  # type: ignore[arg-type]
    engine.run_worker(threading.Event(), poll_interval=0.05)
    # The start's beat, then one per idle poll.
    assert polls == 20 and len(spy.beats) == 1 + polls
    assert all(b.event_id is None for b in spy.beats)


def test_a_slow_heartbeat_never_slows_an_event_and_only_the_latest_state_is_written(local: LocalPair) -> None:
    ids = _people(local, 3)
    spy = CountingLakeSpy(local.lake, delay=1.0)
    engine = Engine(local.settings, spy, local.target)  # type: ignore[arg-type]
    started = time.monotonic()
    results = _run(engine, 3)
    assert [r.status for r in results] == ["completed"] * 3 and [r.event_id for r in results] == ids
    # Each event changed phase 5 times (claim, reading, staging, applying, recording, done); with
    # one-second writes most changes were coalesced, and no event waited on a write.
    assert max(r.seconds for r in results) < 1.0
    assert len(spy.beats) < 3 * 5
    assert time.monotonic() - started < 3 * 5 * 1.0


def test_a_failing_heartbeat_never_fails_an_event(local: LocalPair, caplog: pytest.LogCaptureFixture) -> None:
    ids = _people(local, 2)
    spy = CountingLakeSpy(local.lake, fail=True)
    engine = Engine(local.settings, spy, local.target)  # type: ignore[arg-type]
    results = _run(engine, 2)
    assert [r.status for r in results] == ["completed", "completed"] and [r.event_id for r in results] == ids
    assert "heartbeat failed (the worker carries on)" in caplog.text


def test_a_short_event_costs_at_most_six_heartbeats(local: LocalPair) -> None:
    """What the README states for Databricks: claim, reading, staging, applying, recording and the
    end, each at most one statement (fewer when they come faster than a write)."""
    _people(local, 4)
    spy = CountingLakeSpy(local.lake)
    engine = Engine(local.settings, spy, local.target)  # type: ignore[arg-type]
    results = _run(engine, 4)
    assert [r.status for r in results] == ["completed"] * 4
    busy = [b for b in spy.beats if b.event_id is not None]
    assert 4 <= len(busy) <= 4 * 5  # each event shown at least once, at most once per phase
    assert {b.phase for b in busy} <= {"claimed", "reading", "staging", "applying", "recording"}
    assert len(spy.beats) <= 1 + 4 * 6  # the start's beat, then at most six per event
