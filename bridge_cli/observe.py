"""What a running worker tells those who watch it (metrics, a supervisor): the interface the engine
calls, so that the engine knows nothing of Prometheus or systemd."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge_cli.lakes import QueueStats
    from bridge_cli.outcomes import EventResult

log = logging.getLogger("bridge")


class WorkerObserver(Protocol):
    # True when the observer wants the queue counted on each poll (a query: on Databricks, one
    # more statement a poll, so only when someone reads it).
    wants_queue_stats: bool

    def on_start(self, poll_interval: float) -> None:
        """The loop starts."""
        ...

    def on_poll(self, ok: bool, stats: QueueStats | None) -> None:
        """A poll for events ended: ok when the lake answered; stats when asked for and counted."""
        ...

    def on_event(self, event_id: str) -> None:
        """An event was claimed and is now in hand."""
        ...

    def on_result(self, result: EventResult) -> None:
        """The event in hand ended (completed, failed, retried later or lost)."""
        ...

    def on_wait(self, seconds: float) -> None:
        """The loop waits this long before its next poll."""
        ...

    def on_stop(self) -> None:
        """The loop ended."""
        ...


class Observers:
    """Several observers as one. An observer that raises is logged, never the worker's death."""

    def __init__(self, observers: Sequence[WorkerObserver]) -> None:
        self.observers = list(observers)
        self.wants_queue_stats = any(o.wants_queue_stats for o in self.observers)

    def _each(self, name: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, name)(*args)
            except Exception as exc:
                log.warning("%s.%s failed: %s: %s", type(observer).__name__, name, type(exc).__name__, exc)

    def on_start(self, poll_interval: float) -> None:
        self._each("on_start", poll_interval)

    def on_poll(self, ok: bool, stats: QueueStats | None) -> None:
        self._each("on_poll", ok, stats)

    def on_event(self, event_id: str) -> None:
        self._each("on_event", event_id)

    def on_result(self, result: EventResult) -> None:
        self._each("on_result", result)

    def on_wait(self, seconds: float) -> None:
        self._each("on_wait", seconds)

    def on_stop(self) -> None:
        self._each("on_stop")
