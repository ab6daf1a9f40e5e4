"""Real `bridge worker` processes on the embedded default: per-target order across 4 workers, and
a small kill -9 campaign (`make campaign` runs the big one). See tests/campaign.py."""

from __future__ import annotations

from pathlib import Path

from bridge_cli.events import Operation
from tests.campaign import CampaignSpec, run_campaign


def test_four_workers_apply_each_tables_events_in_claim_order(tmp_path: Path) -> None:
    # Events interleaved over 3 tables with mixed priorities; INSERTs overlap earlier keys,
    # UPDATEs / DELETEs / UPSERTs touch them and REPLACEs reload their slices, so any reordering
    # shows in the rows, the counts and the ledger.
    spec = CampaignSpec(workers=4, events=40, big_events=1, big_rows=(20_000, 30_000),
                        kills=0, sigterms=0, lease_seconds=5.0, seed=7)
    result = run_campaign(tmp_path, spec)
    assert result.problems == []
    assert result.claims == spec.events  # nobody was killed: one claim per event
    assert {operation for operation, _ in result.outcomes} == {op.value for op in Operation}


def test_kill_9_campaign_leaves_every_event_row_and_ledger_row_exact(tmp_path: Path) -> None:
    spec = CampaignSpec(workers=4, events=30, big_events=3, big_rows=(20_000, 40_000),
                        kills=10, sigterms=2, lease_seconds=2.0, seed=3, pause=(0.05, 0.2))
    result = run_campaign(tmp_path, spec)
    assert result.problems == []
    # Kills are aimed only at workers in the middle of an event; on a fast machine the queue can
    # drain before all 10 are spent, but most must land for the run to mean anything.
    assert result.kills >= 6, f"only {result.kills} kills landed before the events finished"
    assert result.claims > spec.events  # killed claims were taken again
    # UPSERTs, and REPLACEs that complete and that must fail, are in the mix.
    assert result.outcomes["UPSERT", "completed"]
    assert result.outcomes["REPLACE", "completed"] and result.outcomes["REPLACE", "failed"]
