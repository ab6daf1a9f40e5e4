"""Workers you can see (issue 10 §2): real `bridge worker` processes heartbeat into the workers
table; `bridge workers` lists them alive or gone, `bridge status ID` shows a processing event's
worker, phase and rows."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import test_cli_process
from tests.backends import LocalPair
from tests.test_cli_process import BRIDGE, bridge, cli_env, ok, stderr_of, wait_until
from tests.test_worker_process import SLOW, big_event, status

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end

SLOWER = {**SLOW, "BRIDGE_BATCH_ROWS": "40"}
# The event watched in flight: big enough to outlast a few CLI calls on a fast, idle machine
# (300,000 rows finished in about 2 s on one).
WATCHED_ROWS = 3_000_000


def workers() -> list[dict[str, Any]]:
    data = json.loads(ok("workers", "--json").stdout)
    assert isinstance(data, list)
    return data


def the_worker(pid: int) -> dict[str, Any] | None:
    return next((w for w in workers() if w["pid"] == pid), None)


def wait_busy(pid: int, event_id: str) -> dict[str, Any]:
    """The worker's row once a heartbeat showed it on the event with rows so far."""
    seen: list[dict[str, Any]] = []

    def busy() -> bool:
        row = the_worker(pid)
        if row is not None and row["event_id"] == event_id and (row["rows"] or 0) > 0:
            seen.append(row)
        return bool(seen)

    wait_until(busy, 60, "a heartbeat with the event and rows", every=0.1)
    return seen[0]


def _more_rows(pid: int, than: int) -> dict[str, Any] | None:
    row = the_worker(pid)
    return row if row is not None and (row["rows"] or 0) > than else None


def wait_until_value(get: Callable[[], dict[str, Any] | None], seconds: float, what: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def got() -> bool:
        value = get()
        if value is not None:
            found.append(value)
        return value is not None

    wait_until(got, seconds, what)
    return found[0]


def test_a_busy_worker_is_listed_with_its_event_phase_and_rows_and_leaves_on_sigterm(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # A heartbeat every 0.5 s while the event is in hand, with the rows so far.
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOWER, BRIDGE_PROGRESS_SECONDS="0.5"))
    wait_until(lambda: the_worker(worker.pid) is not None, 30, "the worker's first heartbeat")
    idle = the_worker(worker.pid)
    assert idle is not None and (idle["state"], idle["event_id"], idle["phase"]) == ("alive", None, None)
    event_id = big_event(local, WATCHED_ROWS)
    row = wait_busy(worker.pid, event_id)
    assert row["state"] == "alive" and row["phase"] in ("staging", "applying")
    assert 0 < row["rows"] <= WATCHED_ROWS and row["rows_per_second"] > 0
    assert re.fullmatch(rf"[^:]+:{worker.pid}:[0-9a-f]{{6}}", row["worker_id"]) and row["version"]
    # Later beats, between phase changes, carry the rows so far.
    later = wait_until_value(lambda: _more_rows(worker.pid, row["rows"]), 30, "a later beat with more rows")
    assert later["event_id"] == event_id and later["rows"] > row["rows"]
    # `status ID` on the processing event: its worker and progress.
    shown = json.loads(ok("status", event_id, "--json").stdout)
    assert shown["status"] == "processing", "the event ended before it could be watched"
    progress = shown["progress"]
    assert progress["worker_id"] == row["worker_id"] and progress["alive"] is True
    assert progress["phase"] in ("staging", "applying") and progress["rows"] > 0
    piped = ok("status", event_id).stdout
    if "status\tprocessing" in piped:  # piped: one `field<TAB>value` line each, progress too
        assert f"progress.worker_id\t{row['worker_id']}" in piped and "progress.rows\t" in piped
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, stderr_of(tmp_path, 0)
    assert status(local, event_id) == "completed"
    assert the_worker(worker.pid) is None  # a clean stop removes its row
    assert "no workers have sent a heartbeat" in ok("workers").stderr
    assert "progress" not in json.loads(ok("status", event_id, "--json").stdout)


def test_a_killed_busy_worker_is_gone_within_three_progress_intervals_and_shows_its_event(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # The lease stays at its default (300 s): liveness comes from the heartbeats, not the lease.
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOWER, BRIDGE_PROGRESS_SECONDS="1"))
    event_id = big_event(local)
    wait_busy(worker.pid, event_id)
    worker.kill()  # kill -9: no chance to remove its row
    worker.wait(timeout=10)
    killed_at = time.monotonic()
    row = the_worker(worker.pid)
    assert row is not None and row["event_id"] == event_id and row["state"] == "alive"
    # Gone once no heartbeat came for 3 progress intervals (3 s here; a CLI call's time on top).
    wait_until(lambda: (the_worker(worker.pid) or {}).get("state") == "gone", 10, "the worker gone", every=0.1)
    assert time.monotonic() - killed_at < 3 + 3
    gone = the_worker(worker.pid)
    assert gone is not None and gone["event_id"] == event_id and gone["phase"] in ("staging", "applying")
    piped = ok("workers").stdout
    assert f"{row['worker_id']}\tgone\t{event_id}\t{gone['phase']}" in piped
    # doctor says so, naming the event the gone worker held.
    doctor = bridge("doctor", "--json", env=cli_env())
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["workers"]["status"] == "failed"
    assert f"{row['worker_id']} (held event {event_id}, {gone['phase']})" in checks["workers"]["detail"]
    assert "--forget-gone" in checks["workers"]["fix"]


# -- bridge top, in a pseudo-terminal ---------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78]")


def _own_terminal() -> None:
    """In the child, after setsid: the pseudo-terminal becomes its controlling terminal, so that
    Ctrl-C typed there is a SIGINT, as in a real terminal (not ignored, even when the suite runs
    in the background)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """`bridge top` run in a pseudo-terminal (150x50), its screen output read as it is drawn."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen([*BRIDGE, *args], stdin=slave, stdout=slave, stderr=slave,
                                     env={**env, "TERM": "xterm-256color"}, start_new_session=True,
                                     preexec_fn=_own_terminal)
        os.close(slave)
        self.output = ""

    def read(self) -> str:
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process ended and closed the terminal
                break
            if not data:
                break
            self.output += data.decode(errors="replace")
        return ANSI.sub("", self.output)

    def wait_for(self, *texts: str, seconds: float = 30) -> None:
        wait_until(lambda: all(t in self.read() for t in texts), seconds, f"the screen to show {texts}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)


def test_top_shows_counts_workers_and_the_event_in_flight_and_quits_on_q(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOWER, BRIDGE_PROGRESS_SECONDS="0.5"))
    event_id = big_event(local, WATCHED_ROWS)
    row = wait_busy(worker.pid, event_id)
    screen = Terminal("top", "--interval", "0.5", env=cli_env())
    try:
        screen.wait_for("bridge top", "counts by status", "processing: 1", row["worker_id"], event_id,
                        "in flight", "rows/s")
        text = screen.read()
        assert "alive" in text and "dbo.big" in text
        screen.type("q")
        assert screen.proc.wait(timeout=30) == 0, screen.read()
    finally:
        screen.close()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0


def test_top_quits_on_ctrl_c_with_exit_0_and_refuses_a_pipe(local: LocalPair) -> None:
    screen = Terminal("top", "--interval", "0.5", env=cli_env())
    try:
        screen.wait_for("bridge top", "no event is being processed", "none has sent a heartbeat")
        screen.type("\x03")  # Ctrl-C, as the terminal sends it
        assert screen.proc.wait(timeout=30) == 0, screen.read()
    finally:
        screen.close()
    piped = subprocess.run([*BRIDGE, "top"], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert piped.returncode == 2 and "needs a terminal" in piped.stderr
