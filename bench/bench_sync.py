"""UPSERT on SQL Server against the best bridge could do before it: the same rows as an UPDATE
event plus an INSERT event.

Per driver, through the real engine (`process_once` of a running worker, as bench_write_methods):
a target of --rows rows (ids 1..N), and a source of N rows, half of them the target's keys with
every non-key value changed, half new keys. The paths:

  baseline        an UPDATE event of the existing half, then an INSERT event of the new half
                  (each half its own source table: the least the two events can stage)
  UPSERT          one event of the whole source
  UPSERT changed_only               the same, comparing each matched row before writing it
  UPSERT changed_only, no change    the target already holds the source: nothing to write
  UPSERT, no change                 (context) the same rows without changed_only: all rewritten

The target is reset before every run (copied server-side from a seed table, not timed) and read
back after it, whole, and compared with the exact content expected; each event's counts are
checked too. A run that is fast and wrong shows as WRONG and its time is not counted. "apply" is
the event's transaction alone (the rest is reading and staging the rows).

    BRIDGE_TEST_MSSQL_URL='mssql://user:pass@127.0.0.1:1433/db[?encrypt=optional&...]' \\
        python bench/bench_sync.py [--rows 100000] [--only pymssql|mssql-python] [--repeat 3] [--statements]

--statements also prints, per driver, each statement of one UPSERT's apply with its time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge_cli.config import AdapterConfig, load_settings  # noqa: E402
from bridge_cli.engine import Engine  # noqa: E402
from bridge_cli.outcomes import EventResult  # noqa: E402
from bridge_cli.targets.sqlserver import SQLServerTarget, tsql  # noqa: E402
from bridge_cli.targets.sqlserver import target as sqlserver_target  # noqa: E402
from tests.backends import mssql_url  # noqa: E402

TABLE = "dbo.bench_sync"
SEED = "dbo.bench_sync_seed"  # the target before a run: ids 1..N, version 0
SYNCED = "dbo.bench_sync_synced"  # the target after a correct run: ids 1..N/2 version 0, the rest version 1
DDL = ("[id] INT NOT NULL PRIMARY KEY, [name] NVARCHAR(100) NULL, [amount] DECIMAL(18,4) NULL, "
       "[seen] DATETIME2(6) NULL, [active] BIT NULL, [note] NVARCHAR(200) NULL")
SELECT = "SELECT [id], [name], [amount], [seen], [active], [note] FROM {} ORDER BY [id]"
BASE = dt.datetime(2026, 1, 1)


def row(i: int, version: int) -> tuple[Any, ...]:
    """Row `i` as the target has it (version 0) or as the source brings it (1): every non-key
    column differs between the two."""
    return (
        i, f"usuario-{i}" if version == 0 else f"Usuario-{i}",
        Decimal(i) / 4 + Decimal("0.0001") * (version + 1),
        BASE + dt.timedelta(seconds=i, microseconds=(i + version) % 999_999),
        (i + version) % 3 == 0,
        (None if i % 5 == 0 else f"ñandú 東京 {i}") if version == 0 else (f"nuevo {i}" if i % 7 else None),
    )


def normal(values: tuple[Any, ...]) -> tuple[Any, ...]:
    i, name, amount, seen, active, note = values
    return (int(i), name, None if amount is None else Decimal(amount), seen,
            None if active is None else bool(active), note)


# -- the server and the lake ---------------------------------------------------------------------
def options(driver: str, **extra: Any) -> dict[str, Any]:
    url = mssql_url()
    if url is None:
        sys.exit("set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:port/db")
    return {**url, "driver": driver, **extra}


def run(connection: Any, sql: str) -> None:
    connection.cursor().execute(sql)


def fetch(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    cursor = connection.cursor()
    cursor.execute(sql)
    return [tuple(r) for r in cursor.fetchall()]


def arrow_table(rows: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([("id", pa.int32()), ("name", pa.string()), ("amount", pa.decimal128(18, 4)),
                        ("seen", pa.timestamp("us")), ("active", pa.bool_()), ("note", pa.string())])
    return pa.table([pa.array([r[i] for r in rows], schema.field(i).type) for i in range(6)], schema=schema)


@dataclass
class Bench:
    """One driver's worker: its engine (kept warm across runs), lake and target."""

    driver: str
    rows: int
    engine: Engine = field(init=False)
    lake: Any = field(init=False)
    target: SQLServerTarget = field(init=False)
    connection: Any = field(init=False)  # the bench's own, to reset and read back
    settings: Any = field(init=False)

    def __post_init__(self) -> None:
        from bridge_cli.lakes.duckdb import DuckDBLake

        home = Path(tempfile.mkdtemp(prefix="bridge-bench-sync-"))
        settings = load_settings(env={"BRIDGE_HOME": str(home)})
        ledger = f"bridge.bench_ledger_{uuid.uuid4().hex[:8]}"
        self.settings = dataclasses.replace(
            settings, target=AdapterConfig("sqlserver", options(self.driver, ledger_table=ledger)))
        self.lake, self.target = DuckDBLake(self.settings), SQLServerTarget(self.settings)
        self.lake.init_event_table(upgrade=False)
        self.target.init_ledger()
        self.engine = Engine(self.settings, self.lake, self.target)
        self.connection = self.target.connect()
        self._lake_tables(home)

    def _lake_tables(self, home: Path) -> None:
        import duckdb

        n, half = self.rows, self.rows // 2
        tables = {
            "old": [row(i, 0) for i in range(1, n + 1)],
            "upsert": [row(i, 1) for i in range(half + 1, n + half + 1)],
            "existing": [row(i, 1) for i in range(half + 1, n + 1)],
            "new": [row(i, 1) for i in range(n + 1, n + half + 1)],
        }
        (home / "lake").mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(home / "lake" / "lake.duckdb"))
        con.execute("CREATE SCHEMA s")
        for name, rows in tables.items():
            data = arrow_table(rows)  # noqa: F841 (read by DuckDB by name)
            con.execute(f"CREATE TABLE s.{name} AS SELECT * FROM data")
        con.close()
        self.expected = [normal(r) for r in tables["old"][:half] + tables["upsert"]]
        self.seed = [normal(r) for r in tables["old"]]

    def prepare(self) -> None:
        """The seed and synced tables, each loaded once by an INSERT event and read back."""
        for table, sources, expected in ((SEED, ["old"], self.seed), (SYNCED, ["old", "upsert"], self.expected)):
            self.fresh(table)
            for source in sources:  # the second source's existing keys are skipped: UPDATE them after
                self.event("insert", table, source)
            if table == SYNCED:
                self.event("update", table, "upsert")
            got = [normal(r) for r in fetch(self.connection, SELECT.format(table))]
            if got != expected:
                sys.exit(f"{self.driver}: could not build {table} exactly; stopping")

    def fresh(self, table: str) -> None:
        run(self.connection, f"IF OBJECT_ID(N'{table}', N'U') IS NOT NULL DROP TABLE {table}")
        run(self.connection, f"CREATE TABLE {table} ({DDL})")

    def reset(self, start: str) -> None:
        """The target as a run starts: a server-side copy of the seed or of the synced table."""
        self.fresh(TABLE)
        run(self.connection, f"INSERT INTO {TABLE} SELECT * FROM {start}")

    def event(self, operation: str, table: str, source: str, **metadata: Any) -> EventResult:
        from bridge_cli.api import submit_event
        from bridge_cli.events import Operation, SubmitRequest

        submit_event(self.lake, SubmitRequest(
            operation=Operation(operation.upper()), target_table=table, source_table=f"lake.s.{source}",
            primary_keys=("id",), metadata={"engine": "worker", **metadata}), self.settings)
        [result] = self.engine.process_once()
        if result.status != "completed":
            raise RuntimeError(f"{operation} of {source} into {table}: {result.status}: {result.error_message}")
        return result

    def close(self) -> None:
        run(self.connection, f"DROP TABLE {tsql.table_sql(self.target.ledger)}")
        for table in (TABLE, SEED, SYNCED):
            run(self.connection, f"IF OBJECT_ID(N'{table}', N'U') IS NOT NULL DROP TABLE {table}")
        self.connection.close()
        self.target.close()


# -- timing the apply ------------------------------------------------------------------------------
@dataclass
class Clock:
    """Wraps the real apply and its statement runner to time them; nothing else changes."""

    applies: list[float] = field(default_factory=list)
    statements: list[tuple[str, float, int]] = field(default_factory=list)

    def install(self) -> None:
        apply = sqlserver_target.SQLServerSession.apply
        change, one = sqlserver_target._Runner.change, sqlserver_target._Runner.one
        clock = self

        def timed_apply(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return apply(self, *args, **kwargs)
            finally:
                clock.applies.append(time.perf_counter() - started)

        def timed(method: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(self: Any, sql: str, params: Sequence[Any] = ()) -> Any:
                started = time.perf_counter()
                result = method(self, sql, params)
                clock.statements.append((sql, time.perf_counter() - started,
                                         result if isinstance(result, int) else -1))
                return result
            return wrapper

        sqlserver_target.SQLServerSession.apply = timed_apply  # type: ignore[method-assign]
        sqlserver_target._Runner.change = timed(change)  # type: ignore[method-assign]
        sqlserver_target._Runner.one = timed(one)  # type: ignore[method-assign]


CLOCK = Clock()


# -- the paths -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncPath:
    name: str
    start: str  # the table the target is reset from
    events: tuple[tuple[str, str, dict[str, Any], dict[str, int] | None, int], ...]
    # each: operation, source table, metadata, expected details, expected rows_affected
    baseline: bool = False


def paths(rows: int) -> list[SyncPath]:
    half = rows // 2
    changed = {"inserted": half, "updated": half, "unchanged": 0}
    same = {"inserted": 0, "updated": 0, "unchanged": rows}
    return [
        SyncPath("UPDATE + INSERT events (baseline)", SEED,
                 (("update", "existing", {}, None, half), ("insert", "new", {}, None, half)), baseline=True),
        SyncPath("UPSERT", SEED, (("upsert", "upsert", {}, changed, rows),)),
        SyncPath("UPSERT changed_only", SEED, (("upsert", "upsert", {"changed_only": True}, changed, rows),)),
        SyncPath("UPSERT changed_only, nothing changed", SYNCED,
                 (("upsert", "upsert", {"changed_only": True}, same, 0),)),
        SyncPath("UPSERT, nothing changed (all rewritten)", SYNCED,
                 (("upsert", "upsert", {}, {"inserted": 0, "updated": rows, "unchanged": 0}, rows),)),
    ]


@dataclass
class Result:
    driver: str
    path: str
    rows: int
    seconds: float | None = None
    apply: float | None = None
    problem: str = ""


def measure(bench: Bench, path: SyncPath) -> Result:
    bench.reset(path.start)
    seconds = apply = 0.0
    problems = []
    for operation, source, metadata, details, affected in path.events:
        before = len(CLOCK.applies)
        try:
            result = bench.event(operation, TABLE, source, **metadata)
        except Exception as exc:
            return Result(bench.driver, path.name, bench.rows, problem="failed: " + " ".join(str(exc).split())[:90])
        seconds += result.seconds
        apply += sum(CLOCK.applies[before:])
        if (result.details, result.rows_affected) != (details, affected):
            problems.append(f"{operation} counted {result.details or ''} rows_affected {result.rows_affected}")
    got = [normal(r) for r in fetch(bench.connection, SELECT.format(TABLE))]
    wrong = abs(len(got) - len(bench.expected)) + sum(1 for e, g in zip(bench.expected, got, strict=False) if e != g)
    if wrong:
        problems.append(f"{wrong} rows differ")
    if problems:
        return Result(bench.driver, path.name, bench.rows, problem="WRONG: " + "; ".join(problems))
    return Result(bench.driver, path.name, bench.rows, seconds, apply)


def best(first: Result, other: Result) -> Result:
    """The faster correct run; a wrong or failed run anywhere makes the path wrong or failed."""
    for result in (first, other):
        if result.seconds is None:
            return result
    return first if (first.seconds or 0) <= (other.seconds or 0) else other


def statements(bench: Bench) -> None:
    """Each statement of one UPSERT's apply (and one changed_only, nothing changed), with its time."""
    for path in paths(bench.rows)[1:4:2]:
        CLOCK.statements.clear()
        measure(bench, path)
        print(f"\n{bench.driver}, {path.name}: the apply's statements")
        for sql, seconds, rows in CLOCK.statements:
            shown = " ".join(sql.split())
            print(f"  {seconds:7.3f} s  {'' if rows < 0 else f'{rows:>7,} rows  '}{shown[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only", choices=["pymssql", "mssql-python"])
    parser.add_argument("--repeat", type=int, default=3, help="rounds over every path; the best run of each counts")
    parser.add_argument("--statements", action="store_true", help="also time each statement of an UPSERT's apply")
    args = parser.parse_args()
    CLOCK.install()
    drivers = [args.only] if args.only else ["pymssql", "mssql-python"]
    results: dict[tuple[str, str], Result] = {}
    order: list[tuple[str, str]] = []
    for driver in drivers:
        bench = Bench(driver, args.rows)
        try:
            bench.prepare()  # its events also warm the worker up, as a running one is
            todo = paths(args.rows)
            # Rounds over all paths rather than repeats of one: a drift of the server's state
            # (autovacuum, bloat) spreads over every path instead of favouring the first ones.
            for _ in range(max(1, args.repeat)):
                for path in todo:
                    key = (driver, path.name)
                    result = measure(bench, path)
                    if key not in results:
                        order.append(key)
                    results[key] = best(results[key], result) if key in results else result
            if args.statements:
                statements(bench)
        finally:
            bench.close()
    print(f"\nbest of {args.repeat} rounds; target {args.rows:,} rows, source {args.rows:,} rows "
          f"({args.rows // 2:,} existing keys with changed values, {args.rows - args.rows // 2:,} new); "
          "every run's target read back whole and compared\n")
    print_table([results[key] for key in order])


def print_table(results: list[Result]) -> None:
    baseline = {r.driver: r.seconds for r in results if r.path.endswith("(baseline)") and r.seconds}
    header = (f"| {'driver':<12} | {'path':<40} | {'seconds':>7} | {'apply s':>7} | {'rows/s':>8} | "
              f"{'vs baseline':>11} | read back |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        if r.seconds is None:
            print(f"| {r.driver:<12} | {r.path:<40} | {'-':>7} | {'-':>7} | {'-':>8} | {'-':>11} | {r.problem} |")
            continue
        base = baseline.get(r.driver)
        ratio = f"{r.seconds / base:.2f}x" if base else "-"
        print(f"| {r.driver:<12} | {r.path:<40} | {r.seconds:7.2f} | {r.apply or 0:7.2f} | "
              f"{r.rows / r.seconds:8,.0f} | {ratio:>11} | exact |")
    print("\nvs baseline: seconds against the baseline's (below 1.00x is faster); apply s: the "
          "transaction alone")


if __name__ == "__main__":
    main()
