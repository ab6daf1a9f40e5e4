"""Staging write methods on SQL Server: naive executemany vs multi-row VALUES vs bulk copy.

Each case stages the same rows (int, nvarchar, float, datetime2, decimal) into the session's
temp table through SQLServerSession.stage_rows, with a naive pymssql executemany into an
identically shaped temp table as the baseline, all in this one process against one server.

    BRIDGE_TEST_MSSQL_URL=mssql://user:pass@127.0.0.1:1433/db python bench/bench_write_methods.py
        [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge_cli.config import AdapterConfig, load_settings  # noqa: E402
from bridge_cli.errors import BridgeError  # noqa: E402
from bridge_cli.events import Operation  # noqa: E402
from bridge_cli.identifiers import TableName  # noqa: E402
from bridge_cli.targets import (  # noqa: E402
    ApplyPlan,
    TargetColumn,
    TargetTable,
    tsql,  # noqa: E402
)
from bridge_cli.targets.sqlserver import SQLServerTarget  # noqa: E402
from tests.backends import mssql_url  # noqa: E402

COLUMNS = (
    TargetColumn("id", "int"),
    TargetColumn("name", "nvarchar(100)"),
    TargetColumn("score", "float"),
    TargetColumn("seen", "datetime2(7)"),
    TargetColumn("amount", "decimal(18,4)"),
)


def make_batches(rows: int, batch: int):  # -> Iterator[pa.RecordBatch]
    import pyarrow as pa

    base = dt.datetime(2026, 1, 1)
    for start in range(0, rows, batch):
        ids = list(range(start, min(rows, start + batch)))
        yield pa.record_batch({
            "id": ids,
            "name": [f"usuario-{i}-ñ" for i in ids],
            "score": [i * 0.5 for i in ids],
            "seen": [base + dt.timedelta(seconds=i, microseconds=i % 1000) for i in ids],
            "amount": [Decimal(i) / 4 for i in ids],
        })


def target_for(method: str, rows_per_trip: int = 5000) -> SQLServerTarget:
    url = mssql_url()
    if url is None:
        sys.exit("set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:port/db")
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/bridge-bench"})
    config = AdapterConfig("sqlserver", {**url, "write_method": method, "rows_per_trip": rows_per_trip})
    return SQLServerTarget(dataclasses.replace(settings, target=config))


def plan() -> ApplyPlan:
    table = TargetTable(TableName(("dbo", "bench")), COLUMNS)
    return ApplyPlan("bench", Operation.INSERT, table, COLUMNS, (COLUMNS[0],))


def staged_with(method: str, rows: int, rows_per_trip: int = 5000) -> float:
    from bridge_cli.targets.sqlserver import SQLServerSession

    target = target_for(method, rows_per_trip)
    session = SQLServerSession(target, target.connect())
    try:
        started = time.perf_counter()
        staged = session.stage_rows(plan(), make_batches(rows, 5000))
        elapsed = time.perf_counter() - started
    finally:
        session.close()
    assert staged == rows
    return elapsed


def naive(rows: int) -> float:
    from bridge_cli.targets.common import batch_rows
    from bridge_cli.targets.sqlserver import to_param

    target = target_for("values")
    connection = target.connect()
    try:
        cursor = connection.cursor()
        cursor.execute(tsql.create_stage_sql(plan()))
        names = ", ".join(tsql.q(c.name) for c in COLUMNS)
        sql = f"INSERT INTO {tsql.STAGE} ({names}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
        started = time.perf_counter()
        for batch in make_batches(rows, 5000):
            cursor.executemany(sql, [tuple(to_param(v, c) for v, c in zip(r, COLUMNS, strict=True))
                                     for r in batch_rows(batch)])
        return time.perf_counter() - started
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    print(f"{'rows':>8} {'method':<12} {'seconds':>8} {'rows/s':>10} {'vs naive':>9}")
    for rows in (int(s) for s in args.sizes.split(",")):
        base = naive(rows)
        print(f"{rows:>8} {'executemany':<12} {base:>8.2f} {rows / base:>10,.0f} {1.0:>8.2f}x")
        # values: the default (several statements a round trip) and one statement a round trip.
        for label, method, per_trip in (("values", "values", 5000), ("values/1", "values", 1),
                                        ("bulk", "bulk", 5000)):
            try:
                seconds = staged_with(method, rows, per_trip)
            except BridgeError as exc:
                print(f"{rows:>8} {label:<12} {'refused':>8}  {str(exc)[:70]}")
                continue
            print(f"{rows:>8} {label:<12} {seconds:>8.2f} {rows / seconds:>10,.0f} {base / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
