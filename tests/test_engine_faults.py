"""Faults the embedded pair cannot produce on demand, injected at the lake boundary (the test
names say so); the engine's answer is what is under test."""

from __future__ import annotations

import threading
from typing import Any

from bridge_cli.errors import TransientError
from bridge_cli.lakes.duckdb import DuckDBLake
from tests.backends import Col, LocalPair
from tests.helpers import submit


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
    stop = threading.Event()
    done: list[Any] = []

    def on_result(result: Any) -> None:
        done.append(result)
        stop.set()

    worker = threading.Thread(target=engine.run_worker, args=(stop, 0.1, None, on_result))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    # The worker lived on: once the lease ran out it claimed the event again and completed it
    # from the ledger, without applying it twice.
    assert [r.status for r in done] == ["completed"]
    stored = local.lake.get_event(first.event_id)
    assert (stored.status, stored.attempts, stored.rows_affected) == ("completed", 2, 2)
    assert "already applied" in stored.warning
    assert local.target_rows("dbo.t", ["k"], "k") == [(1,), (2,)]
    assert local.ledger_ids() == [first.event_id]
