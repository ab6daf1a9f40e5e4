"""A fault campaign on the embedded default, with real processes.

Several `bridge worker` processes share one BRIDGE_HOME and work through INSERT / UPDATE / DELETE /
UPSERT / REPLACE events on three tables, while `kill -9`s and SIGTERMs hit workers in the middle of
an event (each killed worker is replaced at once). UPSERTs come with and without changed_only (some
with a key twice in the source, which must fail); REPLACEs reload slices of a small-cardinality
`part` column, or the whole table: some trip the shrink guard, some pass it with allow_shrink, and
some must fail on a source row outside the slice, a key twice, or a key the target holds in another
slice. Big events (INSERTs, UPSERTs and REPLACEs of tens of thousands of rows) keep workers busy
long enough to be killed, and half of the kills wait for a worker that is inside its apply
transaction (it holds a target journal open) to kill that one.

Afterwards every event (status, rows_affected, details and, for a failure, why), every target row
and every ledger row is checked against applying the events one by one in claim order, per table,
and each table's ledger must show its completed events applied in that order; a failed event leaves
no ledger row and no trace in its table. A worker that exits without being told to is a failure
too. The summary counts the kill -9s by the operation of the event the worker held, and how many of
them landed inside the apply.

    python -m tests.campaign --runs 3 --kills 60        (what `make campaign` runs)

The test suite runs smaller campaigns through `run_campaign` (tests/test_campaign.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge_cli.api import submit_event
from bridge_cli.events import Event, Operation, SubmitRequest
from bridge_cli.lakes import claim_order_key, target_line
from tests.backends import Col, LocalPair

TABLES = ("dbo.c0", "dbo.c1", "dbo.c2")
COLUMNS = [Col("k", "int", pk=True), Col("v", "int"), Col("note", "text"), Col("part", "int")]
SOURCE_TYPES = {"k": "BIGINT", "v": "BIGINT", "note": "VARCHAR", "part": "BIGINT"}
ALL_SOURCE_COLUMNS = ("k", "v", "note", "part")
UPDATE_COLUMNS = ("k", "v", "note")  # UPDATE sources leave `part` as it is
# The slices: big key ranges fill parts 0-3 (part = k % 4), small events parts 4-7.
BIG_PARTS = (0, 1, 2, 3)
SMALL_PARTS = (4, 5, 6, 7)
OPERATIONS = tuple(Operation)
# The big events after a table's first (always an INSERT), in turn across the tables.
BIG_KINDS = ("replace-big", "upsert-big", "replace-big-shrink", "replace-whole-big", "upsert-big-changed",
             "replace-big")
REPLACE_KINDS = {  # small REPLACEs, with their weights
    "replace": 30, "replace-shrink": 10, "replace-allow-shrink": 10, "replace-outside": 10,
    "replace-dup": 8, "replace-held": 10, "replace-whole": 12, "replace-empty": 4,
}
UPSERT_KINDS = {"upsert": 45, "upsert-changed": 45, "upsert-dup": 10}

Row = tuple[Any, ...]  # (k, v, note, part), or (k, v, note) for an UPDATE
Table = dict[int, tuple[int, str, int]]  # k -> (v, note, part)


@dataclass(frozen=True)
class CampaignSpec:
    workers: int = 4
    events: int = 120
    big_events: int = 9
    big_rows: tuple[int, int] = (50_000, 200_000)
    kills: int = 60
    sigterms: int = 5
    lease_seconds: float = 3.0
    max_attempts: int = 100  # the campaign's own kills must not use up an event's attempts
    ordering: str = "per_target"
    seed: int = 1
    timeout: float = 900.0
    pause: tuple[float, float] = (0.1, 0.6)  # seconds between two faults, drawn at random
    aim_apply: float = 0.5  # the share of faults that wait for a worker inside its apply
    aim_window: float = 1.5  # ... for at most this long, else hit any busy worker
    replace_min_ratio: float = 0.5


@dataclass(frozen=True)
class KeyRange:
    """Source rows (k, v, note, k % 4) for k in [lo, hi), only those with k % 4 in `parts` when
    given: how big sources are written (one SQL statement) and read back by the model."""

    lo: int
    hi: int
    v: int
    note: str
    parts: tuple[int, ...] | None = None

    def rows(self) -> Iterator[Row]:
        v, note = self.v, self.note
        for part in self.parts if self.parts is not None else (None,):
            if part is None:
                for k in range(self.lo, self.hi):
                    yield (k, v, note, k % 4)
            else:
                first = self.lo + (part - self.lo) % 4
                for k in range(first, self.hi, 4):
                    yield (k, v, note, part)


Segment = tuple[Row, ...] | KeyRange


@dataclass(frozen=True)
class PlannedEvent:
    index: int
    table: str
    operation: Operation
    kind: str  # what the campaign meant it to exercise: "upsert-changed", "replace-held", ...
    priority: int
    source: tuple[Segment, ...] = ()  # rows in source order
    columns: tuple[str, ...] = ALL_SOURCE_COLUMNS
    delete_keys: tuple[int, ...] = ()  # DELETE: the filter's keys
    parts: tuple[int, ...] | None = None  # REPLACE: the slice ({"part": ...}); None: whole table
    changed_only: bool = False
    allow_shrink: bool = False
    big: bool = False
    event_id: str = ""

    def rows(self) -> Iterator[Row]:
        for segment in self.source:
            yield from segment.rows() if isinstance(segment, KeyRange) else segment

    def request(self, source: str) -> SubmitRequest:
        filters: dict[str, Any] | None = None
        metadata: dict[str, Any] = {}
        if self.operation is Operation.DELETE:
            filters = {"k": list(self.delete_keys)}
        elif self.operation is Operation.REPLACE:
            if self.parts is None:
                metadata["whole_table"] = True
            else:
                filters = {"part": self.parts[0] if len(self.parts) == 1 else list(self.parts)}
        if self.changed_only:
            metadata["changed_only"] = True
        if self.allow_shrink:
            metadata["allow_shrink"] = True
        return SubmitRequest(
            operation=self.operation,
            target_table=self.table,
            source_table=None if self.operation is Operation.DELETE else source,
            primary_keys=("k",),
            priority=self.priority,
            filter_conditions=filters,
            metadata=metadata or None,
        )


@dataclass(frozen=True)
class Outcome:
    """What an event must end as: its status, rows_affected, details, and for a failure a piece
    of the error_message that says why."""

    status: str
    rows_affected: int | None = None
    details: dict[str, int] | None = None
    error: str | None = None


def failed(error: str) -> Outcome:
    return Outcome("failed", error=error)


@dataclass
class CampaignResult:
    spec: CampaignSpec
    kills: int = 0
    sigterms: int = 0
    seconds: float = 0.0
    rows_applied: int = 0
    claims: int = 0
    most_claims: int = 0
    from_ledger: int = 0
    # kill -9s by the operation of the event the worker held ("-": none), and those inside the apply
    kills_by_operation: Counter[str] = field(default_factory=Counter)
    kills_in_apply: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (operation, status)
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status) as expected
    problems: list[str] = field(default_factory=list)


# -- the model ---------------------------------------------------------------------------------
def apply_event(table: Table, event: PlannedEvent, min_ratio: float) -> Outcome:
    """One event on the model of its table, as the target must apply it (or refuse it, leaving the
    table as it was)."""
    operation = event.operation
    if operation is Operation.DELETE:
        hit = [k for k in dict.fromkeys(event.delete_keys) if k in table]
        for k in hit:
            del table[k]
        return Outcome("completed", len(hit))
    rows = list(event.rows())
    if not rows:
        verb = {Operation.UPSERT: "upsert", Operation.UPDATE: "update"}.get(operation, "insert")
        return failed(f"No data to {verb}")
    if operation is Operation.INSERT:  # the first row of each key the table lacks
        inserted = 0
        for k, v, note, part in rows:
            if k not in table:
                table[k] = (v, note, part)
                inserted += 1
        return Outcome("completed", inserted)
    if operation is Operation.UPDATE:  # the non-key columns it has, first row of each key
        hit = set()
        for k, v, note in rows:
            if k in table and k not in hit:
                table[k] = (v, note, table[k][2])
                hit.add(k)
        return Outcome("completed", len(hit))
    if len({row[0] for row in rows}) != len(rows):
        return failed("duplicate key")
    if operation is Operation.UPSERT:
        inserted = updated = unchanged = 0
        for k, v, note, part in rows:
            old = table.get(k)
            if old is None:
                inserted += 1
            elif event.changed_only and old == (v, note, part):
                unchanged += 1
                continue
            else:
                updated += 1
            table[k] = (v, note, part)
        return Outcome("completed", inserted + updated,
                       {"inserted": inserted, "updated": updated, "unchanged": unchanged})
    assert operation is Operation.REPLACE
    parts = event.parts
    if parts is not None:
        if any(row[3] not in parts for row in rows):
            return failed("fall outside the slice")
        doomed = {k for k, old in table.items() if old[2] in parts}
    else:
        doomed = set(table)
    ratio = 0.0 if event.allow_shrink else min_ratio
    if doomed and len(rows) < ratio * len(doomed):
        return failed("fewer than replace_min_ratio")
    if any(row[0] in table and row[0] not in doomed for row in rows):
        return failed("have keys the target holds outside")
    for k in doomed:
        del table[k]
    for k, v, note, part in rows:
        table[k] = (v, note, part)
    return Outcome("completed", len(rows), {"deleted": len(doomed), "inserted": len(rows)})


def expected_outcome(
    planned: Sequence[PlannedEvent], stored: dict[str, Event], min_ratio: float
) -> tuple[dict[str, Table], dict[str, Outcome], dict[str, list[str]]]:
    """Apply the events one by one in claim order, per table: (final rows per table, each event's
    outcome, each table's completed event ids in apply order)."""
    rows: dict[str, Table] = {t: {} for t in TABLES}
    outcomes: dict[str, Outcome] = {}
    order: dict[str, list[str]] = defaultdict(list)
    for event in sorted(planned, key=lambda p: claim_order_key(stored[p.event_id])):
        outcome = outcomes[event.event_id] = apply_event(rows[event.table], event, min_ratio)
        if outcome.status == "completed":
            order[event.table].append(event.event_id)
    return rows, outcomes, order


# -- the scenario ------------------------------------------------------------------------------
def small_part(k: int) -> int:
    return SMALL_PARTS[k % len(SMALL_PARTS)]


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


class Planner:
    """Drafts the events in the order they will be claimed (priority, then submission), each
    against a model of its table as the events before it leave it, so that slices, shrinks and
    unchanged rows are aimed where they will be; the outcomes are worked out again afterwards
    from the claim order the workers really followed."""

    def __init__(self, spec: CampaignSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.state: dict[str, Table] = {t: {} for t in TABLES}
        self.known: dict[str, list[int]] = {t: [] for t in TABLES}  # small keys ever sent in
        self.ranges: dict[str, list[list[int]]] = {t: [] for t in TABLES}  # big [lo, hi)
        self.big_turn = 0

    def draft(self, index: int, table: str, priority: int, big: bool) -> PlannedEvent:
        rng = self.rng
        if big:
            holding = [t for t in TABLES if self.ranges[t]]
            if holding and not self.ranges[table] and rng.random() < 0.7:
                table = rng.choice(holding)
            event = self._big(index, table, priority)
        elif not self.known[table] and not self.state[table]:
            event = self._insert(index, table, priority)
        else:
            operation = rng.choice([Operation.INSERT] * 5 + [Operation.UPDATE] * 3 + [Operation.DELETE] * 3
                                   + [Operation.UPSERT] * 4 + [Operation.REPLACE] * 4)
            make = {Operation.INSERT: self._insert, Operation.UPDATE: self._update,
                    Operation.DELETE: self._delete, Operation.UPSERT: self._upsert,
                    Operation.REPLACE: self._replace}[operation]
            event = make(index, table, priority)
        apply_event(self.state[event.table], event, self.spec.replace_min_ratio)
        return event

    # small events
    def _insert(self, i: int, table: str, priority: int) -> PlannedEvent:
        # Fresh keys, plus a few from earlier events: skipped or not, depending on order.
        known = self.known[table]
        base = (i + 1) * 1_000_000
        fresh = list(range(base, base + self.rng.randint(5, 40)))
        keys = fresh + self.rng.sample(known, min(3, len(known)))
        known.extend(fresh)
        rows = tuple((k, i, f"e{i}", small_part(k)) for k in keys)
        return PlannedEvent(i, table, Operation.INSERT, "insert", priority, (rows,))

    def _update(self, i: int, table: str, priority: int) -> PlannedEvent:
        known = self.known[table]
        base = (i + 1) * 1_000_000
        keys = self.rng.sample(known, min(30, len(known))) + [base, base + 1]  # 2 unknown
        rows = tuple((k, i, f"u{i}") for k in keys)
        return PlannedEvent(i, table, Operation.UPDATE, "update", priority, (rows,), UPDATE_COLUMNS)

    def _delete(self, i: int, table: str, priority: int) -> PlannedEvent:
        known = self.known[table]
        keys = tuple(self.rng.sample(known, min(10, len(known))))
        return PlannedEvent(i, table, Operation.DELETE, "delete", priority, delete_keys=keys)

    def _upsert(self, i: int, table: str, priority: int) -> PlannedEvent:
        rng, state, known = self.rng, self.state[table], self.known[table]
        kind = _weighted(rng, UPSERT_KINDS)
        base = (i + 1) * 1_000_000
        fresh = list(range(base, base + rng.randint(3, 10)))
        keys = rng.sample(known, min(15, len(known))) + fresh
        known.extend(fresh)
        rows: list[Row] = []
        for k in keys:
            old = state.get(k)
            if kind == "upsert-changed" and old is not None and rng.random() < 0.6:
                rows.append((k, *old))  # the row as it stands: unchanged
            else:
                part = rng.choice(SMALL_PARTS) if rng.random() < 0.2 else small_part(k)  # may move
                rows.append((k, i, f"p{i}", part))
        if kind == "upsert-dup":
            k = rng.choice(rows)[0]
            rows.insert(rng.randrange(len(rows) + 1), (k, i, f"d{i}", small_part(k)))
        return PlannedEvent(i, table, Operation.UPSERT, kind, priority, (tuple(rows),),
                            changed_only=kind == "upsert-changed" or (kind == "upsert-dup" and rng.random() < 0.5))

    def _replace(self, i: int, table: str, priority: int) -> PlannedEvent:
        rng, state = self.rng, self.state[table]
        kind = _weighted(rng, REPLACE_KINDS)
        base = (i + 1) * 1_000_000
        if kind == "replace-whole":
            if self.ranges[table]:  # a few rows for a table of big ranges: the shrink guard stops it
                rows = [(k, i, f"w{i}", old[2]) for k, old in state.items() if old[2] in SMALL_PARTS]
                rows = rows[:20] or [(base, i, f"w{i}", small_part(base))]
                return PlannedEvent(i, table, Operation.REPLACE, "replace-whole-shrink", priority,
                                    (tuple(rows),), parts=None)
            drop = rng.uniform(0, 0.3)
            rows = [(k, i, f"w{i}", old[2]) for k, old in state.items() if rng.random() >= drop]
            rows += [(k, i, f"w{i}", small_part(k)) for k in range(base, base + rng.randint(1, 8))]
            self.known[table].extend(range(base, base + 8))
            return PlannedEvent(i, table, Operation.REPLACE, kind, priority, (tuple(rows),), parts=None,
                                allow_shrink=rng.random() < 0.3)
        parts = tuple(sorted(rng.sample(SMALL_PARTS, rng.choice([1, 1, 2]))))
        in_slice = [(k, old) for k, old in state.items() if old[2] in parts]
        rows = []
        if kind == "replace-empty":
            pass
        elif kind in ("replace-shrink", "replace-allow-shrink"):
            kept = rng.sample(in_slice, len(in_slice) // 4) if len(in_slice) >= 4 else in_slice[:1]
            rows = [(k, i, f"r{i}", old[2]) for k, old in kept] or [(base, i, f"r{i}", parts[0])]
        else:
            drop = rng.uniform(0, 0.3)
            rows = [(k, i, f"r{i}", old[2]) for k, old in in_slice if rng.random() >= drop]
            rows += [(k, i, f"r{i}", rng.choice(parts)) for k in range(base, base + rng.randint(1, 8))]
            rng.shuffle(rows)
            at = rng.randrange(len(rows) + 1)
            if kind == "replace-outside":
                elsewhere = [p for p in SMALL_PARTS + BIG_PARTS if p not in parts]
                rows.insert(at, (base + 100, i, f"o{i}", rng.choice(elsewhere)))
            elif kind == "replace-dup":
                k, _, _, part = rng.choice(rows)
                rows.insert(at, (k, i, f"d{i}", part))
            elif kind == "replace-held":
                held = [k for k in self.known[table] if k in state and state[k][2] not in parts]
                if held:
                    rows.insert(at, (rng.choice(held), i, f"h{i}", parts[0]))
                else:
                    kind = "replace"
        self.known[table].extend(range(base, base + 8))
        return PlannedEvent(i, table, Operation.REPLACE, kind, priority, (tuple(rows),), parts=parts,
                            allow_shrink=kind == "replace-allow-shrink")

    # big events
    def _big(self, i: int, table: str, priority: int) -> PlannedEvent:
        rng, state, ranges = self.rng, self.state[table], self.ranges[table]
        base = (i + 1) * 1_000_000
        if not ranges:
            rows = rng.randint(*self.spec.big_rows)
            ranges.append([base, base + rows])
            return PlannedEvent(i, table, Operation.INSERT, "insert-big", priority,
                                (KeyRange(base, base + rows, i, f"e{i}"),), big=True)
        kind = BIG_KINDS[self.big_turn % len(BIG_KINDS)]
        self.big_turn += 1
        span = rng.choice(ranges)
        lo, hi = span
        if kind in ("upsert-big", "upsert-big-changed"):
            extra = rng.randint(1_000, 20_000)  # keys beyond the range: inserted
            span[1] = hi + extra
            if kind == "upsert-big":  # the last two thirds updated
                source = KeyRange(lo + (hi - lo) // 3, hi + extra, i, f"p{i}")
                return PlannedEvent(i, table, Operation.UPSERT, kind, priority, (source,), big=True)
            # The values the range's first row holds (those of the event that last wrote the
            # whole range): the rows that still hold them are unchanged, the others updated.
            first = next((k for k in range(lo, hi) if k in state), None)
            v, note = state[first][:2] if first is not None else (i, f"p{i}")
            source = KeyRange(lo, hi + extra, v, note)
            return PlannedEvent(i, table, Operation.UPSERT, kind, priority, (source,),
                                changed_only=True, big=True)
        if kind == "replace-whole-big":  # every range anew, and the small rows with new values
            small = tuple((k, i, f"w{i}", old[2]) for k, old in state.items() if old[2] in SMALL_PARTS)
            whole = tuple(KeyRange(a, b, i, f"w{i}") for a, b in ranges) + (small,)
            return PlannedEvent(i, table, Operation.REPLACE, kind, priority, whole, parts=None, big=True)
        part = rng.choice(BIG_PARTS)
        if kind == "replace-big":  # the slice of every range, less a few rows at the end
            segments = tuple(
                KeyRange(a, b - rng.randint(0, (b - a) // 5), i, f"r{i}", (part,)) for a, b in ranges
            )
            return PlannedEvent(i, table, Operation.REPLACE, kind, priority, segments, parts=(part,), big=True)
        # replace-big-shrink: an eighth of the slice; allow_shrink lets a third of them through
        allow = rng.random() < 1 / 3
        source = KeyRange(lo, lo + (hi - lo) // 8, i, f"r{i}", (part,))
        return PlannedEvent(i, table, Operation.REPLACE, "replace-big-allow-shrink" if allow else kind,
                            priority, (source,), parts=(part,), allow_shrink=allow, big=True)


def write_source(pair: LocalPair, name: str, event: PlannedEvent) -> None:
    """The event's source table in the lake: KeyRanges as one SQL range each, rows through Arrow."""
    import pyarrow as pa

    columns = event.columns
    cast = ", ".join(f"{c}::{SOURCE_TYPES[c]} AS {c}" for c in columns)
    selects: list[str] = []
    params: list[Any] = []
    with pair.lake.connect("campaign", create=True) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS s")
        for n, segment in enumerate(event.source):
            if isinstance(segment, KeyRange):
                for part in segment.parts if segment.parts is not None else (None,):
                    if part is None:
                        selects.append("SELECT range::BIGINT AS k, ?::BIGINT AS v, ?::VARCHAR AS note, "
                                       "(range % 4)::BIGINT AS part FROM range(?, ?)")
                        params += [segment.v, segment.note, segment.lo, segment.hi]
                    else:
                        selects.append("SELECT range::BIGINT AS k, ?::BIGINT AS v, ?::VARCHAR AS note, "
                                       "?::BIGINT AS part FROM range(?, ?, 4)")
                        params += [segment.v, segment.note, part,
                                   segment.lo + (part - segment.lo) % 4, segment.hi]
            elif segment:
                con.register(f"rows{n}", pa.table({c: [row[j] for row in segment] for j, c in enumerate(columns)}))
                selects.append(f"SELECT {cast} FROM rows{n}")
        if selects:
            con.execute(f"CREATE OR REPLACE TABLE {name} AS {' UNION ALL '.join(selects)}", params)
        else:
            body = ", ".join(f"{c} {SOURCE_TYPES[c]}" for c in columns)
            con.execute(f"CREATE OR REPLACE TABLE {name} ({body})")


def plan_events(pair: LocalPair, spec: CampaignSpec) -> list[PlannedEvent]:
    """Create the targets and sources and submit every event before any worker starts, so that
    claim order (priority, then created_at) is known in advance."""
    rng = random.Random(spec.seed)
    for table in TABLES:
        pair.create_target(table, COLUMNS)
    big_at = set(rng.sample(range(spec.events), min(spec.big_events, spec.events)))
    drafts = [(i, rng.choice(TABLES), rng.choice([1, 5, 5, 5, 9])) for i in range(spec.events)]
    planner = Planner(spec, rng)
    planned: dict[int, PlannedEvent] = {}
    for i, table, priority in sorted(drafts, key=lambda d: (d[2], d[0])):
        planned[i] = planner.draft(i, table, priority, i in big_at)
    submitted = []
    for i in range(spec.events):  # in index order, so created_at follows it
        event = planned[i]
        source = f"campaign.s.e{i:04d}"
        if event.operation is not Operation.DELETE:
            write_source(pair, f"s.e{i:04d}", event)
        stored = submit_event(pair.lake, event.request(source), pair.settings)
        submitted.append(dataclasses.replace(event, event_id=stored.event_id))
    return submitted


def check_outcome(pair: LocalPair, planned: Sequence[PlannedEvent], result: CampaignResult) -> None:
    stored = {e.event_id: e for e in pair.lake.list_events(None, len(planned) + 10)}
    missing = [e.event_id for e in planned if e.event_id not in stored]
    for event_id in missing:
        result.problems.append(f"event {event_id} is gone from the event table")
    if missing:
        return
    rows, outcomes, order = expected_outcome(planned, stored, result.spec.replace_min_ratio)
    problems = result.problems
    for event in planned:
        got = stored[event.event_id]
        want = outcomes[event.event_id]
        result.outcomes[event.operation.value, want.status] += 1
        result.kinds[event.kind, want.status] += 1
        details = json.loads(got.details) if got.details else None
        wrong = []
        if got.status != want.status:
            wrong.append(f"{got.status} (expected {want.status})")
        if got.rows_affected != want.rows_affected:
            wrong.append(f"rows_affected {got.rows_affected} (expected {want.rows_affected})")
        if details != want.details:
            wrong.append(f"details {details} (expected {want.details})")
        if want.error is not None and want.error not in (got.error_message or ""):
            wrong.append(f"error_message lacks {want.error!r}")
        if wrong:
            problems.append(
                f"event {event.event_id} ({event.kind} {event.table}): {'; '.join(wrong)}; "
                f"error {got.error_message!r}; warning {got.warning!r}"
            )
        result.claims += got.attempts or 0
        result.most_claims = max(result.most_claims, got.attempts or 0)
        result.from_ledger += "already applied" in (got.warning or "")
    for table, want_rows in rows.items():
        name = table.split(".")[1]
        have = {k: (v, note, part) for k, v, note, part in
                pair.target_rows(table, ["k", "v", "note", "part"], "k")}
        if have != want_rows:
            lacking = len(want_rows.keys() - have.keys())
            extra = len(have.keys() - want_rows.keys())
            changed = sum(1 for k in want_rows.keys() & have.keys() if want_rows[k] != have[k])
            problems.append(f"table {name}: {lacking} rows missing, {extra} extra, {changed} differ")
        result.rows_applied += len(have)
    ledger = ledger_rows(pair)
    counts: dict[str, int] = defaultdict(int)
    for event_id, _table, _applied_at, _rows in ledger:
        counts[event_id] += 1
    for event in planned:
        want_count = 1 if outcomes[event.event_id].status == "completed" else 0
        if counts.get(event.event_id, 0) != want_count:
            problems.append(
                f"event {event.event_id} ({event.kind}): {counts.get(event.event_id, 0)} ledger rows "
                f"(expected {want_count})"
            )
    for event_id, _table, _applied_at, rows_affected in ledger:
        if event_id in outcomes and rows_affected != outcomes[event_id].rows_affected:
            problems.append(f"ledger row of {event_id}: rows_affected {rows_affected}")
    applied: dict[str, list[str]] = defaultdict(list)
    for event_id, table, _applied_at, _rows in sorted(ledger, key=lambda r: r[2]):
        applied[target_line(table) or table].append(event_id)
    for table, ids in order.items():
        if applied[target_line(table) or table] != ids:
            problems.append(f"table {table}: applied out of claim order")


def ledger_rows(pair: LocalPair) -> list[tuple[str, str, datetime, int]]:
    path = pair.target.schema_path(pair.target.ledger.schema)
    connection = sqlite3.connect(path)
    try:
        found = connection.execute(
            f'SELECT event_id, target_table, applied_at, rows_affected FROM "{pair.target.ledger.table}"'
        ).fetchall()
    finally:
        connection.close()
    return [(e, t, datetime.fromisoformat(str(a)), int(n)) for e, t, a, n in found]


# -- the workers and the kills ---------------------------------------------------------------
def _bridge_command() -> list[str]:
    beside = Path(sys.executable).parent / "bridge"  # the virtualenv's own entry point
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "bridge_cli"]


class Workers:
    """`bridge worker` processes, each logging to its own file; any left are killed on close."""

    def __init__(self, home: Path, spec: CampaignSpec, target_root: Path) -> None:
        self.home = home
        self.target_root = os.path.realpath(target_root) + os.sep
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        self.env.update(
            BRIDGE_HOME=str(home),
            BRIDGE_LEASE_SECONDS=str(spec.lease_seconds),
            BRIDGE_RETRY_BACKOFF="0.2",
            BRIDGE_RETRY_BACKOFF_MAX="1",
            BRIDGE_MAX_ATTEMPTS=str(spec.max_attempts),
            BRIDGE_ORDERING=spec.ordering,
            BRIDGE_REPLACE_MIN_RATIO=str(spec.replace_min_ratio),
        )
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}
        self.started = 0

    def start(self) -> None:
        log = self.home / f"worker{self.started}.log"
        self.started += 1
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*_bridge_command(), "worker", "--poll-interval", "0.05"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )
        self.running[proc.pid] = proc
        self.logs[proc.pid] = log

    def in_apply(self, pid: int) -> bool:
        """Whether the worker is inside an apply transaction: SQLite keeps a target file's
        rollback journal open from the transaction's first write (the ledger row) to its end.
        Linux only (/proc); elsewhere never."""
        folder = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(folder)
        except OSError:
            return False
        for fd in fds:
            try:
                path = os.readlink(f"{folder}/{fd}")
            except OSError:
                continue
            if path.startswith(self.target_root) and path.endswith("-journal"):
                return True
        return False

    def wait_for_apply(self, seconds: float, rng: random.Random) -> int | None:
        """A worker inside an apply transaction, if one is within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            applying = [pid for pid in self.running if self.in_apply(pid)]
            if applying:
                return rng.choice(applying)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    def died_by_themselves(self) -> list[str]:
        dead = [pid for pid, proc in self.running.items() if proc.poll() is not None]
        problems = []
        for pid in dead:
            proc = self.running.pop(pid)
            tail = self.logs[pid].read_text(errors="replace")[-600:]
            problems.append(f"worker {pid} exited by itself with {proc.returncode}: {tail}")
        return problems

    def signal(self, pid: int, signum: int) -> int:
        proc = self.running.pop(pid)
        proc.send_signal(signum)
        return proc.wait(timeout=120)

    def close(self) -> None:
        for proc in self.running.values():
            proc.kill()
            proc.wait(timeout=30)
        self.running.clear()


def run_campaign(home: Path, spec: CampaignSpec, say: Any = None) -> CampaignResult:
    say = say or (lambda _text: None)
    result = CampaignResult(spec)
    # The campaign's own reads of the event table wait for its file lock as long as it takes: with
    # four workers polling it on a loaded machine, 5 s without a turn happens.
    pair = LocalPair(home, replace_min_ratio=spec.replace_min_ratio, lock_timeout=120.0)
    planned = plan_events(pair, spec)
    kinds = Counter(p.kind for p in planned)
    say(f"{len(planned)} events submitted ({sum(p.big for p in planned)} big): "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
    operation_of = {p.event_id: p.operation.value for p in planned}
    rng = random.Random(spec.seed + 1)
    host = socket.gethostname()
    workers = Workers(home, spec, pair.target.root)
    started = time.monotonic()
    deadline = started + spec.timeout
    try:
        for _ in range(spec.workers):
            workers.start()

        def unfinished() -> int:
            counts = pair.lake.count_by_status()
            return counts.get("pending", 0) + counts.get("processing", 0)

        def held_by(pid: int) -> str:
            """The operation of the event a (just killed) worker held: its claim stays until the
            lease runs out. "-" when it held none."""
            for event in pair.lake.list_events("processing", 50):
                if (event.worker_id or "").startswith(f"{host}:{pid}:"):  # host:pid:random
                    return operation_of.get(event.event_id, str(event.operation))
            return "-"

        faults = ["kill"] * spec.kills + ["term"] * spec.sigterms
        rng.shuffle(faults)
        while faults and unfinished() and time.monotonic() < deadline:
            time.sleep(rng.uniform(*spec.pause))
            result.problems.extend(workers.died_by_themselves())
            # Aim at a worker inside its apply transaction, or at any in the middle of an event.
            pid = workers.wait_for_apply(spec.aim_window, rng) if rng.random() < spec.aim_apply else None
            if pid is None:
                busy = [
                    int(e.worker_id.split(":")[-2])  # host:pid:random
                    for e in pair.lake.list_events("processing", 50)
                    if e.worker_id and e.worker_id.startswith(f"{host}:")
                ]
                busy = [pid for pid in busy if pid in workers.running]
                if not busy:
                    continue
                pid = rng.choice(busy)
            fault = faults.pop()
            applying = workers.in_apply(pid)
            code = workers.signal(pid, signal.SIGKILL if fault == "kill" else signal.SIGTERM)
            if fault == "kill":
                result.kills += 1
                operation = held_by(pid)
                result.kills_by_operation[operation] += 1
                result.kills_in_apply[operation] += applying
            else:
                result.sigterms += 1
                if code != 0:
                    result.problems.append(f"worker {pid} exited {code} after SIGTERM")
            workers.start()
        while unfinished() and time.monotonic() < deadline:
            time.sleep(0.2)
            result.problems.extend(workers.died_by_themselves())
        result.problems.extend(workers.died_by_themselves())
        if unfinished():
            result.problems.append(f"{unfinished()} events unfinished after {spec.timeout:g}s")
        for pid in list(workers.running):
            code = workers.signal(pid, signal.SIGTERM)
            if code != 0:
                result.problems.append(f"worker {pid} exited {code} after SIGTERM")
    finally:
        workers.close()
    result.seconds = time.monotonic() - started
    check_outcome(pair, planned, result)
    return result


# -- the command -----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = CampaignSpec()
    parser.add_argument("--runs", type=int, default=1)
    for name in ("workers", "events", "big_events", "kills", "sigterms", "max_attempts", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--lease-seconds", type=float, default=defaults.lease_seconds)
    parser.add_argument("--aim-apply", type=float, default=defaults.aim_apply,
                        help="share of faults that wait for a worker inside its apply transaction")
    parser.add_argument("--ordering", choices=("per_target", "none"), default=defaults.ordering)
    args = parser.parse_args(argv)
    failed_runs = 0
    results: list[CampaignResult] = []
    print("| run | events | kill -9 | SIGTERM | claims | most claims of one event "
          "| completed from the ledger | target rows | seconds | result |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in range(args.runs):
        spec = dataclasses.replace(
            defaults,
            **{k: getattr(args, k) for k in (
                "workers", "events", "big_events", "kills", "sigterms", "max_attempts",
                "lease_seconds", "ordering", "aim_apply",
            )},
            seed=args.seed + run,
        )
        with tempfile.TemporaryDirectory(prefix="bridge-campaign-") as home:
            result = run_campaign(Path(home), spec, say=lambda text: print(text, file=sys.stderr))
        results.append(result)
        verdict = "exact" if not result.problems else f"{len(result.problems)} problems"
        print(
            f"| {run + 1} | {spec.events} | {result.kills} | {result.sigterms} | {result.claims} "
            f"| {result.most_claims} | {result.from_ledger} | {result.rows_applied:,} "
            f"| {result.seconds:.0f} | {verdict} |",
            flush=True,
        )
        for problem in result.problems[:20]:
            print(f"  - {problem}", file=sys.stderr)
        failed_runs += bool(result.problems)
    names = [op.value for op in OPERATIONS]
    print("\nkill -9 by the operation of the event the worker held (of them, inside the apply "
          "transaction); '-': it held none (between two events, or its lease had run out and "
          "another worker had the event)")
    print("| run | " + " | ".join(names) + " | - |")
    print("| --- |" + " --- |" * (len(names) + 1))
    for run, result in enumerate(results, 1):
        cells = [f"{result.kills_by_operation[n]} ({result.kills_in_apply[n]})" for n in [*names, "-"]]
        print(f"| {run} | " + " | ".join(cells) + " |")
    print("\nevents by operation: completed / failed, as the model expects and the run confirmed")
    print("| run | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for run, result in enumerate(results, 1):
        cells = [f"{result.outcomes[n, 'completed']} / {result.outcomes[n, 'failed']}" for n in names]
        print(f"| {run} | " + " | ".join(cells) + " |")
    kinds = Counter[tuple[str, str]]()
    for result in results:
        kinds.update(result.kinds)
    print("\nevents by kind over all runs (completed / failed): " + ", ".join(
        f"{kind} {kinds[kind, 'completed']}/{kinds[kind, 'failed']}"
        for kind in sorted({k for k, _ in kinds})
    ))
    return 1 if failed_runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
