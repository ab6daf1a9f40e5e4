"""Read-ahead of source batches: order kept, errors delivered, the reader bounded and stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bridge_cli.prefetch import read_ahead


def test_items_arrive_in_order_and_all_of_them() -> None:
    assert list(read_ahead(iter(range(1000)), depth=2)) == list(range(1000))


def test_the_next_item_is_read_while_the_current_one_is_worked_on() -> None:
    second_read = threading.Event()

    def source() -> Iterator[int]:
        yield 0
        second_read.set()
        yield 1

    items = read_ahead(source())
    assert next(items) == 0
    # Without read-ahead the source would not run again until the consumer asked for item 1.
    assert second_read.wait(5)
    assert list(items) == [1]


def test_the_reader_runs_at_most_a_few_items_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    items = read_ahead(source(), depth=2)
    assert next(items) == 0
    time.sleep(0.3)
    # one handed out, two waiting in the queue, one held by the blocked reader
    assert len(produced) <= 4
    items.close()


def test_a_read_error_reaches_the_consumer_after_the_good_items() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("source table vanished")

    got = []
    with pytest.raises(RuntimeError, match="vanished"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(10_000)
        finally:
            closed.set()

    for item in read_ahead(source()):
        if item == 3:
            break
    assert closed.wait(2)
    assert not any(t.name == "source-reader" and t.is_alive() for t in threading.enumerate())
