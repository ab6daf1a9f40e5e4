"""Read ahead: the next source batches are read in a thread while the current one is written.

A small bounded queue keeps memory to a few batches whatever the table's size. An error while
reading reaches the writer at the point where the failed batch would have; when the writer stops
early (its own error), the reader is told to stop and the source is closed in its own thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

DEFAULT_DEPTH = 2  # batches waiting in the queue; one more is being read, one being written


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


def read_ahead(items: Iterable[T], depth: int = DEFAULT_DEPTH) -> Iterator[T]:
    waiting: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the writer, raised there
            put(_Failed(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    # In the caller's context: its log lines say which worker and event they are about.
    context = contextvars.copy_context()
    reader = threading.Thread(target=context.run, args=(read,), daemon=True, name="source-reader")
    reader.start()
    try:
        while True:
            item = waiting.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while reader.is_alive():  # free a reader blocked on a full queue, then let it finish
            with contextlib.suppress(queue.Empty):
                waiting.get(timeout=0.1)
        reader.join()
