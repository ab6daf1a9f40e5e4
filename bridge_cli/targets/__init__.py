"""Where rows go: the Target protocol every target adapter implements."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bridge_cli.events import FilterValue, Operation
from bridge_cli.identifiers import TableName

if TYPE_CHECKING:
    import pyarrow as pa

    from bridge_cli.spark.spec import StageFigures


@dataclass(frozen=True)
class TargetCapabilities:
    identity_insert_needs_switch: bool  # SQL Server needs SET IDENTITY_INSERT ON
    write_methods: tuple[str, ...]


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type: str
    is_identity: bool = False
    nullable: bool = True


@dataclass(frozen=True)
class TargetTable:
    name: TableName
    columns: tuple[TargetColumn, ...]

    def column(self, name: str) -> TargetColumn | None:
        """Case-insensitive, as SQL Server and SQLite compare column names."""
        lowered = name.lower()
        for column in self.columns:
            if column.name.lower() == lowered:
                return column
        return None


@dataclass(frozen=True)
class ApplyPlan:
    """A validated event mapped onto a real target table: what the adapter writes."""

    event_id: str
    operation: Operation
    table: TargetTable
    columns: tuple[TargetColumn, ...]  # target columns fed from the source, in source order
    keys: tuple[TargetColumn, ...]
    filters: tuple[tuple[TargetColumn, FilterValue | tuple[FilterValue, ...]], ...] = ()
    identity_insert: bool = False
    max_delete_rows: int = 10000
    changed_only: bool = False  # UPSERT: update only rows where some column really differs
    min_ratio: float = 0.0  # REPLACE: the shrink guard (replace_min_ratio; 0 with allow_shrink)

    @property
    def set_columns(self) -> tuple[TargetColumn, ...]:
        """UPDATE and UPSERT set the non-key columns."""
        keys = {k.name for k in self.keys}
        return tuple(c for c in self.columns if c.name not in keys)


@dataclass(frozen=True)
class ApplyCounts:
    """What one apply did: rows_affected as the event records it, and for UPSERT and REPLACE the
    parts it is made of ({"inserted", "updated", "unchanged"} or {"deleted", "inserted"})."""

    rows_affected: int
    details: dict[str, int] | None = None


@dataclass(frozen=True)
class LedgerEntry:
    event_id: str
    operation: str
    rows_affected: int
    applied_at: datetime | None
    # UPSERT / REPLACE: ApplyCounts.details, kept in the ledger row so that an event completed from
    # the ledger (its worker died after the commit) still reports them; None in a ledger from
    # before the column (`bridge init` adds it).
    details: dict[str, int] | None = None


LEDGER_DETAILS = "details"  # the ledger's column for ApplyCounts.details, as JSON text


def details_json(details: dict[str, int] | None) -> str | None:
    """ApplyCounts.details as the JSON text the ledger and the event row keep; None for none."""
    return json.dumps(details) if details else None


def details_from_json(text: object) -> dict[str, int] | None:
    """A ledger's or an event row's details column as counts; None when empty or not what bridge
    wrote."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) for k, n in value.items()
    ):
        return None
    return value


class TargetSession(Protocol):
    def stage_rows(self, plan: ApplyPlan, batches: Iterable[pa.RecordBatch]) -> int:
        """Copy source batches into a session-private staging table; return rows staged."""
        ...

    def apply(
        self, plan: ApplyPlan, applied_at: datetime, before_commit: Callable[[], None] | None = None
    ) -> ApplyCounts:
        """One transaction: the set-based statements plus the ledger row; what they did.
        Raises AlreadyApplied when the ledger already holds the event (nothing changed).
        `before_commit` runs inside the transaction, just before its commit: what it raises rolls
        everything back (a `bridge cancel` of the event in hand)."""
        ...


class ExternalStaging(Protocol):
    """A session whose stage another process can load (the Spark path): a uniquely named
    permanent staging table, checked against the loader's figures before `apply`."""

    def stage_external(self, plan: ApplyPlan, load: Callable[[str], StageFigures]) -> int:
        """Create the stage, call `load` with its quoted name, check it against the figures `load`
        returns; return rows staged. Nothing is applied; `apply` follows as for `stage_rows`."""
        ...


class Target(Protocol):
    capabilities: TargetCapabilities

    def describe_driver(self) -> str | None:
        """Which driver connects and why (`driver: auto`'s choice), for the worker's start line,
        `doctor` and `config show`; None where there is no choice to make."""
        ...

    def init_ledger(self) -> list[str]: ...

    def check_ready(self) -> None:
        """ConnectionFailure when the target cannot be reached or has no ledger."""
        ...

    def connect_ahead(self) -> None:
        """Start what check_ready does in the background (a new process is about to process events
        and has other start-up work meanwhile); check_ready then waits for it. Nothing to do where
        connecting is instant."""
        ...

    def ledger_entry(self, event_id: str) -> LedgerEntry | None: ...

    def delete_ledger_entries(self, event_ids: Sequence[str], dry_run: bool = False) -> int:
        """Delete these events' ledger rows (ids bound as parameters, in batches); return how
        many were deleted, or with `dry_run` how many would be. Only for events whose rows are
        gone from the event table (`bridge prune`): the ledger is what keeps an event from being
        applied twice."""
        ...

    def describe_table(self, table: TableName) -> TargetTable | None: ...

    def check_staging(self) -> None:
        """Create and drop a staging table as a worker would, in a transaction of its own
        (`bridge doctor`); a BridgeError saying why when it cannot."""
        ...

    def leftover_stages(self) -> list[str]:
        """Shared staging tables old enough that a stopped worker left them (the ones `bridge init`
        drops), by name; none where staging tables die with their connection."""
        ...

    def session(self) -> AbstractContextManager[TargetSession]: ...
