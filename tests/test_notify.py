"""Issue 10 §6: a real `bridge worker` under a (stand-in) systemd: it finds $NOTIFY_SOCKET, a real
unix datagram socket bound here, and says READY=1, WATCHDOG=1 on each poll, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge_cli.notify import notify
from tests import test_cli_process
from tests.backends import LocalPair
from tests.test_cli_process import cli_env, stderr_of

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its NOTIFY_SOCKET value: a file, or '@name' (abstract)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    folder = tempfile.mkdtemp(prefix="bn")  # short: a socket path has at most 107 bytes
    if request.param == "path":
        address = value = os.path.join(folder, "notify")
    else:
        value = f"@bridge-test-{os.getpid()}-{os.path.basename(folder)}"
        address = "\0" + value[1:]
    sock.bind(address)
    sock.settimeout(60)
    try:
        yield sock, value
    finally:
        sock.close()
        if request.param == "path":
            os.unlink(address)
        os.rmdir(folder)


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_a_worker_tells_systemd_ready_watchdog_and_stopping_in_order(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path,
    listener: tuple[socket.socket, str],
) -> None:
    sock, value = listener
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(NOTIFY_SOCKET=value))
    assert receive(sock) == "READY=1"
    assert "worker started" in stderr_of(tmp_path, 0)  # ready only once the stores were checked
    assert [receive(sock) for _ in range(3)] == ["WATCHDOG=1"] * 3  # one per poll
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, stderr_of(tmp_path, 0)
    sock.settimeout(0.5)
    rest = []
    while True:
        try:
            rest.append(receive(sock))
        except TimeoutError:
            break
    # Any polls that came before the signal, then STOPPING=1, last.
    assert rest and rest[-1] == "STOPPING=1", rest
    assert set(rest[:-1]) <= {"WATCHDOG=1"}, rest


def test_without_notify_socket_nothing_is_sent_and_a_dead_socket_is_no_error(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False
