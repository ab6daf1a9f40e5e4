"""Issue 8 §2, "a worker never dies of a store error": an error is injected into each method of
the Lake and Target protocols (and of the target's session), in each phase a worker calls it,
and the worker must live on and end every event exactly once.

The real embedded adapters (DuckDB lake, SQLite target) do the work; a proxy around each raises
on the Nth call of one chosen method and phase (fault injected: the test names say so). The
matrix is checked against the protocols themselves, so that a method added to a protocol cannot
be left out of it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import pyarrow  # noqa: F401  (see below)
import pytest

from bridge_cli.engine import Engine
from bridge_cli.errors import ConnectionFailure, TransientError
from bridge_cli.lakes import Lake
from bridge_cli.metrics import WorkerMetrics
from bridge_cli.targets import Target, TargetSession
from tests.backends import Col, LocalPair
from tests.helpers import submit

# pyarrow (and numpy) are imported here, in the main thread, before any worker runs: otherwise
# the first source read imports them in the reader thread, and a DuckDB connection opened by
# another thread meanwhile was seen to crash the interpreter (a segfault in duckdb.connect).


class NativePanic(BaseException):
    """Stands in for a native driver's panic (pyo3's PanicException): a BaseException, not an
    Exception."""


# What is raised, by kind: an error no adapter knows, the adapter's own transient error (a lake's
# TransientError, a target's ConnectionFailure), and a native panic.
KINDS = ("unknown", "known", "panic")


def make_error(kind: str, where: str) -> BaseException:
    if kind == "unknown":
        return RuntimeError(f"IO Error: store broke in {where} (injected)")
    if kind == "panic":
        return NativePanic(f"{where}: dest is out of bounds (injected)")
    if where.startswith("lake."):
        return TransientError(f"{where}: lost connection (injected)")
    return ConnectionFailure(f"{where}: cannot reach the target (injected)")


@dataclass(frozen=True)
class Phase:
    """Where a fault fires: the Nth call of `method` (in `phase`), at `moment` of that call."""

    method: str  # "lake.<name>", "target.<name>" or "session.<name>"
    phase: str  # which of the worker's uses of the method (e.g. claim, renew, record)
    moment: str = "before"  # before the real call, after it (it took effect), or mid-stream
    nth: int = 1
    before_claim: bool = False  # no event had been claimed yet when it fired
    after_commit: str | None = None  # the event it hits once applied ("insert" or "delete")

    @property
    def id(self) -> str:
        nth = f"#{self.nth}" if self.nth != 1 else ""
        return f"{self.method}:{self.phase}:{self.moment}{nth}"


# Every phase in which a worker calls each protocol method.
MATRIX: dict[str, list[Phase]] = {
    "lake.count_by_status": [Phase("lake.count_by_status", "start", before_claim=True)],
    "lake.claimable_events": [Phase("lake.claimable_events", "claim", before_claim=True)],
    # Counted after each poll for the worker's metrics (the scenario's worker has them on).
    "lake.queue_stats": [Phase("lake.queue_stats", "poll")],
    # The worker's heartbeat: at start and on idle polls (no event in hand), and on each change
    # while an event is in hand (from its writer thread); its row is removed when the worker stops.
    "lake.heartbeat": [
        Phase("lake.heartbeat", "idle", before_claim=True),  # the first: at start
        Phase("lake.heartbeat", "busy"),
    ],
    "lake.forget_worker": [Phase("lake.forget_worker", "stop")],
    # At start: no live worker may hold this worker's id (read before and after its first beat).
    "lake.list_workers": [Phase("lake.list_workers", "start", before_claim=True)],
    # `bridge pause`: read when a claim finds claimable events (and with the metrics' counts).
    "lake.list_pauses": [Phase("lake.list_pauses", "call", before_claim=True)],
    # `bridge cancel` of the event in hand: looked for before applying and with lease renewals.
    "lake.cancel_request": [Phase("lake.cancel_request", "call")],
    "lake.update_event_if": [
        Phase("lake.update_event_if", "claim", "before", before_claim=True),
        Phase("lake.update_event_if", "claim", "after"),  # claimed, but the worker never heard
        Phase("lake.update_event_if", "renew", "before"),
        Phase("lake.update_event_if", "renew", "after"),
        Phase("lake.update_event_if", "record", "before", after_commit="insert"),  # result not recorded
        Phase("lake.update_event_if", "record", "after"),  # recorded, but the worker never heard
    ],
    "lake.get_events": [Phase("lake.get_events", "call")],  # the one-row-per-id check after a claim
    "lake.source_columns": [Phase("lake.source_columns", "source")],
    "lake.read_source": [
        Phase("lake.read_source", "source", "call"),  # the call itself raises
        Phase("lake.read_source", "source", "start"),  # the stream raises before any batch
        Phase("lake.read_source", "source", "middle"),  # the stream raises after one batch
    ],
    "target.check_ready": [
        Phase("target.check_ready", "start", before_claim=True),
        Phase("target.check_ready", "claim", before_claim=True),  # in the loop, before claiming
    ],
    "target.ledger_entry": [Phase("target.ledger_entry", "apply")],
    "target.describe_table": [Phase("target.describe_table", "apply")],
    "target.session": [
        Phase("target.session", "call"),  # session() itself raises
        Phase("target.session", "enter"),  # entering it raises (nothing opened)
        Phase("target.session", "exit", after_commit="insert"),  # leaving it raises, after the commit
    ],
    "session.stage_rows": [
        Phase("session.stage_rows", "stage", "before"),
        Phase("session.stage_rows", "stage", "middle"),  # the load fails after one batch
    ],
    "session.apply": [
        Phase("session.apply", "apply", "before"),  # nothing committed
        Phase("session.apply", "apply", "after", after_commit="insert"),  # committed, never heard
        Phase("session.apply", "apply", "after", nth=2, after_commit="delete"),  # the same, DELETE
    ],
}

# Protocol methods a worker never calls (an operator's commands do): a fault there cannot reach a
# worker. test_the_matrix_covers_every_method_a_worker_calls checks that a worker indeed never
# calls them.
NOT_CALLED_BY_WORKERS = {
    "lake.init_event_table",
    "lake.insert_event",
    "lake.get_event",
    "lake.list_events",
    "lake.delete_finished_events",  # bridge prune
    "lake.count_rows",  # only with spark_min_rows set: tests/test_spark_path.py injects its faults
    "lake.add_pause",  # bridge pause
    "target.describe_driver",  # once, for the start line, before the loop (no I/O: the choice is made)
    "lake.remove_pauses",  # bridge resume
    "lake.request_cancel",  # bridge cancel
    "lake.forget_cancel_request",  # after a cancelled event (tests/test_pause_cancel*.py)
    "target.init_ledger",
    "target.connect_ahead",  # the CLI's, before the engine; what it meets, check_ready raises (above)
    "target.delete_ledger_entries",  # bridge prune
    "target.check_staging",  # bridge doctor
    "target.leftover_stages",  # bridge doctor
}


def protocol_methods(protocol: type, prefix: str) -> set[str]:
    return {
        f"{prefix}.{name}"
        for name, value in vars(protocol).items()
        if callable(value) and not name.startswith("_")
    }


# -- the fault-injecting proxies ----------------------------------------------------------------
class Injector:
    """Counts every call through the proxies by (method, phase) and raises the planned fault
    once. Called from the worker, the lease keeper and the source reader: thread-safe."""

    def __init__(self, plan: Phase | None, kind: str) -> None:
        self.plan = plan
        self.kind = kind
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.fired = 0
        self.commits: Counter[str] = Counter()  # event id -> applies that committed
        # Staging waits for a lease renewal (with a renewal fault: for the same lease keeper's next
        # renewal after the failed one), so that renewals happen while an event is in hand.
        # A heartbeat while busy rides on a renewal: held the same way.
        self.hold_for_renewal = plan is not None and plan.phase in ("renew", "busy")
        self.fault_token: str | None = None  # the claim whose renewal failed
        self.renewed = threading.Event()
        self.events: set[str] = set()  # the events of the scenario
        self.settled: dict[str, str] = {}  # event id -> completed or failed, as written
        self.all_settled = threading.Event()

    def count(self, method: str, phase: str) -> bool:
        """Count a call; True when it is the one the fault fires on."""
        with self.lock:
            self.calls[(method, phase)] += 1
            plan = self.plan
            return (
                plan is not None and self.fired == 0 and (plan.method, plan.phase) == (method, phase)
                and self.calls[(method, phase)] == plan.nth
            )

    def raise_fault(self) -> None:
        assert self.plan is not None
        with self.lock:
            self.fired += 1
        raise make_error(self.kind, self.plan.id)

    def moment(self) -> str:
        assert self.plan is not None
        return self.plan.moment

    def call(self, method: str, phase: str, real: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A plain call, failing before or after the real one."""
        fire = self.count(method, phase)
        if fire and self.moment() == "before":
            self.raise_fault()
        result = real(*args, **kwargs)
        if fire:
            self.raise_fault()
        return result

    def settle(self, event_id: str, status: str) -> None:
        with self.lock:
            self.settled[event_id] = status
            if set(self.settled) >= self.events:
                self.all_settled.set()

    def renewal_done(self, token: str | None, fired_before: int) -> None:
        with self.lock:
            if self.plan is None or self.plan.phase != "renew":
                self.renewed.set()
            elif not fired_before and self.fired:
                self.fault_token = token  # this renewal failed
            elif fired_before and token == self.fault_token:
                self.renewed.set()  # the same keeper renewed again after the fault

    def wait_for_renewal(self) -> None:
        """Hold the event in hand until its lease was renewed as wanted: not a sleep, it ends
        when that has happened."""
        if self.hold_for_renewal:
            self.renewed.wait(timeout=10)


def update_phase(changes: dict[str, Any]) -> str:
    if changes.get("status") == "processing":
        return "claim"
    if set(changes) == {"lease_expires_at", "updated_at"}:
        return "renew"
    return "record"


class _Faulty:
    """A real adapter behind a proxy: every method not defined here goes through the injector,
    named `<prefix>.<method>`."""

    prefix = ""

    def __init__(self, real: Any, injector: Injector) -> None:
        self._real = real
        self._injector = injector

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        if not callable(value):
            return value

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self._injector.call(f"{self.prefix}.{name}", "call", value, *args, **kwargs)

        return wrapped


class FaultyLake(_Faulty):
    """The real lake behind a proxy: every protocol method goes through the injector."""

    prefix = "lake"

    def count_by_status(self) -> dict[str, int]:
        return cast(dict[str, int], self._injector.call("lake.count_by_status", "start", self._real.count_by_status))

    def claimable_events(self, *args: Any, **kwargs: Any) -> Any:
        return self._injector.call("lake.claimable_events", "claim", self._real.claimable_events, *args, **kwargs)

    def queue_stats(self) -> Any:
        return self._injector.call("lake.queue_stats", "poll", self._real.queue_stats)

    def heartbeat(self, beat: Any) -> None:
        phase = "busy" if beat.event_id is not None else "idle"
        self._injector.call("lake.heartbeat", phase, self._real.heartbeat, beat)

    def forget_worker(self, worker_id: str, expired_before: Any = None) -> None:
        self._injector.call("lake.forget_worker", "stop", self._real.forget_worker, worker_id, expired_before)

    def list_workers(self) -> Any:
        return self._injector.call("lake.list_workers", "start", self._real.list_workers)

    def source_columns(self, *args: Any, **kwargs: Any) -> Any:
        return self._injector.call("lake.source_columns", "source", self._real.source_columns, *args, **kwargs)

    def update_event_if(self, event_id: str, expected: Any, changes: Any) -> bool:
        injector = self._injector
        phase = update_phase(changes)

        def update(*args: Any) -> bool:
            done = self._real.update_event_if(*args)
            if done and changes.get("status") in ("completed", "failed"):
                injector.settle(event_id, changes["status"])  # written, whether heard or not
            return done

        fired_before = injector.fired
        try:
            return bool(injector.call("lake.update_event_if", phase, update, event_id, expected, changes))
        finally:
            if phase == "renew":
                injector.renewal_done(expected.get("claim_token"), fired_before)

    def read_source(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        injector = self._injector
        fire = injector.count("lake.read_source", "source")
        if fire and injector.moment() == "call":
            injector.raise_fault()
        batches = self._real.read_source(*args, **kwargs)
        if not fire:
            return batches
        return self._failing_stream(batches)

    def _failing_stream(self, batches: Iterator[Any]) -> Iterator[Any]:
        try:
            if self._injector.moment() == "start":
                self._injector.raise_fault()
            yield next(batches)
            self._injector.raise_fault()
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()


class FaultySession:
    def __init__(self, real: TargetSession, injector: Injector) -> None:
        self._real = real
        self._injector = injector

    def stage_rows(self, plan: Any, batches: Iterable[Any]) -> int:
        injector = self._injector
        injector.wait_for_renewal()
        fire = injector.count("session.stage_rows", "stage")
        if fire and injector.moment() == "before":
            injector.raise_fault()
        if fire:  # "middle": the load fails after one batch went in
            return self._real.stage_rows(plan, self._failing(batches))
        return self._real.stage_rows(plan, batches)

    def _failing(self, batches: Iterable[Any]) -> Iterator[Any]:
        for batch in batches:
            yield batch
            self._injector.raise_fault()

    def apply(self, plan: Any, applied_at: Any, before_commit: Any = None) -> int:
        injector = self._injector
        fire = injector.count("session.apply", "apply")
        if fire and injector.moment() == "before":
            injector.raise_fault()
        rows = self._real.apply(plan, applied_at, before_commit)  # AlreadyApplied when the ledger has it
        with injector.lock:
            injector.commits[plan.event_id] += 1
        if fire:
            injector.raise_fault()
        return rows


class FaultySessionContext:
    def __init__(self, real: Any, injector: Injector) -> None:
        self._real = real
        self._injector = injector

    def __enter__(self) -> FaultySession:
        if self._injector.count("target.session", "enter"):
            self._injector.raise_fault()
        return FaultySession(self._real.__enter__(), self._injector)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool | None:
        fire = self._injector.count("target.session", "exit")
        result = cast("bool | None", self._real.__exit__(kind, error, trace))  # it closes, then:
        if fire:
            self._injector.raise_fault()
        return result


class FaultyTarget(_Faulty):
    prefix = "target"

    def check_ready(self) -> None:
        # The first call is the worker's check at start; the loop's calls are numbered apart.
        with self._injector.lock:
            phase = "claim" if self._injector.calls[("target.check_ready", "start")] else "start"
        self._injector.call("target.check_ready", phase, self._real.check_ready)

    def ledger_entry(self, *args: Any, **kwargs: Any) -> Any:
        return self._injector.call("target.ledger_entry", "apply", self._real.ledger_entry, *args, **kwargs)

    def describe_table(self, *args: Any, **kwargs: Any) -> Any:
        return self._injector.call("target.describe_table", "apply", self._real.describe_table, *args, **kwargs)

    def session(self) -> FaultySessionContext:
        if self._injector.count("target.session", "call"):
            self._injector.raise_fault()
        return FaultySessionContext(self._real.session(), self._injector)


# -- the scenario --------------------------------------------------------------------------------
INSERT_ROWS = [(k, f"new {k}") for k in range(1, 6)]


@dataclass
class Scenario:
    local: LocalPair
    injector: Injector
    engine: Engine
    events: dict[str, str]  # operation -> event id


@dataclass(frozen=True)
class Template:
    home: Path
    events: dict[str, str]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Two pending events on two tables (so their order does not matter): a 5-row INSERT and a
    2-row DELETE. Made once; each test works on a copy."""
    home = tmp_path_factory.mktemp("fault-matrix") / ".bridge"
    local = LocalPair(home)
    local.create_target("dbo.ins", [Col("k", "int", pk=True), Col("v")])
    local.create_target("dbo.del", [Col("k", "int", pk=True), Col("v")])
    local.insert_target_rows("dbo.del", ["k", "v"], [(1, "a"), (2, "b"), (3, "c")])
    local.create_source("c.s.ins", {"k": "int", "v": "text"}, INSERT_ROWS)
    events = {
        "insert": submit(local.lake, "insert", "dbo.ins", source_table="c.s.ins", primary_keys=["k"]).event_id,
        "delete": submit(local.lake, "delete", "dbo.del", filter_conditions={"k": [1, 2]}).event_id,
    }
    return Template(home, events)


def scenario(template: Template, home: Path, plan: Phase | None, kind: str) -> Scenario:
    """A copy of the template's stores, a short lease, no backoff, the INSERT read in batches
    of 2 (3 batches), and an engine whose lake and target are the fault-injecting proxies."""
    shutil.copytree(template.home, home)
    local = LocalPair(home, lease_seconds=0.6, batch_rows=2, retry_backoff=0.0, max_attempts=5)
    injector = Injector(plan, kind)
    injector.events = set(template.events.values())
    engine = local.engine()
    engine.lake = cast(Lake, FaultyLake(local.lake, injector))
    engine.target = cast(Target, FaultyTarget(local.target, injector))
    return Scenario(local, injector, engine, dict(template.events))


def helper_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name in ("lease-keeper", "source-reader")}


def run_until_settled(case: Scenario, timeout: float = 30.0) -> None:
    """Run the worker in a thread until every event's end (completed or failed) is written,
    check it is still alive, then stop it and check it, and the threads it started, ended."""
    stop = threading.Event()
    died: list[BaseException] = []
    before = helper_threads()
    left_running: list[str] = []

    def on_result(result: Any) -> None:
        # When a result is recorded, the event's lease keeper and source reader have ended.
        left_running.extend(t.name for t in helper_threads() - before if t.is_alive())

    def work() -> None:
        try:
            case.engine.run_worker(stop, poll_interval=0.05, on_result=on_result, observer=WorkerMetrics())
        except BaseException as exc:
            died.append(exc)
            raise

    worker = threading.Thread(target=work, name="fault-matrix-worker", daemon=True)
    worker.start()
    # Watched through the proxy, which sees every write of an event's end: the lake is left to
    # the worker meanwhile.
    deadline = time.monotonic() + timeout
    while not case.injector.all_settled.wait(0.1) and worker.is_alive() and time.monotonic() < deadline:
        pass
    alive = worker.is_alive()
    stop.set()
    worker.join(timeout=30)
    assert not died, f"the worker died of {died[0]!r}"
    assert alive, "the worker thread ended before it was told to stop"
    assert not worker.is_alive(), "the worker did not stop when told to"
    assert case.injector.all_settled.is_set(), f"events not settled: only {case.injector.settled}"
    assert not left_running, f"threads still running when a result was recorded: {left_running}"
    for thread in helper_threads() - before:
        thread.join(timeout=5)
        assert not thread.is_alive(), f"thread {thread.name} outlived its event"


def check_exactly_once(case: Scenario) -> dict[str, int]:
    """Every event completed, its change applied once and its ledger row written once; returns
    each event's attempts."""
    local = case.local
    plan = case.injector.plan
    stored = {op: local.lake.get_event(event_id) for op, event_id in case.events.items()}
    for op, event in stored.items():
        assert event is not None
        assert event.status == "completed", (op, event.status, event.error_message, event.warning)
        assert event.error_message is None
        assert event.claim_token is None and event.lease_expires_at is None
        # Completed from the ledger (found applied, not applied again) only when the fault came
        # after this event's commit.
        from_ledger = "already applied" in (event.warning or "")
        assert from_ledger == (plan is not None and plan.after_commit == op), (op, event.warning)
    assert {op: e.rows_affected for op, e in stored.items() if e} == {"insert": 5, "delete": 2}
    assert local.target_rows("dbo.ins", ["k", "v"], "k") == INSERT_ROWS
    assert local.target_rows("dbo.del", ["k", "v"], "k") == [(3, "c")]
    assert local.ledger_ids() == sorted(case.events.values())
    # Nothing applied twice: one committed apply per event (a second try finds the ledger row).
    assert case.injector.commits == Counter(case.events.values())
    return {op: e.attempts or 0 for op, e in stored.items() if e}


# -- the tests -----------------------------------------------------------------------------------
def test_the_matrix_covers_every_protocol_method_fault_injected() -> None:
    methods = (
        protocol_methods(Lake, "lake")
        | protocol_methods(Target, "target")
        | protocol_methods(TargetSession, "session")
    )
    covered = set(MATRIX) | NOT_CALLED_BY_WORKERS
    assert methods - covered == set(), "protocol methods missing from the fault matrix"
    assert covered - methods == set(), "the fault matrix names methods the protocols lack"
    assert all(MATRIX.values())
    for method, phases in MATRIX.items():
        assert all(p.method == method for p in phases)
    # The session is a context manager: entering and leaving it are phases too.
    assert {p.phase for p in MATRIX["target.session"]} >= {"call", "enter", "exit"}


def test_the_matrix_covers_every_method_a_worker_calls_fault_injected(
    template: Template, bridge_home: Path
) -> None:
    """Without a fault: a worker calls every method and phase in the matrix, and none of the
    methods said not to be called by workers."""
    case = scenario(template, bridge_home, None, "unknown")
    case.injector.hold_for_renewal = True
    run_until_settled(case)
    check_exactly_once(case)
    called = case.injector.calls
    for phases in MATRIX.values():
        for phase in phases:
            assert called[(phase.method, phase.phase)] >= phase.nth, f"{phase.id} never happens"
    assert not {method for method, _ in called} & NOT_CALLED_BY_WORKERS


CASES = [
    pytest.param(phase, kind, id=f"{phase.id}-{kind}")
    for phases in MATRIX.values()
    for phase in phases
    for kind in KINDS
]


@pytest.mark.parametrize(("plan", "kind"), CASES)
def test_worker_lives_and_ends_each_event_once_fault_injected(
    template: Template, bridge_home: Path, plan: Phase, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = scenario(template, bridge_home, plan, kind)
    with caplog.at_level(logging.WARNING, logger="bridge"):
        run_until_settled(case)
    assert case.injector.fired == 1, f"the fault at {plan.id} never fired"
    if plan.phase == "renew":  # the lease keeper lived on: it renewed the same claim again
        assert case.injector.renewed.is_set(), "the lease keeper did not renew after the fault"
    attempts = check_exactly_once(case)
    if plan.before_claim:
        assert attempts == {"insert": 1, "delete": 1}
    else:
        assert all(1 <= a <= 3 for a in attempts.values()), attempts
    if kind != "known":  # an error no adapter knows is logged with its type
        name = type(make_error(kind, "")).__name__
        logged = [r for r in caplog.records if name in r.getMessage() or (r.exc_info and r.exc_info[0]
                  and r.exc_info[0].__name__ == name)]
        assert logged, f"no log line names {name}"
