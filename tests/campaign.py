"""A fault campaign on the embedded default, with real processes.

Several `bridge worker` processes share one BRIDGE_HOME and work through INSERT / UPDATE / DELETE
events on three tables, while `kill -9`s and SIGTERMs hit workers in the middle of an event (each
killed worker is replaced at once). Afterwards every event, every target row and every ledger row
is checked against applying the events one by one in claim order, per table, and each table's
ledger must show its events applied in that order. A worker that exits without being told to is a
failure too.

    python -m tests.campaign --runs 3 --kills 60        (what `make campaign` runs)

The test suite runs smaller campaigns through `run_campaign` (tests/test_campaign.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge_cli.api import submit_event
from bridge_cli.events import Event, Operation, SubmitRequest
from bridge_cli.lakes import claim_order_key, target_line
from tests.backends import Col, LocalPair

TABLES = ("dbo.c0", "dbo.c1", "dbo.c2")
COLUMNS = [Col("k", "int", pk=True), Col("v", "int"), Col("note", "text")]
SOURCE_COLUMNS = {"k": "int", "v": "int", "note": "text"}


@dataclass(frozen=True)
class CampaignSpec:
    workers: int = 4
    events: int = 120
    big_events: int = 6
    big_rows: tuple[int, int] = (50_000, 200_000)
    kills: int = 60
    sigterms: int = 5
    lease_seconds: float = 3.0
    max_attempts: int = 100  # the campaign's own kills must not use up an event's attempts
    ordering: str = "per_target"
    seed: int = 1
    timeout: float = 900.0
    pause: tuple[float, float] = (0.1, 0.6)  # seconds between two faults, drawn at random


@dataclass(frozen=True)
class PlannedEvent:
    index: int
    event_id: str
    table: str
    operation: Operation
    keys: tuple[int, ...]  # INSERT/UPDATE: the source's keys; DELETE: the filter's
    big: bool = False


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
    problems: list[str] = field(default_factory=list)


# -- the scenario ----------------------------------------------------------------------------
def plan_events(pair: LocalPair, spec: CampaignSpec) -> list[PlannedEvent]:
    """Create the targets and sources and submit every event before any worker starts, so that
    claim order (priority, then created_at) is known in advance."""
    rng = random.Random(spec.seed)
    for table in TABLES:
        pair.create_target(table, COLUMNS)
    big_at = set(rng.sample(range(spec.events), min(spec.big_events, spec.events)))
    submitted: dict[str, list[int]] = defaultdict(list)  # keys earlier INSERT events bring
    planned: list[PlannedEvent] = []
    for i in range(spec.events):
        table = rng.choice(TABLES)
        known = submitted[table]
        source = f"campaign.s.e{i:04d}"
        big = i in big_at
        operation = Operation.INSERT if big or not known else rng.choice(
            [Operation.INSERT, Operation.INSERT, Operation.UPDATE, Operation.DELETE]
        )
        base = (i + 1) * 1_000_000
        if operation is Operation.INSERT and big:
            rows = rng.randint(*spec.big_rows)
            keys: tuple[int, ...] = (base, base + rows)  # a range, not a list
            pair.lake_sql("campaign", "CREATE SCHEMA IF NOT EXISTS s")
            pair.lake_sql(
                "campaign",
                f"CREATE OR REPLACE TABLE s.e{i:04d} AS "
                "SELECT range::BIGINT AS k, ?::BIGINT AS v, ? AS note FROM range(?, ?)",
                [i, f"e{i}", base, base + rows],
            )
        elif operation is Operation.INSERT:
            # Fresh keys, plus a few from earlier events: skipped or not, depending on order.
            fresh = list(range(base, base + rng.randint(5, 40)))
            keys = tuple(fresh + rng.sample(known, min(3, len(known))))
            pair.create_source(source, SOURCE_COLUMNS, [(k, i, f"e{i}") for k in keys])
        elif operation is Operation.UPDATE:
            keys = tuple(rng.sample(known, min(30, len(known))) + [base, base + 1])  # 2 unknown
            pair.create_source(source, SOURCE_COLUMNS, [(k, i, f"u{i}") for k in keys])
        else:
            keys = tuple(rng.sample(known, min(10, len(known))))
        if operation is Operation.INSERT:
            seen = set(known)
            known.extend(k for k in (range(*keys) if big else keys) if k not in seen)
        request = SubmitRequest(
            operation=operation,
            target_table=table,
            source_table=None if operation is Operation.DELETE else source,
            primary_keys=("k",),
            priority=rng.choice([1, 5, 5, 5, 9]),
            filter_conditions={"k": list(keys)} if operation is Operation.DELETE else None,
        )
        event = submit_event(pair.lake, request, pair.settings)
        planned.append(PlannedEvent(i, event.event_id, table, operation, keys, big))
    return planned


def expected_outcome(
    planned: Sequence[PlannedEvent], stored: dict[str, Event]
) -> tuple[dict[str, dict[int, tuple[int, str]]], dict[str, int], dict[str, list[str]]]:
    """Apply the events one by one in claim order, per table: (final rows per table,
    rows_affected per event, each table's event ids in apply order)."""
    rows: dict[str, dict[int, tuple[int, str]]] = {t: {} for t in TABLES}
    affected: dict[str, int] = {}
    order: dict[str, list[str]] = defaultdict(list)
    for event in sorted(planned, key=lambda p: claim_order_key(stored[p.event_id])):
        table = rows[event.table]
        order[event.table].append(event.event_id)
        if event.operation is Operation.INSERT:
            keys = range(*event.keys) if event.big else event.keys
            new = [k for k in keys if k not in table]
            for k in new:
                table[k] = (event.index, f"e{event.index}")
            affected[event.event_id] = len(new)
        elif event.operation is Operation.UPDATE:
            hit = [k for k in event.keys if k in table]
            for k in hit:
                table[k] = (event.index, f"u{event.index}")
            affected[event.event_id] = len(hit)
        else:
            hit = [k for k in event.keys if k in table]
            for k in hit:
                del table[k]
            affected[event.event_id] = len(hit)
    return rows, affected, order


def check_outcome(pair: LocalPair, planned: Sequence[PlannedEvent], result: CampaignResult) -> None:
    stored = {e.event_id: e for e in pair.lake.list_events(None, len(planned) + 10)}
    rows, affected, order = expected_outcome(planned, stored)
    problems = result.problems
    for event in planned:
        got = stored.get(event.event_id)
        if got is None:
            problems.append(f"event {event.event_id} is gone from the event table")
            continue
        if got.status != "completed" or got.rows_affected != affected[event.event_id]:
            problems.append(
                f"event {event.event_id} ({event.operation.value} {event.table}): {got.status}, "
                f"rows_affected {got.rows_affected} (expected {affected[event.event_id]}); "
                f"error {got.error_message!r}"
            )
        result.claims += got.attempts or 0
        result.most_claims = max(result.most_claims, got.attempts or 0)
        result.from_ledger += "already applied" in (got.warning or "")
    for table, want in rows.items():
        name = table.split(".")[1]
        have = {k: (v, note) for k, v, note in pair.target_rows(table, ["k", "v", "note"], "k")}
        if have != want:
            missing = len(want.keys() - have.keys())
            extra = len(have.keys() - want.keys())
            changed = sum(1 for k in want.keys() & have.keys() if want[k] != have[k])
            problems.append(f"table {name}: {missing} rows missing, {extra} extra, {changed} differ")
        result.rows_applied += len(have)
    ledger = ledger_rows(pair)
    counts: dict[str, int] = defaultdict(int)
    for event_id, _table, _applied_at, _rows in ledger:
        counts[event_id] += 1
    for event in planned:
        if counts.get(event.event_id, 0) != 1:
            problems.append(f"event {event.event_id}: {counts.get(event.event_id, 0)} ledger rows")
    for event_id, _table, _applied_at, rows_affected in ledger:
        if event_id in affected and rows_affected != affected[event_id]:
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

    def __init__(self, home: Path, spec: CampaignSpec) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        self.env.update(
            BRIDGE_HOME=str(home),
            BRIDGE_LEASE_SECONDS=str(spec.lease_seconds),
            BRIDGE_RETRY_BACKOFF="0.2",
            BRIDGE_RETRY_BACKOFF_MAX="1",
            BRIDGE_MAX_ATTEMPTS=str(spec.max_attempts),
            BRIDGE_ORDERING=spec.ordering,
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
    pair = LocalPair(home)
    planned = plan_events(pair, spec)
    say(f"{len(planned)} events submitted ({sum(p.big for p in planned)} big)")
    rng = random.Random(spec.seed + 1)
    host = socket.gethostname()
    workers = Workers(home, spec)
    started = time.monotonic()
    deadline = started + spec.timeout
    try:
        for _ in range(spec.workers):
            workers.start()

        def unfinished() -> int:
            counts = pair.lake.count_by_status()
            return counts.get("pending", 0) + counts.get("processing", 0)

        faults = ["kill"] * spec.kills + ["term"] * spec.sigterms
        rng.shuffle(faults)
        while faults and unfinished() and time.monotonic() < deadline:
            time.sleep(rng.uniform(*spec.pause))
            result.problems.extend(workers.died_by_themselves())
            # Aim at a worker in the middle of an event.
            busy = [
                int(e.worker_id.rsplit(":", 1)[1])
                for e in pair.lake.list_events("processing", 50)
                if e.worker_id and e.worker_id.startswith(f"{host}:")
            ]
            busy = [pid for pid in busy if pid in workers.running]
            if not busy:
                continue
            fault = faults.pop()
            pid = rng.choice(busy)
            code = workers.signal(pid, signal.SIGKILL if fault == "kill" else signal.SIGTERM)
            if fault == "kill":
                result.kills += 1
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
    parser.add_argument("--ordering", choices=("per_target", "none"), default=defaults.ordering)
    args = parser.parse_args(argv)
    failed = 0
    print("| run | events | kill -9 | SIGTERM | claims | most claims of one event "
          "| completed from the ledger | target rows | seconds | result |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in range(args.runs):
        spec = dataclasses.replace(
            defaults,
            **{k: getattr(args, k) for k in (
                "workers", "events", "big_events", "kills", "sigterms", "max_attempts",
                "lease_seconds", "ordering",
            )},
            seed=args.seed + run,
        )
        with tempfile.TemporaryDirectory(prefix="bridge-campaign-") as home:
            result = run_campaign(Path(home), spec, say=lambda text: print(text, file=sys.stderr))
        verdict = "exact" if not result.problems else f"{len(result.problems)} problems"
        print(
            f"| {run + 1} | {spec.events} | {result.kills} | {result.sigterms} | {result.claims} "
            f"| {result.most_claims} | {result.from_ledger} | {result.rows_applied:,} "
            f"| {result.seconds:.0f} | {verdict} |",
            flush=True,
        )
        for problem in result.problems[:20]:
            print(f"  - {problem}", file=sys.stderr)
        failed += bool(result.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
