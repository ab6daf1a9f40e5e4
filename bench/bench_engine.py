"""Engine throughput on the embedded pair (DuckDB lake -> SQLite target).

For each size, an INSERT event goes through the whole engine (claim, read Arrow batches, stage,
apply with the ledger, record), and a baseline in the same process does the least the same copy
can do: read the source with DuckDB and executemany it into an identical SQLite table. Each case
runs in a fresh subprocess so that its peak RSS is its own.

    python bench/bench_engine.py [--sizes 10000,100000] [--batch-rows 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_source(home: Path, rows: int) -> None:
    import duckdb

    (home / "lake").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home / "lake" / "bench.duckdb"))
    con.execute("CREATE SCHEMA IF NOT EXISTS s")
    con.execute(
        "CREATE OR REPLACE TABLE s.src AS SELECT i AS id, 'user-' || i AS name, CAST(i * 0.5 AS DOUBLE) AS score, "
        "TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND AS seen FROM range(?) t(i)", [rows]
    )
    con.close()


def make_target(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE IF EXISTS dst")
        con.execute("CREATE TABLE dst (id INTEGER PRIMARY KEY, name TEXT, score REAL, seen TEXT)")
    con.close()


def run_engine(home: Path, batch_rows: int) -> float:
    import dataclasses

    from bridge_cli.api import submit_event
    from bridge_cli.config import load_settings
    from bridge_cli.engine import Engine
    from bridge_cli.events import Operation, SubmitRequest
    from bridge_cli.lakes.duckdb import DuckDBLake
    from bridge_cli.targets.sqlite import SQLiteTarget

    settings = dataclasses.replace(load_settings(env={"BRIDGE_HOME": str(home)}), batch_rows=batch_rows)
    lake, target = DuckDBLake(settings), SQLiteTarget(settings)
    lake.init_event_table(upgrade=False)
    target.init_ledger()
    make_target(target.schema_path("dbo"))
    submit_event(lake, SubmitRequest(Operation.INSERT, "dbo.dst", ("id",), source_table="bench.s.src"), settings)
    started = time.perf_counter()
    [result] = Engine(settings, lake, target).process_once()
    elapsed = time.perf_counter() - started
    assert result.status == "completed", result.error_message
    return elapsed


def run_baseline(home: Path, batch_rows: int) -> float:
    import duckdb

    path = home / "baseline" / "dbo.sqlite"
    make_target(path)
    started = time.perf_counter()
    source = duckdb.connect(str(home / "lake" / "bench.duckdb"))
    cursor = source.execute("SELECT id, name, score, CAST(seen AS VARCHAR) FROM s.src")
    target = sqlite3.connect(path)
    while rows := cursor.fetchmany(batch_rows):
        target.executemany("INSERT INTO dst VALUES (?, ?, ?, ?)", rows)
    target.commit()
    target.close()
    source.close()
    return time.perf_counter() - started


def child(case: str, rows: int, batch_rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        make_source(home, rows)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds = run_engine(home, batch_rows) if case == "engine" else run_baseline(home, batch_rows)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_growth_kib": peak - before}))


def measure(case: str, rows: int, batch_rows: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--sizes", str(rows), "--batch-rows", str(batch_rows)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--child")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(args.child, sizes[0], args.batch_rows)
        return
    print(f"{'rows':>8} {'case':<9} {'seconds':>8} {'rows/s':>10} {'vs baseline':>11} {'peak RSS +MiB':>13}")
    for rows in sizes:
        base = measure("baseline", rows, args.batch_rows)
        for case, result in (("baseline", base), ("engine", measure("engine", rows, args.batch_rows))):
            ratio = result["seconds"] / base["seconds"]
            print(f"{rows:>8} {case:<9} {result['seconds']:>8.2f} {rows / result['seconds']:>10,.0f} "
                  f"{ratio:>10.2f}x {result['rss_growth_kib'] / 1024:>13.1f}")


if __name__ == "__main__":
    main()
