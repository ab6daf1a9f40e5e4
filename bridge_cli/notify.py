"""systemd's sd_notify, without libsystemd: one datagram to $NOTIFY_SOCKET per message.

A worker under `Type=notify` says READY=1 when its loop starts, WATCHDOG=1 on each poll (and
after each event), and STOPPING=1 when told to stop. Without NOTIFY_SOCKET nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge_cli.lakes import QueueStats
    from bridge_cli.outcomes import EventResult

log = logging.getLogger("bridge")


def socket_address(value: str) -> str:
    """NOTIFY_SOCKET as a socket address: '@name' is the abstract socket '\\0name'."""
    return "\0" + value[1:] if value.startswith("@") else value


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one message (e.g. "READY=1"); False when there is no NOTIFY_SOCKET or it failed.
    Never raises: a supervisor that stopped listening is no reason to stop working."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not value:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(socket_address(value))
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify %r to %s: %s", message, value, exc)
        return False
    return True


class SystemdNotifier:
    """A WorkerObserver that tells systemd (Type=notify) how the worker loop is doing."""

    wants_queue_stats = False

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return bool(self.env.get("NOTIFY_SOCKET"))

    def send(self, message: str) -> bool:
        return notify(message, self.env)

    def stopping(self) -> None:
        """Told to stop: the event in hand is finished first (TimeoutStopSec must allow it), and
        no more WATCHDOG=1 is sent (systemd's watchdog does not run while a service stops)."""
        self._stopping = True
        self.send("STOPPING=1")

    def _alive(self) -> None:
        if not self._stopping:
            self.send("WATCHDOG=1")

    def on_start(self, poll_interval: float) -> None:
        self.send("READY=1")

    def on_poll(self, ok: bool, stats: QueueStats | None) -> None:
        self._alive()

    def on_event(self, event_id: str) -> None:
        pass

    def on_result(self, result: EventResult) -> None:
        self._alive()

    def on_wait(self, seconds: float) -> None:
        pass

    def on_stop(self) -> None:
        pass
