"""What every log line says about where it comes from: the worker, and the event in hand.

The engine sets these; the reporting module's formatter writes them on each record. No rich here.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

worker_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("worker_id", default=None)
event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)


@contextmanager
def about_event(value: str) -> Iterator[None]:
    """Log lines written inside are about this event."""
    token = event_id.set(value)
    try:
        yield
    finally:
        event_id.reset(token)


class ContextFilter(logging.Filter):
    """Puts worker_id and event_id on every record (None when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker_id"):
            record.worker_id = worker_id.get()
        if not hasattr(record, "event_id"):
            record.event_id = event_id.get()
        return True
