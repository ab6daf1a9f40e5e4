"""What a deployment meets before the first event, in real processes: a config the user cannot
read, a data folder it cannot write (a root-owned bind mount), a stop that comes while the worker
starts, and the metrics server bound to one address (`--metrics-host`, `metrics_host`).

Permissions are real: as root (CI), each command runs under `setpriv` without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH, so the kernel checks file modes for root as for anyone else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import test_cli_process
from tests.backends import LocalPair
from tests.test_cli_process import BRIDGE, cli_env, ok, show, stderr_of, wait_until
from tests.test_metrics import free_port

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end

AS_ROOT = os.geteuid() == 0
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if AS_ROOT else []
needs_file_modes = pytest.mark.skipif(AS_ROOT and shutil.which("setpriv") is None,
                                      reason="running as root without setpriv (util-linux) to drop DAC override")


def unprivileged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NO_OVERRIDE, *BRIDGE, *args], env=env or cli_env(), capture_output=True,
                          text=True, timeout=120, check=False)


@needs_file_modes
def test_a_config_the_user_cannot_read_is_one_line_with_the_fix(bridge_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("profiles: {prod: {lake: {kind: duckdb}, target: {kind: sqlite}}}\n")
    config.chmod(0o000)  # as a secret mounted with mode 0600 for another uid reads
    for result in (unprivileged("--config", str(config), "status"),
                   unprivileged("status", env=cli_env(BRIDGE_CONFIG=str(config)))):
        assert result.returncode == 5, show(result)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, show(result)
        assert f"cannot read config file {config}: Permission denied" in lines[0]
        assert f"uid {os.getuid()}" in lines[0] and f"chmod a+r {config}" in lines[0]


@needs_file_modes
def test_a_data_folder_the_user_cannot_write_is_one_line_with_the_fix(bridge_home: Path, tmp_path: Path) -> None:
    bridge_home.mkdir()
    bridge_home.chmod(0o555)  # as a bind mount owned by another user (root) is to this one
    try:
        init = unprivileged("init")
        demo = subprocess.run([*NO_OVERRIDE, sys.executable, "-m", "bridge_cli.demo"], env=cli_env(),
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        bridge_home.chmod(0o755)
    for result in (init, demo):
        assert result.returncode == 5, show(result)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, show(result)
        assert f"cannot write lake folder {bridge_home}/lake: permission denied" in lines[0]
        assert f"bridge runs as uid {os.getuid()}" in lines[0]
        assert f"chown -R {os.getuid()}:{os.getgid()} {bridge_home}" in lines[0]
    ok("init")  # writable again: the same command works
    assert (bridge_home / "lake").is_dir()


def caught_signals(pid: int) -> int:
    """The process's mask of signals it has handlers for (/proc/PID/status SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def catches(pid: int, sig: int) -> bool:
    try:
        return bool(caught_signals(pid) & (1 << (sig - 1)))
    except FileNotFoundError:
        return False


def test_sigterm_while_the_worker_starts_is_a_clean_stop(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # As `docker stop` right after `docker run`: the signal comes while Python still imports.
    worker = spawn("worker", "--poll-interval", "0.1")
    wait_until(lambda: catches(worker.pid, signal.SIGTERM), 10, "bridge to catch SIGTERM", every=0.001)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, stderr_of(tmp_path, 0)
    assert time.monotonic() - started < 3
    log = stderr_of(tmp_path, 0)
    assert "stopped before it started" in log or "stopping on SIGTERM" in log, log
    assert "Traceback" not in log


def test_sigterm_still_ends_other_commands_at_once(local: LocalPair, tmp_path: Path) -> None:
    event_id = ok("submit", "delete", "--target", "dbo.t", "--filter", '{"k": 1}', "-q").stdout.strip()
    waiting = subprocess.Popen([*BRIDGE, "wait", event_id, "--timeout", "120", "--interval", "1"],
                               env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # well past start-up: waiting on the event
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=10) == -signal.SIGTERM  # the default action, as before
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()


def answers(host: str, port: int) -> int:
    """The HTTP status of /healthz at host:port; 0 when nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


@pytest.mark.parametrize("how", ["option", "profile", "default"])
def test_metrics_host_binds_one_address(
    how: str, local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # 127.0.0.1 and 127.0.0.2 are both this machine (all of 127/8 is loopback on Linux): a server
    # bound to one address does not answer on the other; bound to every interface it answers on both.
    port = free_port()
    if how == "option":
        worker = spawn("worker", "--poll-interval", "0.1", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
        bound, other = "127.0.0.1", "127.0.0.2"
    elif how == "profile":
        worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(
            BRIDGE_METRICS_PORT=str(port), BRIDGE_METRICS_HOST="127.0.0.2"))
        bound, other = "127.0.0.2", "127.0.0.1"
    else:
        worker = spawn("worker", "--poll-interval", "0.1", "--metrics-port", str(port))
        bound, other = "127.0.0.1", ""
    wait_until(lambda: answers(bound, port) == 200, 60, f"/healthz on {bound}")
    if other:
        assert answers(other, port) == 0
    else:
        assert answers("127.0.0.2", port) == 200
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert f"serving metrics on {'' if how == 'default' else bound}:{port}" in stderr_of(tmp_path, 0)


def test_a_metrics_host_that_is_not_here_is_a_clear_error(local: LocalPair) -> None:
    result = subprocess.run([*BRIDGE, "worker", "--metrics-port", str(free_port()), "--metrics-host", "192.0.2.1"],
                            env=cli_env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 5, show(result)
    assert "metrics 192.0.2.1:" in result.stderr and "cannot listen" in result.stderr
