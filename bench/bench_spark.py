"""A huge INSERT event, in one run against one server: the worker's own single-process path, then
the Spark staging path on a local SparkSession with 1 and with 2 partitions (JDBC writers).

Every case is a whole event through the engine (DuckDB source -> claim -> stage -> check -> apply
with the ledger row -> record), on a worker that has processed one small event before. Every
load is read back and compared with the source: fast and wrong is shown as WRONG.

    BRIDGE_TEST_MSSQL_URL='mssql://user:pass@127.0.0.1:1433/db[?encrypt=optional&...]' \\
        python bench/bench_spark.py [--rows 1000000] [--jar /usr/share/java/jtds-1.3.1.jar]

Needs pyspark (pip install -e '.[spark]'), Java, and a JDBC driver jar (Debian: libjtds-java).
"vs worker" is rows/s against the single-process event of the same run: the baseline is bridge's
own best path for one process (its default write method, staged while the next batch is read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_write_methods import bridge_event, mismatches, source_rows  # noqa: E402

from bridge_cli.config import AdapterConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--jar", default="/usr/share/java/jtds-1.3.1.jar", help="the JDBC driver jar")
    parser.add_argument("--driver", default="pymssql", help="the worker's SQL Server driver")
    args = parser.parse_args()
    if not Path(args.jar).is_file():
        sys.exit(f"{args.jar}: no such JDBC driver jar (Debian: apt-get install libjtds-java)")
    rows = source_rows(args.rows)
    cases: list[tuple[str, AdapterConfig | None]] = [("worker, single process", None)]
    for partitions in (1, 2):
        spark = AdapterConfig("local", {"jars": [args.jar], "partitions": partitions}, source="bench: spark")
        cases.append((f"local Spark, {partitions} partition{'s' if partitions > 1 else ''}", spark))
    results: list[tuple[str, float, str, int]] = []
    for name, spark in cases:
        print(f"running: {name} ...", file=sys.stderr, flush=True)
        seconds, got, status = bridge_event(rows, args.driver, warm=True, spark=spark)
        results.append((name, seconds, status, mismatches(rows, got)))
    base = args.rows / results[0][1] if results[0][3] == 0 else None
    print(f"\n{args.rows:,} rows, INSERT event, {args.driver} worker; every load read back and compared\n")
    print("| case | seconds | rows/s | vs worker | read back |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, seconds, status, wrong in results:
        rate = args.rows / seconds
        ratio = f"{rate / base:.2f}x" if base and not wrong else "-"
        check = "exact" if not wrong else f"WRONG: {wrong:,} rows differ"
        print(f"| {name} | {seconds:.2f} | {rate:,.0f} | {ratio} | {check} ({status}) |")


if __name__ == "__main__":
    main()
