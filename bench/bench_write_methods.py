"""SQL Server writes, in one run against one server: every driver x method, each driver's own best
raw load of the same rows, naive executemany, and a whole `bridge` INSERT event per driver.

The rows: an int key, nvarchar, decimal(18,4), datetime2(6), bit, and a nullable nvarchar with
non-ASCII text. Every load is read back and compared with the source: a load that is fast and
wrong is shown as WRONG, and its speed is not counted.

    BRIDGE_TEST_MSSQL_URL='mssql://user:pass@127.0.0.1:1433/db[?encrypt=optional&...]' \\
        python bench/bench_write_methods.py [--rows 100000] [--only pymssql|mssql-python] [--repeat 3]

Ratios: "vs raw" is rows/s against the best correct raw load of the same driver, in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge_cli.config import AdapterConfig, load_settings  # noqa: E402
from bridge_cli.errors import BridgeError  # noqa: E402
from bridge_cli.events import Operation  # noqa: E402
from bridge_cli.identifiers import TableName  # noqa: E402
from bridge_cli.targets import ApplyPlan, TargetColumn, TargetTable  # noqa: E402
from bridge_cli.targets.sqlserver import SQLServerSession, SQLServerTarget, tsql  # noqa: E402
from tests.backends import mssql_url  # noqa: E402

COLUMNS = (
    TargetColumn("id", "int"),
    TargetColumn("name", "nvarchar(100)"),
    TargetColumn("amount", "decimal(18,4)"),
    TargetColumn("seen", "datetime2(6)"),
    TargetColumn("active", "bit"),
    TargetColumn("note", "nvarchar(200)"),
)
DDL = ("[id] INT NOT NULL, [name] NVARCHAR(100) NULL, [amount] DECIMAL(18,4) NULL, "
       "[seen] DATETIME2(6) NULL, [active] BIT NULL, [note] NVARCHAR(200) NULL")
BATCH = 5000
BASE = dt.datetime(2026, 1, 1)


def source_rows(n: int) -> list[tuple[Any, ...]]:
    return [
        (i, f"usuario-{i}", Decimal(i) / 4 + Decimal("0.0001"),
         BASE + dt.timedelta(seconds=i, microseconds=i % 999_999), i % 3 == 0,
         None if i % 5 == 0 else f"ñandú 東京 {i}")
        for i in range(1, n + 1)
    ]


def arrow_batches(rows: list[tuple[Any, ...]]) -> Iterator[Any]:
    import pyarrow as pa

    schema = pa.schema([("id", pa.int32()), ("name", pa.string()), ("amount", pa.decimal128(18, 4)),
                        ("seen", pa.timestamp("us")), ("active", pa.bool_()), ("note", pa.string())])
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        yield pa.record_batch([pa.array([r[i] for r in chunk], schema.field(i).type) for i in range(6)], schema=schema)


def mismatches(expected: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> int:
    differing = sum(1 for e, g in zip(expected, got, strict=False) if _norm(e) != _norm(g))
    return abs(len(expected) - len(got)) + differing


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    i, name, amount, seen, active, note = row
    return (int(i) if i is not None else None, name, Decimal(amount) if amount is not None else None, seen,
            bool(active) if active is not None else None, note)


# -- connections ---------------------------------------------------------------------------------
def options(driver: str, **extra: Any) -> dict[str, Any]:
    url = mssql_url()
    if url is None:
        sys.exit("set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:port/db")
    return {**url, "driver": driver, **extra}


def target(driver: str, **extra: Any) -> SQLServerTarget:
    settings = load_settings(env={"BRIDGE_HOME": tempfile.mkdtemp(prefix="bridge-bench-")})
    return SQLServerTarget(dataclasses.replace(settings, target=AdapterConfig("sqlserver", options(driver, **extra))))


def run(connection: Any, sql: str) -> None:
    cursor = connection.cursor()
    cursor.execute(sql)


def fetch(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    cursor = connection.cursor()
    cursor.execute(sql)
    return [tuple(r) for r in cursor.fetchall()]


def fresh_table(connection: Any, name: str) -> None:
    run(connection, f"IF OBJECT_ID(N'{name}', N'U') IS NOT NULL DROP TABLE {name}")
    run(connection, f"CREATE TABLE {name} ({DDL})")


SELECT = "SELECT [id], [name], [amount], [seen], [active], [note] FROM {} ORDER BY [id]"


@dataclass
class Result:
    case: str
    driver: str
    rows: int = 0
    seconds: float | None = None
    wrong: int = 0
    note: str = ""


# -- raw loads: each driver's own best way, on its own -------------------------------------------------
def raw_load(driver: str, load: Callable[[Any], None]) -> tuple[float, list[tuple[Any, ...]]]:
    """Time `load(connection)` into a fresh heap table, then read the table back."""
    connection = target(driver).connect()
    try:
        fresh_table(connection, "dbo.bench_raw")
        started = time.perf_counter()
        load(connection)
        seconds = time.perf_counter() - started
        return seconds, fetch(connection, SELECT.format("dbo.bench_raw"))
    finally:
        connection.close()


def in_transaction(connection: Any, work: Callable[[Any], None]) -> None:
    cursor = connection.cursor()
    cursor.execute("BEGIN TRANSACTION")
    work(cursor)
    cursor.execute("COMMIT TRANSACTION")


def raw_pymssql_values(rows: list[tuple[Any, ...]], per_trip: int) -> tuple[float, list[tuple[Any, ...]]]:
    """pymssql's best plain load: 1000-row INSERT ... VALUES (pymssql renders parameters into the
    text, so SQL Server's 2100-parameter limit does not apply), one transaction."""
    one = "(" + ", ".join(["%s"] * 6) + ")"

    def work(cursor: Any) -> None:
        step = 1000 * per_trip
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            statements = [f"INSERT INTO dbo.bench_raw VALUES {', '.join([one] * len(chunk[o:o + 1000]))}"
                          for o in range(0, len(chunk), 1000)]
            cursor.execute(";\n".join(statements), tuple(v for r in chunk for v in r))

    return raw_load("pymssql", lambda connection: in_transaction(connection, work))


def raw_pymssql_bulk(rows: list[tuple[Any, ...]]) -> tuple[float, list[tuple[Any, ...]]]:
    return raw_load("pymssql", lambda connection: connection.bulk_copy("dbo.bench_raw", rows, batch_size=BATCH))


def naive_executemany(rows: list[tuple[Any, ...]]) -> tuple[float, list[tuple[Any, ...]]]:
    sql = "INSERT INTO dbo.bench_raw VALUES (%s, %s, %s, %s, %s, %s)"
    return raw_load("pymssql", lambda connection: in_transaction(connection, lambda c: c.executemany(sql, rows)))


def raw_mssql_python_executemany(rows: list[tuple[Any, ...]], chunk: int) -> tuple[float, list[tuple[Any, ...]]]:
    """mssql-python's parameter arrays: executemany of a prepared INSERT, in one transaction."""

    def work(cursor: Any) -> None:
        for start in range(0, len(rows), chunk):
            cursor.executemany("INSERT INTO dbo.bench_raw VALUES (?, ?, ?, ?, ?, ?)", rows[start : start + chunk])

    return raw_load("mssql-python", lambda connection: in_transaction(connection, work))


def raw_mssql_python_text(rows: list[tuple[Any, ...]], chunk: int) -> tuple[float, list[tuple[Any, ...]]]:
    """mssql-python's parameter arrays at their best here: decimals and datetimes formatted as text
    (inside the timing) and cast in the statement, parameter types declared, one transaction."""
    sql = ("INSERT INTO dbo.bench_raw VALUES (?, ?, CAST(? AS decimal(18,4)), CAST(? AS datetime2(6)), ?, ?)")
    sizes = [(4, 0, 0), (-9, 100, 0), (-9, 64, 0), (-9, 64, 0), (-7, 0, 0), (-9, 200, 0)]

    def work(cursor: Any) -> None:
        for start in range(0, len(rows), chunk):
            text = [(i, name, format(amount, "f"), seen.isoformat(sep=" "), active, note)
                    for i, name, amount, seen, active, note in rows[start : start + chunk]]
            cursor.setinputsizes(sizes)
            cursor.executemany(sql, text)

    return raw_load("mssql-python", lambda connection: in_transaction(connection, work))


def raw_mssql_python_bulkcopy_arrow(rows: list[tuple[Any, ...]]) -> tuple[float, list[tuple[Any, ...]]]:
    import pyarrow as pa

    table = pa.Table.from_batches(list(arrow_batches(rows)))

    def load(connection: Any) -> None:
        try:
            connection.cursor().bulkcopy_arrow("dbo.bench_raw", table, timeout=0, keep_nulls=True)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # its native core panics with a BaseException
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None

    return raw_load("mssql-python", load)


# -- bridge: staging only, and a whole event -------------------------------------------------------
def plan() -> ApplyPlan:
    table = TargetTable(TableName(("dbo", "bench_event")), COLUMNS)
    return ApplyPlan("bench", Operation.INSERT, table, COLUMNS, (COLUMNS[0],))


def bridge_stage(rows: list[tuple[Any, ...]], driver: str, method: str, **extra: Any) -> tuple[float, list[tuple]]:
    from bridge_cli.prefetch import read_ahead

    bridge = target(driver, write_method=method, **extra)
    session = SQLServerSession(bridge, bridge.connect())
    batches = list(arrow_batches(rows))  # the source, ready before the clock starts (as the raw loads' rows)
    try:
        started = time.perf_counter()
        staged = session.stage_rows(plan(), read_ahead(batches))
        seconds = time.perf_counter() - started
        assert staged == len(rows)
        got = fetch(session.connection, SELECT.format(session.stage))
    finally:
        session.close()
    return seconds, got


def bridge_event(
    rows: list[tuple[Any, ...]], driver: str, warm: bool = False, spark: AdapterConfig | None = None,
    **extra: Any,
) -> tuple[float, list[tuple[Any, ...]], str]:
    """A whole INSERT event through the engine: DuckDB source -> claim -> stage -> apply -> record.
    warm: the same worker first processes a 10-row event (as a running worker has: its connection
    open, and what `auto` learned about the server). spark: the profile's `spark:` section; the
    event then asks for it (metadata {"engine": "spark"})."""
    import duckdb

    from bridge_cli.api import submit_event
    from bridge_cli.engine import Engine
    from bridge_cli.events import SubmitRequest
    from bridge_cli.lakes.duckdb import DuckDBLake

    home = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    settings = load_settings(env={"BRIDGE_HOME": str(home)})
    ledger = f"bridge.bench_ledger_{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(
        settings, target=AdapterConfig("sqlserver", options(driver, ledger_table=ledger, **extra)), spark=spark
    )
    lake, bridge = DuckDBLake(settings), SQLServerTarget(settings)
    lake.init_event_table(upgrade=False)
    bridge.init_ledger()
    (home / "lake").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home / "lake" / "lake.duckdb"))
    con.execute("CREATE SCHEMA s")
    con.execute("CREATE TABLE s.src (id INTEGER, name VARCHAR, amount DECIMAL(18,4), seen TIMESTAMP, "
                "active BOOLEAN, note VARCHAR)")
    import pyarrow as pa

    src = pa.Table.from_batches(list(arrow_batches(rows)))  # noqa: F841 (read by DuckDB by name)
    con.execute("INSERT INTO s.src SELECT * FROM src")
    con.execute("CREATE TABLE s.warm AS SELECT * FROM s.src LIMIT 10")
    con.close()
    connection = bridge.connect()
    keyed = DDL.replace("[id] INT NOT NULL", "[id] INT NOT NULL PRIMARY KEY")
    for table in ("dbo.bench_event", "dbo.bench_warm"):
        run(connection, f"IF OBJECT_ID(N'{table}', N'U') IS NOT NULL DROP TABLE {table}")
        run(connection, f"CREATE TABLE {table} ({keyed})")
    engine = Engine(settings, lake, bridge)
    if warm:
        submit_event(lake, SubmitRequest(operation=Operation.INSERT, target_table="dbo.bench_warm",
                                         source_table="lake.s.warm", primary_keys=("id",),
                                         metadata={"engine": "worker"}), settings)
        engine.process_once()
    submit_event(lake, SubmitRequest(operation=Operation.INSERT, target_table="dbo.bench_event",
                                     source_table="lake.s.src", primary_keys=("id",), rows_expected=len(rows),
                                     metadata={"engine": "spark"} if spark is not None else None), settings)
    started = time.perf_counter()
    [result] = engine.process_once()
    seconds = time.perf_counter() - started
    got = fetch(connection, SELECT.format("dbo.bench_event"))
    run(connection, f"DROP TABLE {tsql.table_sql(bridge.ledger)}")
    connection.close()
    status = f"{result.status}, rows_affected={result.rows_affected}" + (f": {result.error_message}" if
                                                                          result.error_message else "")
    return seconds, got, status


# -- the table -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    driver: str
    expected: list[tuple[Any, ...]]
    work: Callable[[], Any]
    once: bool = False  # slow and only there to show why it is not the default: not repeated


def measure(case: Case) -> Result:
    try:
        outcome = case.work()
    except (BridgeError, Exception) as exc:
        return Result(case.name, case.driver, len(case.expected), note="failed: " + " ".join(str(exc).split())[:90])
    seconds, got = outcome[0], outcome[1]
    note = outcome[2] if len(outcome) > 2 else ""
    return Result(case.name, case.driver, len(case.expected), seconds, mismatches(case.expected, got), note)


def best(first: Result, other: Result) -> Result:
    """The faster correct run; a wrong or failed run anywhere makes the case wrong or failed."""
    for result in (first, other):
        if result.seconds is None or result.wrong:
            return result
    return first if (first.seconds or 0) <= (other.seconds or 0) else other


def cases(rows: list[tuple[Any, ...]], drivers: list[str]) -> list[Case]:
    found: list[Case] = []
    if "pymssql" in drivers:
        few = rows[:10_000]
        found += [
            Case("raw: naive executemany", "pymssql", few, lambda: naive_executemany(few), once=True),
            Case("raw: 1000-row VALUES, 1 statement/trip", "pymssql", rows, lambda: raw_pymssql_values(rows, 1)),
            Case("raw: 1000-row VALUES, 5 statements/trip", "pymssql", rows, lambda: raw_pymssql_values(rows, 5),
                 once=True),
            Case("raw: bulk_copy", "pymssql", rows, lambda: raw_pymssql_bulk(rows), once=True),
            Case("bridge stage: values (rows_per_trip 1000, default)", "pymssql", rows,
                 lambda: bridge_stage(rows, "pymssql", "values")),
            Case("bridge stage: values (rows_per_trip 5000)", "pymssql", rows,
                 lambda: bridge_stage(rows, "pymssql", "values", rows_per_trip=5000), once=True),
            Case("bridge stage: bulk", "pymssql", rows, lambda: bridge_stage(rows, "pymssql", "bulk"), once=True),
            Case("bridge INSERT event (auto), a worker's first", "pymssql", rows,
                 lambda: bridge_event(rows, "pymssql")),
            Case("bridge INSERT event (auto), a running worker", "pymssql", rows,
                 lambda: bridge_event(rows, "pymssql", warm=True)),
            Case("bridge INSERT event (values), a running worker", "pymssql", rows,
                 lambda: bridge_event(rows, "pymssql", warm=True, write_method="values")),
        ]
    if "mssql-python" in drivers:
        found += [
            Case("raw: executemany, 5,000-row arrays", "mssql-python", rows,
                 lambda: raw_mssql_python_executemany(rows, 5000)),
            Case("raw: executemany, 20,000-row arrays", "mssql-python", rows,
                 lambda: raw_mssql_python_executemany(rows, 20_000)),
            Case("raw: executemany, text + CAST, declared types", "mssql-python", rows,
                 lambda: raw_mssql_python_text(rows, 5000)),
            Case("raw: bulkcopy_arrow", "mssql-python", rows, lambda: raw_mssql_python_bulkcopy_arrow(rows), once=True),
            Case("bridge stage: arrays", "mssql-python", rows, lambda: bridge_stage(rows, "mssql-python", "arrays")),
            Case("bridge stage: bulk", "mssql-python", rows, lambda: bridge_stage(rows, "mssql-python", "bulk"),
                 once=True),
            Case("bridge INSERT event (auto), a worker's first", "mssql-python", rows,
                 lambda: bridge_event(rows, "mssql-python")),
            Case("bridge INSERT event (auto), a running worker", "mssql-python", rows,
                 lambda: bridge_event(rows, "mssql-python", warm=True)),
            Case("bridge INSERT event (arrays), a running worker", "mssql-python", rows,
                 lambda: bridge_event(rows, "mssql-python", warm=True, write_method="arrays")),
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only", choices=["pymssql", "mssql-python"])
    parser.add_argument("--repeat", type=int, default=3, help="rounds over every case; the best run of each counts")
    args = parser.parse_args()
    rows = source_rows(args.rows)
    todo = cases(rows, [args.only] if args.only else ["pymssql", "mssql-python"])
    # Rounds over all cases rather than repeats of one: a drift of the server's state (autovacuum,
    # bloat) spreads over every case instead of favouring the first ones.
    results: dict[str, Result] = {}
    for round_number in range(max(1, args.repeat)):
        for case in todo:
            if case.once and round_number:
                continue
            result = measure(case)
            key = f"{case.driver}|{case.name}"
            results[key] = best(results[key], result) if key in results else result
    ordered = [results[f"{c.driver}|{c.name}"] for c in todo]
    for result in ordered:
        if result.case == "raw: naive executemany":
            result.note = f"{result.rows:,} rows only: it is slow"
    print(f"best of {args.repeat} rounds (cases marked once: 1 run)\n")
    print_table(ordered, args.rows)


def rate(result: Result) -> float | None:
    if result.seconds is None or result.wrong:
        return None
    return result.rows / result.seconds


def print_table(results: list[Result], rows: int) -> None:
    best_raw: dict[str, float] = {}
    for r in results:
        speed = rate(r)
        if r.case.startswith("raw:") and "naive" not in r.case and speed is not None:
            best_raw[r.driver] = max(best_raw.get(r.driver, 0.0), speed)
    print(f"{rows:,} rows x 6 columns; every load read back and compared with the source\n")
    header = f"| {'driver':<12} | {'case':<50} | {'seconds':>7} | {'rows/s':>8} | {'vs raw':>6} | read back |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        speed = rate(r)
        seconds = f"{r.seconds:.2f}" if r.seconds is not None else "-"
        shown = f"{speed:,.0f}" if speed is not None else "-"
        ratio = f"{speed / best_raw[r.driver]:.2f}x" if speed is not None and r.driver in best_raw else "-"
        if r.seconds is None:
            check = r.note
        elif r.wrong:
            check = f"WRONG: {r.wrong} rows differ"
        else:
            check = "exact" + (f" ({r.note})" if r.note else "")
        print(f"| {r.driver:<12} | {r.case:<50} | {seconds:>7} | {shown:>8} | {ratio:>6} | {check} |")


if __name__ == "__main__":
    main()
