"""The default profile (no `driver:`: `auto`) against each installed driver's best raw load.

100,000 rows of the fidelity matrix's kinds of values (tests/test_sqlserver_fidelity.py: nvarchar
with CJK, emoji, quotes and new lines, varchar, nvarchar(max), datetime2(7) and (3),
datetimeoffset, date, time, decimal(38,10) at its limits, float, bit, bigint, uniqueidentifier,
varbinary; about 10% NULLs in every column) go into one keyed table:

  raw        each installed driver's best load of the rows, already in Python, on an open
             connection, into the created table (every variant is timed; the fastest correct counts)
  bridge     an INSERT event of the same rows from the DuckDB lake, through a profile whose target
             names no driver:
             - a running worker: an engine that has processed one event already (connection open)
             - a cold `bridge process-once`: a new process (the venv's console script, the profile
               in a bridge.yaml), timed from spawn to exit

Every load is read back and compared with the source; a wrong one is shown WRONG and not counted.
A bridge event must also end `completed` with rows_affected equal to the rows.

    BRIDGE_TEST_MSSQL_URL='mssql://user:pass@127.0.0.1:1433/db[?encrypt=optional&...]' \\
        python bench/bench_default_driver.py [--rows 100000] [--repeat 3]

Ratios are rows/s against the fastest correct raw load of any installed driver ("vs best raw"),
and against the raw load of the driver `auto` chose ("vs own raw"), in the same run; best of
--repeat rounds over every case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_write_methods import Result, fetch, in_transaction, run, target  # noqa: E402
from bridge_cli.config import load_settings  # noqa: E402
from bridge_cli.targets.sqlserver import SQLServerTarget  # noqa: E402
from tests.backends import mssql_url  # noqa: E402

TABLE = "dbo.bench_default"
WARM_TABLE = "dbo.bench_default_warm"
UTC = dt.timezone.utc
# name, SQL Server type, DuckDB type
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "INT NOT NULL PRIMARY KEY", "INTEGER"),
    ("nv", "NVARCHAR(100)", "VARCHAR"),
    ("v", "VARCHAR(100)", "VARCHAR"),
    ("nvmax", "NVARCHAR(MAX)", "VARCHAR"),
    ("dt7", "DATETIME2(7)", "TIMESTAMP"),
    ("dt3", "DATETIME2(3)", "TIMESTAMP"),
    ("dto", "DATETIMEOFFSET(7)", "TIMESTAMPTZ"),
    ("d", "DATE", "DATE"),
    ("t", "TIME(7)", "TIME"),
    ("dec", "DECIMAL(38,10)", "DECIMAL(38,10)"),
    ("f", "FLOAT", "DOUBLE"),
    ("b", "BIT", "BOOLEAN"),
    ("bi", "BIGINT", "BIGINT"),
    ("u", "UNIQUEIDENTIFIER", "UUID"),
    ("vb", "VARBINARY(100)", "BLOB"),
)
NAMES = [name for name, _, _ in COLUMNS]
DDL = ", ".join(f"[{name}] {sql}" + ("" if "NOT NULL" in sql else " NULL") for name, sql, _ in COLUMNS)
SELECT = f"SELECT {', '.join(f'[{n}]' for n in NAMES)} FROM {{}} ORDER BY [id]"
DRIVERS = ("pymssql", "mssql-python")

# The fidelity matrix's edge values, which every few hundred rows carry (the rest vary around them).
MAX_DEC = Decimal("9999999999999999999999999999.9999999999")
EDGES: dict[str, list[Any]] = {
    "nv": ["ñandú", "東京", "emoji 😀", "it's \"quoted\"\nand\r\nnew lines"],
    "v": ["plain", "with 'quote'", "tab\there", "%s %d %(x)s"],
    "nvmax": ["", "a", "ñ" + "x" * 3000 + "東", "b"],
    "dt7": [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            dt.datetime(2000, 2, 29, 0, 0, 0, 1), dt.datetime(2026, 1, 2, 3, 4, 5, 123456)],
    "dt3": [dt.datetime(1999, 12, 31, 23, 59, 59, 999000), dt.datetime(2026, 6, 1),
            dt.datetime(2026, 6, 1, 0, 0, 0, 1000), dt.datetime(2026, 1, 2, 3, 4, 5, 123000)],
    "dto": [dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(2026, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
            dt.datetime(2026, 7, 1, 12, tzinfo=UTC), dt.datetime(2026, 1, 2, 3, 4, 5, 654321, tzinfo=UTC)],
    "d": [dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29), dt.date(2026, 1, 2)],
    "t": [dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 0, 0, 1), dt.time(13, 14, 15, 123456)],
    "dec": [MAX_DEC, MAX_DEC.copy_negate(), Decimal("-0.0000000001"), Decimal("0E-10")],
    "f": [1.7976931348623157e308, -2.5e-300, 0.1, 123456789.125],
    "b": [True, False, True, False],
    "bi": [9223372036854775807, -9223372036854775808, 0, 42],
    "u": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.UUID("12345678-1234-5678-1234-567812345678"),
          uuid.UUID(int=42)],
    "vb": [b"", b"\x00\x01\xff", b"'; DROP TABLE x --", b"abc"],
}
WORDS = ["ñandú", "東京", "😀", "it's", "\"q\"", "línea\nnueva", "crlf\r\n", "usuario", "Ōsaka", "niño", "%s", "a'b"]


def source_rows(n: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """Rows 1..n: varied values of each column's type, a matrix edge value every 97 rows (cycled),
    and a NULL in about one row of ten per column (each column its own rows)."""
    rng = random.Random(seed)
    base = dt.datetime(2026, 1, 1)
    rows = []
    for i in range(1, n + 1):
        edge = i % 97 == 0
        values: dict[str, Any] = {
            "nv": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + f" {i}",
            "v": f"plain {i} with 'q' and %s" if i % 2 else f"tab\t{i}",
            "nvmax": ("ñ東😀" * rng.randint(0, 40)) + str(i),
            "dt7": base + dt.timedelta(seconds=rng.randint(-10**9, 10**9), microseconds=rng.randint(0, 999_999)),
            "dt3": base + dt.timedelta(seconds=rng.randint(-10**9, 10**9), milliseconds=rng.randint(0, 999)),
            "dto": dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=rng.randint(-10**9, 10**9),
                                                                     microseconds=rng.randint(0, 999_999)),
            "d": dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(-700_000, 2_000_000)),
            "t": dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999)),
            "dec": _decimal(rng.randint(0, 1), rng.randint(0, 10 ** rng.randint(1, 38) - 1)),
            "f": rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30),
            "b": rng.random() < 0.5,
            "bi": rng.randint(-2**63, 2**63 - 1),
            "u": uuid.UUID(int=rng.getrandbits(128)),
            "vb": rng.randbytes(rng.randint(0, 100)),
        }
        if edge:
            k = (i // 97) % 4
            values = {name: EDGES[name][k] for name in values}
        for c, name in enumerate(values):  # about 10% NULLs, different rows for each column
            if (i * 7 + c * 3) % 10 == 0 and not edge:
                values[name] = None
        rows.append((i, *values.values()))
    return rows


def _decimal(sign: int, digits: int) -> Decimal:
    """An exact DECIMAL(38,10) value (no context rounding): the integer's digits, scale 10."""
    return Decimal((sign, tuple(int(c) for c in str(digits)), -10))


def arrow_table(rows: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa

    types = [pa.int32(), pa.string(), pa.string(), pa.large_string(), pa.timestamp("us"), pa.timestamp("us"),
             pa.timestamp("us", tz="UTC"), pa.date32(), pa.time64("us"), pa.decimal128(38, 10), pa.float64(),
             pa.bool_(), pa.int64(), pa.string(), pa.binary()]
    arrays = []
    for c, kind in enumerate(types):
        values = [r[c] for r in rows]
        if NAMES[c] == "u":
            values = [None if v is None else str(v) for v in values]
        arrays.append(pa.array(values, kind))
    return pa.Table.from_arrays(arrays, names=NAMES)


def normalise(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Compare meaning, not Python shape (as the fidelity test): each driver reads some types back
    as other Python types."""
    out = []
    for name, value in zip(NAMES, row, strict=True):
        if value is None:
            out.append(None)
        elif name == "u":
            out.append(uuid.UUID(str(value)))
        elif name == "dto":
            out.append(value.astimezone(UTC) if isinstance(value, dt.datetime) else value)
        elif name == "vb":
            out.append(bytes(value))
        elif name == "b":
            out.append(bool(value))
        elif name == "dec":
            out.append(Decimal(value))
        else:
            out.append(value)
    return tuple(out)


def mismatches(expected: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> tuple[int, str]:
    """(rows that differ, the first difference in words)."""
    first = ""
    differing = 0
    for e, g in zip(expected, got, strict=False):
        ne, ng = normalise(e), normalise(g)
        if ne != ng:
            differing += 1
            if not first:
                k = next(k for k in range(len(NAMES)) if ne[k] != ng[k])
                first = f"id {e[0]} {NAMES[k]}: wrote {ne[k]!r:.60}, read {ng[k]!r:.60}"
    if len(expected) != len(got) and not first:
        first = f"{len(got)} rows read back, {len(expected)} written"
    return abs(len(expected) - len(got)) + differing, first


def installed_drivers() -> list[str]:
    return [d for d in DRIVERS if importlib.util.find_spec(d.replace("-", "_")) is not None]


def fresh_table(connection: Any, name: str = TABLE) -> None:
    run(connection, f"IF OBJECT_ID(N'{name}', N'U') IS NOT NULL DROP TABLE {name}")
    run(connection, f"CREATE TABLE {name} ({DDL})")


Outcome = tuple[float, list[tuple[Any, ...]], str]  # seconds, the table read back, a note


# -- raw loads: each driver's own ways, rows already in Python, connection open, table created ------
def raw_load(driver: str, load: Callable[[Any], None]) -> Outcome:
    connection = target(driver).connect()
    try:
        fresh_table(connection)
        started = time.perf_counter()
        load(connection)
        seconds = time.perf_counter() - started
        return seconds, fetch(connection, SELECT.format(TABLE)), ""
    finally:
        connection.close()


def _pymssql_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # pymssql renders a UUID it is given as a UUID badly, and bytes made of ASCII as a string.
    return tuple(str(v) if isinstance(v, uuid.UUID) else bytearray(v) if isinstance(v, bytes) else v for v in row)


def raw_pymssql_values(rows: list[tuple[Any, ...]], per_statement: int) -> Outcome:
    """Multi-row INSERT ... VALUES, one statement a round trip, one transaction (pymssql renders
    the parameters into the text; its rendering time grows faster than the statement, so on a wide
    table smaller statements win)."""
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"

    def work(cursor: Any) -> None:
        for start in range(0, len(rows), per_statement):
            chunk = [_pymssql_values(r) for r in rows[start : start + per_statement]]
            cursor.execute(f"INSERT INTO {TABLE} VALUES {', '.join([one] * len(chunk))}",
                           tuple(v for r in chunk for v in r))

    return raw_load("pymssql", lambda connection: in_transaction(connection, work))


# Values mssql-python gets as text, cast back in the statement (as bridge and bench_write_methods do:
# it refuses dates before 1753 and spends Python calls on every Decimal).
CASTS = {"dt7": "DATETIME2(7)", "dt3": "DATETIME2(3)", "dto": "DATETIMEOFFSET(7)", "d": "DATE", "t": "TIME(7)",
         "dec": "DECIMAL(38,10)"}
SQL_WVARCHAR, SQL_VARCHAR, SQL_WLONGVARCHAR = -9, 12, -10


def _as_text(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bytes, uuid.UUID)):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat()  # date, time


def _declared(chunk: list[tuple[Any, ...]]) -> list[tuple[int, int, int]]:
    """Every parameter's ODBC type, so the driver infers none from the values."""
    longest = max((len(r[3]) for r in chunk if r[3] is not None), default=1)
    nvmax = (SQL_WVARCHAR, max(longest, 1), 0) if longest <= 4000 else (SQL_WLONGVARCHAR, 0, 0)
    text = (SQL_WVARCHAR, 64, 0)
    return [(4, 0, 0), (SQL_WVARCHAR, 100, 0), (SQL_VARCHAR, 100, 0), nvmax, text, text, text, text, text, text,
            (8, 0, 0), (-7, 0, 0), (-5, 0, 0), (-11, 16, 0), (-3, 100, 0)]


def raw_mssql_python(rows: list[tuple[Any, ...]], as_text: bool, declare: bool, chunk: int = 5000) -> Outcome:
    """executemany with parameter arrays, `chunk` rows an execution, one transaction."""
    marks = ", ".join(f"CAST(? AS {CASTS[n]})" if as_text and n in CASTS else "?" for n in NAMES)
    sql = f"INSERT INTO {TABLE} VALUES ({marks})"
    text_columns = {i for i, n in enumerate(NAMES) if n in CASTS}

    def work(cursor: Any) -> None:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            if as_text:  # inside the timing, as the driver's own conversions are
                part = [tuple(_as_text(v) if i in text_columns else v for i, v in enumerate(r)) for r in part]
            if declare:
                cursor.setinputsizes(_declared(part))
            cursor.executemany(sql, part)

    return raw_load("mssql-python", lambda connection: in_transaction(connection, work))


# -- bridge: a profile that names no driver ------------------------------------------------------------
class DefaultProfile:
    """A bridge.yaml whose target names no driver, a DuckDB lake holding the source, the ledger
    made (`bridge init`'s work), in a temp BRIDGE_HOME that a `bridge process-once` can use too."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        import duckdb
        import yaml

        url = mssql_url()
        if url is None:
            sys.exit("set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:port/db")
        self.home = Path(tempfile.mkdtemp(prefix="bridge-bench-default-"))
        self.ledger = f"bridge.bench_default_{uuid.uuid4().hex[:8]}"
        password = url.pop("password")
        target = {"kind": "sqlserver", **{k: _yaml_value(v) for k, v in url.items()},
                  "password": "${BENCH_MSSQL_PASSWORD}", "ledger_table": self.ledger}
        assert "driver" not in target, "the bench is of the default profile: its URL must name no driver"
        profile = {"lake": {"kind": "duckdb", "path": str(self.home / "lake")}, "target": target,
                   "allowed_sources": ["lake.s.*"], "allowed_targets": [f"{TABLE}*"]}
        self.config = self.home / "bridge.yaml"
        self.config.write_text(yaml.safe_dump({"default_profile": "bench", "profiles": {"bench": profile}}))
        self.env = {"BRIDGE_CONFIG": str(self.config), "BRIDGE_HOME": str(self.home),
                    "BENCH_MSSQL_PASSWORD": password}
        self.settings = load_settings(env=self.env)
        lake = self.lake()
        lake.init_event_table(upgrade=False)
        self.target().init_ledger()
        source = arrow_table(rows)  # noqa: F841 (read by DuckDB by name)
        con = duckdb.connect(str(self.home / "lake" / "lake.duckdb"))
        try:
            con.execute("CREATE SCHEMA s")
            types = ", ".join(f"{name} {duck}" for name, _, duck in COLUMNS)
            con.execute(f"CREATE TABLE s.src ({types})")
            con.execute(f"INSERT INTO s.src SELECT {', '.join(NAMES)} FROM source")
            con.execute("CREATE TABLE s.warm AS SELECT * FROM s.src ORDER BY id LIMIT 10")
        finally:
            con.close()

    def lake(self) -> Any:
        from bridge_cli.adapters import open_lake

        return open_lake(self.settings)

    def target(self) -> SQLServerTarget:
        from bridge_cli.adapters import open_target

        opened = open_target(self.settings)
        assert isinstance(opened, SQLServerTarget)
        return opened

    def submit(self, table: str, source: str, rows: int | None) -> str:
        from bridge_cli.api import submit_event
        from bridge_cli.events import Operation, SubmitRequest

        request = SubmitRequest(operation=Operation.INSERT, target_table=table, source_table=source,
                                primary_keys=("id",), rows_expected=rows)
        return submit_event(self.lake(), request, self.settings).event_id

    def event_note(self, event_id: str, rows: int) -> str:
        """'' when the event completed with rows_affected == rows, else what it ended as."""
        event = self.lake().get_event(event_id)
        if event.status == "completed" and event.rows_affected == rows:
            return ""
        return f"event {event.status}, rows_affected={event.rows_affected}: {event.error_message or ''}"[:200]

    def close(self) -> None:
        connection = target("pymssql" if "pymssql" in installed_drivers() else "mssql-python").connect()
        try:
            for table in (self.ledger, TABLE, WARM_TABLE):
                run(connection, f"IF OBJECT_ID(N'{table}', N'U') IS NOT NULL DROP TABLE {table}")
        finally:
            connection.close()


def _yaml_value(value: Any) -> Any:
    """A URL query value as YAML would give it (encrypt=optional: text; trust_server_certificate=true: a flag)."""
    import yaml

    return yaml.safe_load(value) if isinstance(value, str) and value else value


def running_worker(profile: DefaultProfile, rows: list[tuple[Any, ...]]) -> Outcome:
    """An engine that has processed one event (its connection open, `auto` settled) processes the
    INSERT event of every row."""
    from bridge_cli.engine import Engine

    bridge = profile.target()
    engine = Engine(profile.settings, profile.lake(), bridge)
    connection = bridge.connect()
    try:
        fresh_table(connection, WARM_TABLE)
        profile.submit(WARM_TABLE, "lake.s.warm", 10)
        [warm] = engine.process_once()
        assert warm.status == "completed", warm.error_message
        fresh_table(connection)
        event_id = profile.submit(TABLE, "lake.s.src", len(rows))
        started = time.perf_counter()
        [result] = engine.process_once()
        seconds = time.perf_counter() - started
        assert result.event_id == event_id
        return seconds, fetch(connection, SELECT.format(TABLE)), profile.event_note(event_id, len(rows))
    finally:
        connection.close()
        bridge.close()


def bridge_script() -> Path:
    """The venv's `bridge` console script, beside the running interpreter."""
    script = Path(sys.executable).parent / "bridge"
    if not script.exists():
        sys.exit(f"no bridge console script at {script}: run the bench with the venv's python (make install)")
    return script


def cold_process_once(profile: DefaultProfile, rows: list[tuple[Any, ...]]) -> Outcome:
    """A new `bridge process-once` process processes the event and exits: spawn to exit."""
    connection = profile.target().connect()
    try:
        fresh_table(connection)
        event_id = profile.submit(TABLE, "lake.s.src", len(rows))
        env = {**os.environ, **profile.env}
        started = time.perf_counter()
        done = subprocess.run([str(bridge_script()), "process-once", "--json"], env=env, capture_output=True,
                              text=True, check=False)
        seconds = time.perf_counter() - started
        note = profile.event_note(event_id, len(rows))
        if done.returncode != 0 and not note:
            note = f"exit {done.returncode}: {' '.join(done.stderr.split())[:200]}"
        return seconds, fetch(connection, SELECT.format(TABLE)), note
    finally:
        connection.close()


# -- the table -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    driver: str  # for a bridge case: the driver `auto` chose
    expected: list[tuple[Any, ...]]
    work: Callable[[], Outcome]
    raw: bool = False
    once: bool = False  # slow, or failing, and there to show why it is not the baseline: one run


def measure(case: Case) -> Result:
    try:
        seconds, got, problem = case.work()
    except Exception as exc:
        return Result(case.name, case.driver, len(case.expected), note="failed: " + " ".join(str(exc).split())[:120])
    wrong, first = mismatches(case.expected, got)
    if problem:  # the event did not end completed with every row
        return Result(case.name, case.driver, len(case.expected), seconds, max(wrong, 1), problem)
    return Result(case.name, case.driver, len(case.expected), seconds, wrong, first)


def best(first: Result, other: Result) -> Result:
    """The faster correct run; a wrong or failed run anywhere makes the case wrong or failed."""
    for result in (first, other):
        if result.seconds is None or result.wrong:
            return result
    return first if (first.seconds or 0) <= (other.seconds or 0) else other


def cases(rows: list[tuple[Any, ...]], drivers: list[str], profile: DefaultProfile, chosen: str) -> list[Case]:
    found: list[Case] = []
    if "pymssql" in drivers:
        few = rows[:10_000]
        found += [
            Case("raw: 100-row VALUES, 1 statement/trip", "pymssql", rows, lambda: raw_pymssql_values(rows, 100),
                 raw=True),
            Case("raw: 1000-row VALUES (bench_write_methods' best)", "pymssql", few,
                 lambda: raw_pymssql_values(few, 1000), raw=True, once=True),
        ]
    if "mssql-python" in drivers:
        found += [
            Case("raw: executemany, Python values", "mssql-python", rows,
                 lambda: raw_mssql_python(rows, as_text=False, declare=False), raw=True, once=True),
            Case("raw: executemany, text + CAST", "mssql-python", rows,
                 lambda: raw_mssql_python(rows, as_text=True, declare=False), raw=True),
            Case("raw: executemany, text + CAST, declared types", "mssql-python", rows,
                 lambda: raw_mssql_python(rows, as_text=True, declare=True), raw=True),
        ]
    found += [
        Case("bridge INSERT event, no driver: (auto), a running worker", chosen, rows,
             lambda: running_worker(profile, rows)),
        Case("bridge INSERT event, no driver: (auto), cold process-once", chosen, rows,
             lambda: cold_process_once(profile, rows)),
    ]
    return found


def rate(result: Result) -> float | None:
    if result.seconds is None or result.wrong:
        return None
    return result.rows / result.seconds


def print_table(results: list[Result], todo: list[Case], rows: int) -> None:
    own_raw: dict[str, float] = {}
    for result, case in zip(results, todo, strict=True):
        speed = rate(result)
        if case.raw and speed is not None and result.rows == rows:  # a partial load is not a baseline
            own_raw[result.driver] = max(own_raw.get(result.driver, 0.0), speed)
    best_raw = max(own_raw.values(), default=None)
    header = (f"| {'driver':<12} | {'case':<58} | {'seconds':>7} | {'rows/s':>8} | {'vs best raw':>11} "
              f"| {'vs own raw':>10} | read back |")
    print(header)
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        speed = rate(r)
        seconds = f"{r.seconds:.2f}" if r.seconds is not None else "-"
        shown = f"{speed:,.0f}" if speed is not None else "-"
        vs_best = f"{speed / best_raw:.2f}x" if speed is not None and best_raw else "-"
        vs_own = f"{speed / own_raw[r.driver]:.2f}x" if speed is not None and r.driver in own_raw else "-"
        if r.seconds is None:
            check = r.note
        elif r.wrong:
            check = f"WRONG: {r.wrong} rows differ" + (f" ({r.note})" if r.note else "")
        else:
            check = "exact" + (f" ({r.note})" if r.note else "")
        print(f"| {r.driver:<12} | {r.case:<58} | {seconds:>7} | {shown:>8} | {vs_best:>11} | {vs_own:>10} | {check} |")
    if best_raw:
        fastest = max(own_raw, key=lambda d: own_raw[d])
        print(f"\nbest raw: {fastest}, {best_raw:,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over every case; the best run of each counts")
    args = parser.parse_args()
    drivers = installed_drivers()
    rows = source_rows(args.rows)
    profile = DefaultProfile(rows)
    choice = profile.target().spec.choice
    chosen = choice.driver if choice is not None else "?"
    todo = cases(rows, drivers, profile, chosen)
    results: dict[str, Result] = {}
    try:
        # Rounds over all cases rather than repeats of one: a drift of the server's state (autovacuum,
        # bloat, another test run on the machine) spreads over every case instead of favouring some.
        for round_number in range(max(1, args.repeat)):
            for case in todo:
                if case.once and round_number:
                    continue
                result = measure(case)
                key = f"{case.driver}|{case.name}"
                results[key] = best(results[key], result) if key in results else result
    finally:
        profile.close()
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"$ python {command}")
    print(f"drivers installed: {', '.join(drivers)}; the profile's target names no driver, and auto chose: "
          f"{choice.describe() if choice is not None else '?'}")
    print(f"{args.rows:,} rows x {len(COLUMNS)} columns (the fidelity matrix's types, ~10% NULLs); every load "
          f"read back and compared; best of {args.repeat} rounds (cases marked once: 1 run)\n")
    ordered = [results[f"{c.driver}|{c.name}"] for c in todo]
    for result in ordered:
        if result.rows < args.rows and result.seconds is not None and not result.wrong:
            result.note = f"{result.rows:,} rows only: it is slow"
    print_table(ordered, todo, args.rows)


if __name__ == "__main__":
    main()
