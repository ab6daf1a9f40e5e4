"""Issue 10 §4, idle cost: a worker whose polls find nothing waits longer each time (up to
idle_poll_max), so an idle hour costs a handful of lake queries instead of one every poll_interval.
Time is the injected clock's, and the worker's waits advance it: an hour runs in a moment."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from bridge_cli.engine import Engine
from bridge_cli.lakes import Lake, QueueStats
from bridge_cli.metrics import WorkerMetrics
from bridge_cli.outcomes import EventResult
from bridge_cli.worker_loop import IdleBackoff
from tests.backends import Col, LocalPair
from tests.helpers import ManualClock, submit

HOUR = 3600.0


class CountingLake:
    """The real DuckDB lake, every call counted by method: each is one query on the event table."""

    def __init__(self, real: Lake) -> None:
        self._real = real
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted


class Waits:
    """Records what the worker loop announces: each wait, and each poll."""

    wants_queue_stats = False

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.polls = 0

    def on_start(self, poll_interval: float) -> None:
        pass

    def on_poll(self, ok: bool, stats: QueueStats | None) -> None:
        self.polls += 1

    def on_event(self, event_id: str) -> None:
        pass

    def on_result(self, result: EventResult) -> None:
        pass

    def on_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def on_stop(self) -> None:
        pass


def idle_worker(home: Path, until: float, **settings: Any) -> tuple[LocalPair, CountingLake, Engine, ManualClock]:
    local = LocalPair(home, poll_interval=10.0, **settings)
    clock = ManualClock()
    lake = CountingLake(local.lake)

    def wait(stop: threading.Event, seconds: float) -> None:  # the loop's wait, on the clock
        if engine.beats is not None:  # the poll's heartbeat is written during the wait, as in real time
            engine.beats.flush()
        clock.advance(seconds)
        if clock.monotonic() >= until:
            stop.set()

    engine = Engine(local.settings, cast(Lake, lake), local.target, clock=clock, wait=wait)
    return local, lake, engine, clock


def run_an_idle_hour(home: Path, observer: Any = None, **settings: Any) -> tuple[CountingLake, Waits | None]:
    _, lake, engine, _ = idle_worker(home, HOUR, **settings)
    engine.run_worker(threading.Event(), observer=observer)
    return lake, observer if isinstance(observer, Waits) else None


def test_an_idle_hour_costs_a_few_polls_instead_of_360(bridge_home: Path) -> None:
    lake, waits = run_an_idle_hour(bridge_home, Waits(), idle_poll_max=300.0)
    assert waits is not None
    # 10, 20, 40, 80, 160, then 300 s between polls for the rest of the hour.
    assert waits.waits[:7] == [10, 20, 40, 80, 160, 300, 300]
    assert sum(waits.waits) >= HOUR
    assert lake.calls["claimable_events"] == waits.polls == 16
    # The worker's heartbeat: one at start and one per idle poll, no more; its row goes at the end.
    assert lake.calls["heartbeat"] == 1 + 16
    assert lake.calls["forget_worker"] == 1
    # Beside those: one count by status at start, and one every 10 minutes while idle; the id
    # check's two reads of the workers table at start.
    assert lake.calls["list_workers"] == 2
    assert sum(lake.calls.values()) == 16 + 1 + 5 + 17 + 1 + 2
    assert "queue_stats" not in lake.calls  # no metrics, no counting query


def test_without_backoff_the_same_hour_costs_360_polls(bridge_home: Path) -> None:
    lake, _ = run_an_idle_hour(bridge_home, idle_poll_max=10.0)  # idle_poll_max = poll_interval: off
    assert lake.calls["claimable_events"] == 360


def test_metrics_count_the_queue_once_per_poll(bridge_home: Path) -> None:
    lake, _ = run_an_idle_hour(bridge_home, WorkerMetrics(), idle_poll_max=300.0)
    assert lake.calls["queue_stats"] == lake.calls["claimable_events"] == 16


def test_work_found_snaps_the_interval_back_to_poll_interval(bridge_home: Path) -> None:
    local, lake, engine, clock = idle_worker(bridge_home, 2 * HOUR, idle_poll_max=300.0)
    local.create_source("c.s.src", {"k": "int", "v": "text"}, [(1, "a")])
    local.create_target("dbo.t", [Col("k", "int", pk=True), Col("v")])
    waits = Waits()
    submitted: list[str] = []
    real_wait = cast(Callable[[threading.Event, float], None], engine.wait)

    def wait(stop: threading.Event, seconds: float) -> None:
        real_wait(stop, seconds)
        if clock.monotonic() >= HOUR and not submitted:  # an event arrives after an idle hour
            submitted.append(submit(local.lake, "insert", "dbo.t", source_table="c.s.src",
                                    primary_keys=["k"]).event_id)

    engine.wait = wait
    results: list[EventResult] = []
    engine.run_worker(threading.Event(), on_result=results.append, observer=waits)
    assert [r.status for r in results] == ["completed"]
    # It waited at most idle_poll_max for the event, then polled at poll_interval again, and
    # backed off anew once idle.
    after = waits.waits[waits.waits.index(300):]
    first_short = after.index(10)
    assert set(after[:first_short]) == {300}
    assert after[first_short:first_short + 5] == [10, 20, 40, 80, 160]


def test_the_backoff_doubles_up_to_its_cap_and_resets() -> None:
    idle = IdleBackoff(0.5, 3.0)
    assert [idle.next_wait() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    idle.reset()
    assert idle.next_wait() == 0.5
    assert [IdleBackoff(10, 5).next_wait() for _ in range(2)] == [10, 10]  # a cap below: off
