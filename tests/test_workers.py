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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import test_cli_process
from tests.backends import LocalPair
from tests.test_cli_process import BRIDGE, cli_env, ok, stderr_of, wait_until
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


def test_a_busy_worker_is_listed_with_its_event_phase_and_rows_and_leaves_on_sigterm(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # A 1.5 s lease: renewed, and so heartbeats sent, twice a second while the event is in hand.
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOWER, BRIDGE_LEASE_SECONDS="1.5"))
    wait_until(lambda: the_worker(worker.pid) is not None, 30, "the worker's first heartbeat")
    idle = the_worker(worker.pid)
    assert idle is not None and (idle["state"], idle["event_id"], idle["phase"]) == ("alive", None, None)
    event_id = big_event(local, WATCHED_ROWS)
    row = wait_busy(worker.pid, event_id)
    assert row["state"] == "alive" and row["phase"] in ("staging", "applying")
    assert 0 < row["rows"] <= WATCHED_ROWS and row["rows_per_second"] > 0
    assert row["worker_id"].endswith(f":{worker.pid}") and row["version"]
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


def test_a_killed_worker_shows_as_gone_once_its_lease_runs_out(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOWER, BRIDGE_LEASE_SECONDS="2"))
    event_id = big_event(local)
    wait_busy(worker.pid, event_id)
    worker.kill()  # kill -9: no chance to remove its row
    worker.wait(timeout=10)
    row = the_worker(worker.pid)
    assert row is not None and row["event_id"] == event_id
    # Gone once no heartbeat came for lease_seconds (3 missed renewals), still listed.
    wait_until(lambda: (the_worker(worker.pid) or {}).get("state") == "gone", 15, "the worker gone")
    piped = ok("workers").stdout
    assert f"{row['worker_id']}\tgone\t{event_id}" in piped


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
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(**SLOWER, BRIDGE_LEASE_SECONDS="1.5"))
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
