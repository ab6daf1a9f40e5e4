"""A BRIDGE_HOME that cannot be written: read commands work, write commands say so in one line.

The home is made read-only for real: each command runs as a subprocess in a private mount
namespace (`unshare --mount`) where the home is bind-mounted onto itself read-only, so the kernel
answers EROFS exactly as on a read-only file system. Skipped, saying why, where mounting is not
permitted (CI runs as root, so it runs there). The same commands on the writable home, as plain
subprocesses, are what the read commands must print.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_cli.lakes import WorkerBeat
from tests.backends import Col, LocalPair
from tests.helpers import submit

# $0 is the folder: bind-mounted onto itself, then remounted read-only; then the command runs.
READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY]


def _cannot_mount() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            [*UNSHARE, folder, "sh", "-c", 'if touch "$0/probe" 2>/dev/null; then echo writable; fi', folder],
            capture_output=True, text=True, timeout=30,
        )
    if probe.returncode != 0:
        return f"a read-only bind mount is not permitted here (needs root): {probe.stderr.strip()}"
    if "writable" in probe.stdout:
        return "the read-only bind mount did not make the folder read-only"
    return None


CANNOT_MOUNT = _cannot_mount()
pytestmark = pytest.mark.skipif(CANNOT_MOUNT is not None, reason=CANNOT_MOUNT or "")


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**env, "BRIDGE_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def bridge_command(home: Path, args: tuple[str, ...], read_only: bool, folder: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "bridge_cli", *args]
    return [*UNSHARE, str(folder or home), *command] if read_only else command


def bridge(home: Path, *args: str, read_only: bool = False, folder: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`bridge ARGS` in a process of its own; `read_only`: with `folder` (default the whole home)
    mounted read-only."""
    return subprocess.run(
        bridge_command(home, args, read_only, folder), env=environment(home), cwd=home.parent,
        capture_output=True, text=True, timeout=120,
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--stdout--\n{result.stdout}\n--stderr--\n{result.stderr}"


def make_home(home: Path) -> dict[str, str]:
    """A home as a day of use leaves it: a completed, a failed and a pending event, a worker's
    heartbeat, a target table and its ledger."""
    pair = LocalPair(home)
    pair.create_source("lakecat.sales.new_users", {"username": "text", "team": "text"},
                       [("ana", "a"), ("bruno", "b")])
    pair.create_target("dbo.users", [Col("id", "int", identity=True),
                                     Col("username", "text", unique=True, not_null=True), Col("team", "text")])
    completed = submit(pair.lake, "insert", "dbo.users", source_table="lakecat.sales.new_users",
                       primary_keys=["username"], rows_expected=2)
    failed = submit(pair.lake, "insert", "dbo.missing", source_table="lakecat.sales.new_users",
                    primary_keys=["username"])
    pair.engine().process_once()
    pending = submit(pair.lake, "insert", "dbo.users", source_table="lakecat.sales.new_users",
                     primary_keys=["username"])
    now = pair.engine().clock.now()
    pair.lake.heartbeat(WorkerBeat(
        worker_id="vm:4242", host="vm", pid=4242, version="0.1.0", started_at=now, last_seen=now,
        expires_at=now.replace(year=now.year + 1), event_id=None, phase=None, rows=None,
        rows_per_second=None,
    ))
    statuses = {e.event_id: e.status for e in pair.lake.list_events(None, 10)}
    assert statuses == {completed.event_id: "completed", failed.event_id: "failed", pending.event_id: "pending"}
    return {"completed": completed.event_id, "failed": failed.event_id, "pending": pending.event_id}


@pytest.fixture(scope="module")
def home() -> Iterator[tuple[Path, dict[str, str]]]:
    """One home for the module: nothing here can change it (it is read-only to every command that
    could; the write commands' test checks that)."""
    with tempfile.TemporaryDirectory() as folder:
        where = Path(folder) / ".bridge"
        yield where, make_home(where)


def files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


# -- commands that only read -----------------------------------------------------------------
READS = {
    "status": ("status",),
    "status --json": ("status", "--json"),
    "status --summary": ("status", "--summary"),
    "status ID": ("status", "{pending}"),
    "wait": ("wait", "{completed}", "--json"),
    "workers": ("workers",),
    "workers --json": ("workers", "--json"),
    "prune --dry-run": ("prune", "--older-than", "1s", "--failed", "--dry-run"),
}


@pytest.mark.parametrize("name", list(READS))
def test_a_read_command_prints_on_a_read_only_home_what_it_prints_on_a_writable_one(
    home: tuple[Path, dict[str, str]], name: str
) -> None:
    where, ids = home
    args = tuple(a.format(**ids) for a in READS[name])
    writable = bridge(where, *args)
    assert writable.returncode == 0, shown(writable)
    read_only = bridge(where, *args, read_only=True)
    assert (read_only.returncode, read_only.stdout, read_only.stderr) == (0, writable.stdout, writable.stderr), shown(read_only)


def test_doctor_on_a_read_only_home_runs_every_check_and_names_the_file_it_cannot_write(
    home: tuple[Path, dict[str, str]]
) -> None:
    """The checks that only read find what they find on a writable home; the event table, which
    must take a conditional update for a worker to claim anything, fails naming the file."""
    where, _ = home
    writable = bridge(where, "doctor", "--json")
    read_only = bridge(where, "doctor", "--json", read_only=True)
    assert read_only.returncode == 5 and "Traceback" not in read_only.stderr, shown(read_only)
    before = {c["name"]: c for c in json.loads(writable.stdout)}
    after = {c["name"]: c for c in json.loads(read_only.stdout)}
    event_table = after.pop("event table")
    assert event_table["status"] == "failed"
    lake_file = where / "lake" / "000-sql-databricks-bridge.duckdb"
    assert event_table["detail"].startswith(f"cannot write lake file {lake_file}: read-only file system")
    assert "writable" in event_table["fix"]
    for name, check in after.items():
        if name in ("statuses", "leases", "workers", "pauses"):  # they need the event table check to pass
            assert check["status"] == "skipped", check
        else:
            assert (check["status"], check["detail"]) == (before[name]["status"], before[name]["detail"])


# -- commands that write -----------------------------------------------------------------------
WRITES = {
    "submit": ("submit", "insert", "--source", "lakecat.sales.new_users", "--target", "dbo.users",
               "--pk", "username"),
    "init": ("init",),
    "process-once": ("process-once",),
    "prune": ("prune", "--older-than", "1s", "--failed"),
    "requeue": ("requeue", "{failed}"),
    "cancel": ("cancel", "{pending}"),
}


@pytest.mark.parametrize("name", list(WRITES))
def test_a_write_command_on_a_read_only_home_exits_5_with_one_line_naming_the_file(
    home: tuple[Path, dict[str, str]], name: str
) -> None:
    where, ids = home
    args = tuple(a.format(**ids) for a in WRITES[name])
    before = files(where)
    result = bridge(where, *args, read_only=True)
    assert files(where) == before
    assert result.returncode == 5, shown(result)
    assert "Traceback" not in result.stderr, shown(result)
    lines = result.stderr.strip().splitlines()
    lake_file = where / "lake" / "000-sql-databricks-bridge.duckdb"
    assert lines == [
        f"Error: cannot write lake file {lake_file}: read-only file system (its lock file "
        "000-sql-databricks-bridge.duckdb.lock cannot be opened for writing)"
    ], shown(result)


def test_a_worker_over_a_read_only_home_logs_one_line_per_poll_and_keeps_polling(
    home: tuple[Path, dict[str, str]]
) -> None:
    where, _ = home
    worker = subprocess.Popen(
        bridge_command(where, ("worker", "--poll-interval", "0.3"), read_only=True),
        env=environment(where), cwd=where.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(4)
        assert worker.poll() is None, "the worker died"
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "Traceback" not in err, err
    lake_file = where / "lake" / "000-sql-databricks-bridge.duckdb"
    polls = [line for line in err.splitlines() if "cannot claim events now" in line]
    assert len(polls) >= 5, err
    for line in polls:
        assert f"cannot write lake file {lake_file}: read-only file system" in line
        assert line.endswith("(retrying in 0.3s)")
    others = [line for line in err.splitlines() if line not in polls]
    expected = ("worker started", "heartbeat failed (the worker carries on): StoreNotWritable",
                "stopping on SIGTERM", "worker stopped after 0 event(s)")
    assert [next(e for e in expected if e in line) for line in others] == list(expected), err


# -- a target file that cannot be written, under a writable lake ------------------------------
def test_an_event_whose_target_file_is_read_only_goes_back_to_pending_rather_than_failing(
    tmp_path: Path,
) -> None:
    """Only the target folder is read-only: the event is claimed, cannot be applied, and is
    retried later (the file may become writable) with a warning naming the file; it used to fail
    for good with SQLite's "attempt to write a readonly database"."""
    where = tmp_path / ".bridge"
    ids = make_home(where)
    result = bridge(where, "process-once", "--json", read_only=True, folder=where / "target")
    assert result.returncode == 0, shown(result)
    [outcome] = json.loads(result.stdout)
    assert (outcome["event_id"], outcome["status"], outcome["attempts"]) == (ids["pending"], "pending", 1)
    target_file = where / "target" / "dbo.sqlite"
    assert f"cannot write target file {target_file}: read-only file system" in outcome["warning"]
    assert "Traceback" not in result.stderr
    event = json.loads(bridge(where, "status", ids["pending"], "--json").stdout)
    assert event["status"] == "pending" and event["error_message"] is None


# -- a home this user may not write (EACCES) --------------------------------------------------
def _cannot_switch_user() -> str | None:
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if os.geteuid() != 0:
        return "switching to another user needs root"
    # An interpreter under root's home (a pyenv build with a shared libpython) cannot start as nobody.
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", ""],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"this interpreter cannot run as uid 65534: {' '.join(probe.stderr.split())[:200]}"
    return None


@pytest.mark.skipif(_cannot_switch_user() is not None, reason=_cannot_switch_user() or "")
def test_a_home_another_user_owns_reads_for_this_user_and_refuses_writes_in_one_line(
    home: tuple[Path, dict[str, str]]
) -> None:
    """As `nobody` over root's home (mode 755): status works and cancel exits 5 with permission
    denied, whether the lock file refuses it (mode 644) or, when the lock file is open to all
    (666), the lake file itself."""
    where, ids = home
    folder = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(where, folder / ".bridge")
        os.chmod(folder, 0o755)
        for path in (folder / ".bridge").rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        copy = folder / ".bridge"
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*nobody, sys.executable, "-m", "bridge_cli", *args], env=environment(copy),
                                  cwd=folder, capture_output=True, text=True, timeout=120)

        status = as_nobody("status", ids["pending"], "--json")
        assert status.returncode == 0, shown(status)
        assert json.loads(status.stdout)["status"] == "pending"
        refused = as_nobody("cancel", ids["pending"])
        assert refused.returncode == 5, shown(refused)
        lake_file = copy / "lake" / "000-sql-databricks-bridge.duckdb"
        # ... and the fix: who bridge runs as, who owns the folder
        fix = (f"; bridge runs as uid 65534 and {lake_file.parent} belongs to uid 0: "
               f"chown -R 65534:65534 {lake_file.parent}, or set BRIDGE_HOME to a folder that user can write")
        assert refused.stderr.strip().splitlines() == [
            f"Error: cannot write lake file {lake_file}: permission denied (its lock file "
            f"000-sql-databricks-bridge.duckdb.lock cannot be opened for writing){fix}"
        ], shown(refused)

        os.chmod(lake_file.with_name(lake_file.name + ".lock"), 0o666)
        status = as_nobody("status", ids["pending"], "--json")
        assert status.returncode == 0, shown(status)
        assert json.loads(status.stdout)["status"] == "pending"
        refused = as_nobody("cancel", ids["pending"])
        assert refused.returncode == 5, shown(refused)
        assert refused.stderr.strip().splitlines() == [
            f"Error: cannot write lake file {lake_file}: permission denied"
        ], shown(refused)
    finally:
        shutil.rmtree(folder)
