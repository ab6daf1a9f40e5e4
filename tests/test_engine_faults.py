"""Faults the embedded pair cannot produce on demand, injected at the lake boundary (the test
names say so); the engine's answer is what is under test."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from bridge_cli.errors import TransientError
from bridge_cli.lakes.duckdb import DuckDBLake
from tests.backends import Col, LocalPair
from tests.helpers import submit


def run_until_one_result(engine: Any) -> list[Any]:
    stop = threading.Event()
    done: list[Any] = []

    def on_result(result: Any) -> None:
        done.append(result)
        stop.set()

    worker = threading.Thread(target=engine.run_worker, args=(stop, 0.05, None, on_result))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    return done


class LakeFailingToRecordOnce(DuckDBLake):
    """The real DuckDB lake, except that recording the first result fails as a lost link would."""

    failures = 1

    def update_event_if(self, event_id: str, expected: Any, changes: Any) -> bool:
        if changes.get("status") in ("completed", "failed") and self.failures:
            self.failures -= 1
            raise TransientError("lake connection lost (injected)")
        return super().update_event_if(event_id, expected, changes)


def test_worker_survives_a_lake_outage_while_recording_fault_injected(local: LocalPair) -> None:
    local.create_target("dbo.t", [Col("k", "int", pk=True)])
    local.create_source("c.s.t", {"k": "int"}, [(1,), (2,)])
    local.reconfigure(lease_seconds=0.5)
    first = submit(local.lake, "insert", "dbo.t", source_table="c.s.t", primary_keys=["k"])
    engine = local.engine()
    engine.lake = LakeFailingToRecordOnce(local.settings)
    done = run_until_one_result(engine)
    # The worker lived on: once the lease ran out it claimed the event again and completed it
    # from the ledger, without applying it twice.
    assert [r.status for r in done] == ["completed"]
    stored = local.lake.get_event(first.event_id)
    assert (stored.status, stored.attempts, stored.rows_affected) == ("completed", 2, 2)
    assert "already applied" in stored.warning
    assert local.target_rows("dbo.t", ["k"], "k") == [(1,), (2,)]
    assert local.ledger_ids() == [first.event_id]


class LakeWithUnknownErrors(DuckDBLake):
    """The real DuckDB lake, except that the first calls of the named methods raise an error no
    adapter knows, as DuckDB's IOException once did (injected)."""

    def __init__(self, settings: Any, failing: dict[str, int], slow_batches: float = 0.0) -> None:
        super().__init__(settings)
        self.failing = dict(failing)
        self.slow_batches = slow_batches

    def _maybe_fail(self, name: str) -> None:
        if self.failing.get(name, 0) > 0:
            self.failing[name] -= 1
            raise RuntimeError("IO Error: Could not read enough bytes from file (injected)")

    def count_by_status(self) -> dict[str, int]:
        self._maybe_fail("count_by_status")
        return super().count_by_status()

    def claimable_events(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail("claimable_events")
        return super().claimable_events(*args, **kwargs)

    def read_source(self, *args: Any, **kwargs: Any) -> Any:
        for batch in super().read_source(*args, **kwargs):
            time.sleep(self.slow_batches)  # a slow source (injected), so that leases get renewed
            yield batch

    def update_event_if(self, event_id: str, expected: Any, changes: Any) -> bool:
        if set(changes) == {"lease_expires_at", "updated_at"}:  # a lease renewal
            self._maybe_fail("renew")
        return super().update_event_if(event_id, expected, changes)


def test_worker_rides_out_unknown_store_errors_at_start_and_when_claiming_fault_injected(
    local: LocalPair,
) -> None:
    local.create_target("dbo.t", [Col("k", "int", pk=True)])
    local.create_source("c.s.t", {"k": "int"}, [(1,), (2,)])
    event = submit(local.lake, "insert", "dbo.t", source_table="c.s.t", primary_keys=["k"])
    engine = local.engine()
    engine.lake = LakeWithUnknownErrors(local.settings, {"count_by_status": 1, "claimable_events": 3})
    assert [r.status for r in run_until_one_result(engine)] == ["completed"]
    assert local.lake.get_event(event.event_id).status == "completed"
    assert local.target_rows("dbo.t", ["k"], "k") == [(1,), (2,)]


def slow_insert(local: LocalPair, lease_seconds: float, renewals_failing: int, slow_batches: float) -> tuple[Any, Any]:
    """A 200-row INSERT event read in 20 slowed batches by an engine whose first lease renewals
    fail (injected): the event and that engine."""
    local.create_target("dbo.t", [Col("k", "int", pk=True)])
    local.create_source("c.s.t", {"k": "int"}, [(i,) for i in range(200)])
    local.reconfigure(lease_seconds=lease_seconds, batch_rows=10)
    event = submit(local.lake, "insert", "dbo.t", source_table="c.s.t", primary_keys=["k"])
    engine = local.engine()
    engine.lake = LakeWithUnknownErrors(local.settings, {"renew": renewals_failing}, slow_batches=slow_batches)
    return event, engine


def test_lease_keeper_outlives_unknown_store_errors_fault_injected(local: LocalPair) -> None:
    # Renewals every second; one fails, the next works: 2 s unrenewed at most, under 80% of 3 s.
    event, engine = slow_insert(local, lease_seconds=3.0, renewals_failing=1, slow_batches=0.15)
    keepers: list[threading.Thread] = []
    original = threading.Thread.start

    def spy(thread: threading.Thread) -> None:
        if thread.name == "lease-keeper":
            keepers.append(thread)
        original(thread)

    threading.Thread.start = spy  # type: ignore[method-assign]
    try:
        assert [r.status for r in run_until_one_result(engine)] == ["completed"]
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert engine.lake.failing["renew"] == 0  # a renewal failed, and the keeper went on
    assert keepers and not any(k.is_alive() for k in keepers)
    stored = local.lake.get_event(event.event_id)
    assert (stored.status, stored.attempts) == ("completed", 1)


def test_an_event_whose_lease_cannot_be_renewed_stops_before_it_expires_fault_injected(
    local: LocalPair,
) -> None:
    event, engine = slow_insert(local, lease_seconds=0.3, renewals_failing=10_000, slow_batches=0.05)
    [first] = run_until_one_result(engine)
    # It stopped instead of working on unleased: nothing applied, the event waits for a retry.
    assert first.status == "pending"
    stored = local.lake.get_event(event.event_id)
    assert "lease could not be renewed" in stored.warning
    assert local.target_rows("dbo.t", ["k"], "k") == []
    assert local.ledger_ids() == []
    # A worker whose renewals work then applies it, once.
    local.reconfigure(lease_seconds=30.0)
    [second] = run_until_one_result(local.engine())
    assert second.status == "completed", second
    assert local.target_rows("dbo.t", ["k"], "k") == [(i,) for i in range(200)]
    assert local.ledger_ids() == [event.event_id]


def test_an_upsert_completed_from_the_ledger_keeps_its_details_fault_injected(local: LocalPair) -> None:
    # The worker that applied it could not record the result (as if killed after the commit): the
    # event is completed from the ledger, whose row kept the counts the apply reported.
    local.create_target("dbo.t", [Col("k", "int", pk=True), Col("v", "int")])
    local.insert_target_rows("dbo.t", ["k", "v"], [(1, 0), (2, 2)])
    local.create_source("c.s.t", {"k": "int", "v": "int"}, [(1, 1), (2, 2), (3, 3)])
    local.reconfigure(lease_seconds=0.5)
    first = submit(local.lake, "upsert", "dbo.t", source_table="c.s.t", primary_keys=["k"],
                   metadata={"changed_only": True})
    engine = local.engine()
    engine.lake = LakeFailingToRecordOnce(local.settings)
    done = run_until_one_result(engine)
    assert [r.status for r in done] == ["completed"]
    stored = local.lake.get_event(first.event_id)
    assert (stored.status, stored.attempts, stored.rows_affected) == ("completed", 2, 2)
    assert "already applied" in stored.warning
    assert json.loads(stored.details) == {"inserted": 1, "updated": 1, "unchanged": 1}


def test_a_ledger_from_before_the_details_column_still_works_and_init_adds_it(local: LocalPair) -> None:
    ledger = local.target.ledger.table
    local.target_sql(local.target.ledger.schema, f'ALTER TABLE "{ledger}" DROP COLUMN details')
    local.create_target("dbo.t", [Col("k", "int", pk=True), Col("part", "int")])
    local.create_source("c.s.t", {"k": "int", "part": "int"}, [(1, 1), (2, 1)])
    first = submit(local.lake, "replace", "dbo.t", source_table="c.s.t", primary_keys=["k"],
                   filter_conditions={"part": 1})
    [result] = local.engine().process_once()
    assert (result.status, result.details) == ("completed", {"deleted": 0, "inserted": 2})
    entry = local.target.ledger_entry(first.event_id)
    assert entry is not None and (entry.rows_affected, entry.details) == (2, None)
    assert local.target.init_ledger() == [f"added column details to ledger {local.target.ledger}"]
    assert local.target.init_ledger() == [f"ledger {local.target.ledger} is up to date"]
