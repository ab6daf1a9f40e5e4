"""A hostile event table (issue 16): 2 real `bridge worker` processes over a table that mixes 40
legitimate events with about 40 hostile rows from a generator (every kind of bad input the issue
lists, plus random bytes in every text field).

Every legitimate event completes exactly; every hostile row fails on its first attempt with a
one-line message; no worker dies and no traceback reaches a log; and nothing outside the
legitimate targets changes: the ledger gains exactly the legitimate ids, the workers table is
empty again after a clean stop, and every other table of the target (system tables included)
reads the same before and after. Runs on every pair whose servers are reachable.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bridge_cli import api
from bridge_cli.config import Settings
from bridge_cli.events import Operation, SubmitRequest
from bridge_cli.lakes import workers_table_name
from tests.backends import Col, DatabricksPair, LocalPair, MssqlPair

TARGETS = [f"dbo.t{n}" for n in range(4)]
COLUMNS = [Col("k", "int", pk=True), Col("v", "text")]
SOURCE_COLUMNS = {"k": "int", "v": "text"}
SECRET_SOURCE = "seed.hr.secrets"


def profile_yaml(settings: Settings) -> str:
    """The pair's settings as a bridge.yaml, for worker processes."""
    profile: dict[str, Any] = {
        "lake": {"kind": settings.lake.kind, **settings.lake.options},
        "target": {"kind": settings.target.kind, **settings.target.options},
    }
    for key in ("retry_backoff", "lock_timeout", "lease_seconds", "allowed_sources", "allowed_targets",
                "max_attempts"):
        value = getattr(settings, key)
        profile[key] = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump({"profiles": {"hostile": profile}})


# -- the legitimate traffic ------------------------------------------------------------------
def submit_legitimate(pair: LocalPair) -> tuple[dict[str, int], dict[str, dict[int, str]]]:
    """32 INSERTs, 4 UPDATEs and 4 DELETEs over 4 targets: {event_id: rows it must affect},
    and what each target must hold at the end."""
    expected: dict[str, int] = {}
    final: dict[str, dict[int, str]] = {t: {} for t in TARGETS}
    for n in range(32):
        target = TARGETS[n % 4]
        rows = [(n * 10 + i, f"v{n}-{i}") for i in range(5)]
        pair.create_source(f"c.s.src{n}", SOURCE_COLUMNS, rows)
        event = api.submit_event(pair.lake, SubmitRequest(
            Operation.INSERT, target, ("k",), source_table=pair.source(f"c.s.src{n}"), rows_expected=5), pair.settings)
        expected[event.event_id] = 5
        final[target].update(rows)
    for n in range(4):  # each changes 3 rows the target's first INSERT added
        target = TARGETS[n]
        rows = [(n * 10 + i, f"updated-{n}-{i}") for i in range(3)]
        pair.create_source(f"c.s.upd{n}", SOURCE_COLUMNS, rows)
        event = api.submit_event(pair.lake, SubmitRequest(
            Operation.UPDATE, target, ("k",), source_table=pair.source(f"c.s.upd{n}"), rows_expected=3), pair.settings)
        expected[event.event_id] = 3
        final[target].update(rows)
    for n in range(4):  # each deletes 2 rows of the target's second INSERT
        target = TARGETS[n]
        keys = [(n + 4) * 10, (n + 4) * 10 + 1]
        event = api.submit_event(pair.lake, SubmitRequest(
            Operation.DELETE, target, ("k",), filter_conditions={"k": keys}, rows_expected=2), pair.settings)
        expected[event.event_id] = 2
        for key in keys:
            del final[target][key]
    return expected, final


# -- the hostile rows --------------------------------------------------------------------------
def random_text(rng: random.Random) -> str:
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
    return raw.decode("utf-8", errors="replace") + rng.choice(["\x1b[2J", "\u202e", "\x00", "\x9b", "\n", ""])


def hostile_rows(pair: LocalPair, legit_ids: list[str], rng: random.Random) -> list[dict[str, Any]]:
    ledger = str(pair.target.ledger)
    events = pair.lake.event_table  # type: ignore[attr-defined]
    event_source = ".".join(f"`{p}`" for p in events.parts)
    workers_source = ".".join(f"`{p}`" for p in workers_table_name(events).parts)
    wipe = json.dumps({"k": list(range(400))})
    bad: list[dict[str, Any]] = []

    def row(**fields: Any) -> None:
        base = {"event_id": f"hostile-{len(bad):03d}", "operation": "DELETE", "target_table": TARGETS[0],
                "primary_keys": ["k"], "filter_conditions": wipe, "status": "pending",
                "priority": rng.choice([1, 5, 9])}
        bad.append({**base, **fields})

    # One id, two rows: neither may run (the INSERT would add rows, the DELETE wipe them).
    row(event_id="hostile-dup", operation="INSERT", source_table="c.s.src0", filter_conditions=None)
    row(event_id="hostile-dup")
    # bridge's own tables and the servers' system tables, as targets and sources
    for target, keys in ((ledger, {"event_id": legit_ids}), ("bridge.bridge_stage_0123456789abcdef", {"k": 1}),
                         (f"{events.schema}.{events.table}", {"event_id": legit_ids}),
                         (f"{workers_table_name(events).schema}.{workers_table_name(events).table}", {"k": 1}),
                         ("sys.objects", {"name": "t0"}), ("INFORMATION_SCHEMA.TABLES", {"TABLE_NAME": "t0"}),
                         ("guest.t", {"k": 1}), ("dbo.sqlite_sequence", {"name": "t0"})):
        row(target_table=target, primary_keys=list(keys), filter_conditions=json.dumps(keys))
    for source in (event_source, workers_source):
        row(operation="INSERT", source_table=source, filter_conditions=None)
    # outside the profile's lists
    row(target_table="dbo.secrets")
    row(operation="INSERT", source_table="c.s.src1", target_table="dbo.secrets", filter_conditions=None)
    row(operation="INSERT", source_table=SECRET_SOURCE, filter_conditions=None)
    # injection and terminal escapes through names, keys and filter columns
    for target in ("dbo.t0; DROP TABLE dbo.t1", "dbo.t0]; DROP TABLE [dbo].[t1", "\x1b]0;PWNED\x07"):
        row(target_table=target)
    row(operation="INSERT", source_table="c.s.src0`; DROP TABLE x; --", filter_conditions=None)
    row(primary_keys=["k) OR (1=1"])
    row(filter_conditions=json.dumps({"k = 1 OR 1=1 --": 1}))
    row(event_id="esc-\x1b[2K\x1b[1Afake")
    # JSON that is not strict, too big, too deep, or of the wrong type
    for text in ('{"k": NaN}', '{"k": Infinity}', '{"k": 123456789012345678901234567890}', '{"k": 1e999}',
                 "[" * 1000, "[" * 100_000, json.dumps({"k": "x" * 70_000}), '{"k": 1, "k": 2}', '["k"]', "{}",
                 '{"k": "a\x00"}', "not json"):
        row(filter_conditions=text)
    for text in ('{"identity_insert": "yes"}', '{"engine": 5}', '{"a": NaN}', "[" * 1000):
        row(operation="INSERT", source_table="c.s.src0", filter_conditions=None, metadata=text)
    # wrong fields
    row(operation="DROP")
    row(operation=None)
    row(operation="INSERT", source_table="c.s.src0", primary_keys=None, filter_conditions=None)
    row(primary_keys=["k", None])
    row(rows_expected=-5)
    # random bytes in every text field
    for _ in range(6):
        row(event_id=f"random-{len(bad)}-" + random_text(rng), operation=random_text(rng),
            source_table=random_text(rng), target_table=random_text(rng), primary_keys=[random_text(rng)],
            filter_conditions=random_text(rng), metadata=random_text(rng), warning=random_text(rng))
    return bad


# -- what must not change ----------------------------------------------------------------------
def untouched_tables(pair: LocalPair) -> Any:
    """Every table of the target except the legitimate targets and the ledger, with its rows
    (SQLite: every file, sqlite_sequence included) or its row count (SQL Server: sys.tables)."""
    legit = {t.split(".")[1] for t in TARGETS}
    if isinstance(pair, MssqlPair):
        from bridge_cli.identifiers import TableName
        from bridge_cli.targets.sqlserver.tsql import table_sql

        names = pair._run("SELECT s.name, t.name FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id",
                          fetch=True)
        snapshot = {}
        for schema, name in sorted(names):
            if (schema.lower() == "dbo" and name.lower() in legit) or name == pair.target.ledger.table:
                continue
            counted = pair._run(f"SELECT count(*) FROM {table_sql(TableName((schema, name)))}", fetch=True)
            snapshot[f"{schema}.{name}"] = counted[0][0]
        return snapshot
    snapshot = {}
    for path in sorted(Path(pair.target.root).glob("*.sqlite")):  # type: ignore[attr-defined]
        connection = sqlite3.connect(path)
        try:
            tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in sorted(tables):
                if (path.stem == "dbo" and table in legit) or (path.stem == pair.target.ledger.schema
                                                               and table == pair.target.ledger.table):
                    continue
                rows = connection.execute(f'SELECT * FROM "{table}"').fetchall()
                snapshot[f"{path.stem}.{table}"] = sorted(map(repr, rows))
        finally:
            connection.close()
    return snapshot


def _worker_env(pair: LocalPair, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") or k == "BRIDGE_TEST_MSSQL_URL"}
    env.update(BRIDGE_CONFIG=str(config), BRIDGE_HOME=str(pair.home), COLUMNS="200")
    if isinstance(pair, DatabricksPair):
        env = pair.env.subprocess_env(env)  # the stand-in's shim, where the lake is the stand-in
    return env


def test_two_workers_over_a_hostile_event_table(pair: LocalPair, tmp_path: Path) -> None:
    rng = random.Random(16)
    for target in TARGETS:
        pair.create_target(target, COLUMNS)
    pair.create_target("dbo.secrets", COLUMNS)
    pair.insert_target_rows("dbo.secrets", ["k", "v"], [(1, "s")])
    pair.create_source(SECRET_SOURCE, SOURCE_COLUMNS, [(7, "salary")])
    pair.reconfigure(allowed_sources=("c.s.*",), allowed_targets=("dbo.t*",), max_attempts=5)
    legit, final = submit_legitimate(pair)
    hostile = hostile_rows(pair, sorted(legit), rng)
    for values in hostile:
        pair.insert_raw_event(values)
    ledger_before = pair.ledger_ids()
    tables_before = untouched_tables(pair)
    assert pair.lake.list_workers() == []

    config = tmp_path / "bridge.yaml"
    config.write_text(profile_yaml(pair.settings), encoding="utf-8")
    env = _worker_env(pair, config)
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [
        subprocess.Popen([sys.executable, "-m", "bridge_cli", "worker", "--poll-interval", "0.2"],
                         env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        for log in logs
    ]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            counts = pair.lake.count_by_status()
            if not counts.get("pending") and not counts.get("processing"):
                break
            assert all(w.poll() is None for w in workers), "a worker died: " + logs[0].read_text()[-2000:]
            time.sleep(0.5)
        else:
            raise AssertionError(f"events left unfinished: {pair.lake.count_by_status()}")
        assert all(w.poll() is None for w in workers), "a worker died"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [w.wait(timeout=60) for w in workers]
    assert codes == [0, 0]

    for event_id, rows in legit.items():
        [stored] = pair.lake.get_events(event_id)
        assert (stored.status, stored.rows_affected, stored.discrepancy) == ("completed", rows, 0), stored
    for target, rows in final.items():
        assert pair.target_rows(target, ["k", "v"], order_by="k") == sorted(rows.items()), target
    hostile_ids = {values["event_id"] for values in hostile}
    for event_id in hostile_ids:
        stored_rows = pair.lake.get_events(event_id)
        assert stored_rows and all(r.status == "failed" for r in stored_rows), (event_id, stored_rows)
        for stored in stored_rows:
            message = stored.error_message or ""
            assert stored.attempts == 1, (event_id, stored.attempts, message)
            assert message and len(message) < 500, (event_id, message)
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in message), (event_id, message)
    assert pair.ledger_ids() == sorted([*ledger_before, *legit])
    assert untouched_tables(pair) == tables_before
    assert pair.lake.list_workers() == []
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in text and "\x1b" not in text, text[-3000:]
