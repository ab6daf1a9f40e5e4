"""What became of a claimed event: the result the worker reports, and the words it records and logs
about it (discrepancy and skipped-row warnings, the completion line). Imported by the engine and
by everything that watches it (observers, metrics, reporting), so that none of them imports the
engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bridge_cli.events import Event, Operation, Status
from bridge_cli.targets import details_from_json

log = logging.getLogger("bridge")


@dataclass(frozen=True)
class EventResult:
    """What happened to one claimed event, as recorded on its row."""

    event_id: str
    operation: str | None
    target_table: str | None
    status: str  # completed, failed, pending (retry later) or "lost" (another worker took it)
    rows_affected: int | None = None
    discrepancy: int | None = None
    warning: str | None = None
    error_message: str | None = None
    seconds: float = 0.0
    attempts: int = 0
    details: dict[str, int] | None = None  # UPSERT / REPLACE: inserted, updated, unchanged, deleted


def details_text(details: dict[str, int]) -> str:
    """`inserted 3, updated 2, unchanged 1`: an UPSERT's or REPLACE's counts, for a log line."""
    return ", ".join(f"{name} {count:,}" for name, count in details.items())


def log_outcome(event: Event, outcome: dict[str, Any], seconds: float) -> None:
    status = outcome["status"]
    if status == Status.COMPLETED.value:
        rows = outcome.get("rows_affected") or 0
        rate = f", {rows / seconds:,.0f} rows/s" if seconds > 0 and rows else ""
        details = details_from_json(outcome.get("details"))
        parts = f" ({details_text(details)})" if details else ""
        log.info("event %s %s %s completed: %s rows%s in %.2fs%s%s", event.event_id, event.operation,
                 event.target_table, f"{rows:,}", parts, seconds, rate,
                 f"; warning: {outcome['warning']}" if outcome.get("warning") else "")
    elif status == Status.FAILED.value:
        log.warning("event %s %s %s failed: %s", event.event_id, event.operation, event.target_table,
                    outcome.get("error_message"))
    else:
        log.warning("event %s: %s", event.event_id, outcome.get("warning"))


def discrepancy_warning(
    event: Event, affected: int, discrepancy: int, details: dict[str, int] | None = None
) -> str:
    head = f"rows_expected={event.rows_expected} but rows_affected={affected}"
    operation = (event.operation or "").upper()
    if operation == Operation.INSERT.value:
        why = (
            "the source likely has duplicate keys, or keys already in the target (skipped)"
            if discrepancy > 0 else "more rows inserted than expected: check rows_expected"
        )
    elif operation == Operation.UPSERT.value:
        if discrepancy < 0:
            why = "more rows written than expected: check rows_expected"
        elif details and details.get("unchanged"):
            why = "rows that were already the same were not counted (changed_only)"
        else:  # every source row was written: there were fewer of them than expected
            why = "the source had fewer rows than expected"
    elif operation == Operation.REPLACE.value:
        why = "the source had a different number of rows than expected"
    elif operation == Operation.UPDATE.value:
        why = (
            "some source keys were not found in the target"
            if discrepancy > 0 else "more rows matched than expected: keys are not unique in the target"
        )
    else:
        why = "the filter conditions matched a different number of rows than expected"
    return f"{head} (discrepancy {discrepancy}): {why}"


def skipped_warning(event: Event, skipped: int) -> str:
    operation = (event.operation or "").upper()
    if operation == Operation.INSERT.value:
        return (
            f"{skipped} source row(s) not inserted: their keys were duplicated in the source "
            "or already in the target"
        )
    return f"{skipped} source row(s) matched no target row"
