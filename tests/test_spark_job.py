"""bridge's Spark staging entry point on a real local SparkSession: numbering, conversions, figures.

The JDBC write itself needs SQL Server (tests/test_spark_path.py, with BRIDGE_TEST_MSSQL_URL); what
is checked here is everything the job decides before a row leaves Spark.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.spark import is_permanent, job
from bridge_cli.spark.local import export_parquet
from bridge_cli.spark.spec import ROW, StageColumn, StageFailure, StageFigures, parse_output

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyspark") is None or shutil.which("java") is None,
    reason="pyspark or Java is not installed: the Spark job tests need a local SparkSession",
)


@pytest.fixture(scope="module")
def spark() -> Any:
    from pyspark.sql import SparkSession

    # The Python workers must be this interpreter (the `python3` on PATH may be another minor version,
    # which PySpark refuses), as bridge's own local Spark path sets PYSPARK_PYTHON.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    yield session
    session.stop()


def test_rows_are_numbered_one_to_n_in_read_order_across_partitions(spark: Any) -> None:
    from pyspark.sql import functions as F

    df = spark.range(0, 1000, 1, numPartitions=4).withColumn("v", F.col("id") * 3)
    numbered = job.numbered(df)
    rows = numbered.orderBy(ROW).collect()
    assert [r[ROW] for r in rows] == list(range(1, 1001))
    # 1..N follows the source's own order: partition by partition, row by row
    assert [r["id"] for r in rows] == list(range(1000))


def test_an_empty_source_numbers_nothing(spark: Any) -> None:
    df = spark.range(0, 0)
    assert job.numbered(df).count() == 0


def test_a_source_already_numbered_keeps_its_numbers(spark: Any) -> None:
    df = spark.createDataFrame([(7, "a"), (8, "b")], [ROW, "x"])
    assert [r[ROW] for r in job.numbered(df).collect()] == [7, 8]


def test_timestamps_and_dates_go_as_text_that_keeps_microseconds(spark: Any) -> None:
    from pyspark.sql import types as T

    schema = T.StructType([
        T.StructField(ROW, T.LongType()), T.StructField("ts", T.TimestampType()),
        T.StructField("ntz", T.TimestampNTZType()), T.StructField("d", T.DateType()),
        T.StructField("tso", T.TimestampType()), T.StructField("dec", T.DecimalType(38, 10)),
    ])
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
    df = spark.createDataFrame(
        [(1, when, dt.datetime(1, 1, 1, 0, 0, 0, 1), dt.date(9999, 12, 31), when, Decimal("-0.0000000001")),
         (2, None, None, None, None, None)], schema)
    columns = (StageColumn("ts", "ts", "datetime2(7)"), StageColumn("ntz", "ntz", "datetime2(7)"),
               StageColumn("d", "d", "date"), StageColumn("tso", "TSO", "datetimeoffset(7)"),
               StageColumn("dec", "dec", "decimal(38,10)"))
    out = job.prepared(df, columns).orderBy(ROW).collect()
    assert out[0]["ts"] == "2026-01-02 03:04:05.123456"
    assert out[0]["ntz"] == "0001-01-01 00:00:00.000001"
    assert out[0]["d"] == "9999-12-31"
    assert out[0]["TSO"] == "2026-01-02 03:04:05.123456 +00:00"  # the target's column name
    assert out[0]["dec"] == Decimal("-0.0000000001")
    assert [out[1][c] for c in ("ts", "ntz", "d", "TSO", "dec")] == [None] * 5


def test_figures_count_rows_nulls_and_integer_ranges(spark: Any) -> None:
    df = spark.createDataFrame([(1, 5, "a", True), (2, None, None, False), (3, -9, "c", None)],
                               [ROW, "k", "s", "b"])
    columns = (StageColumn("k", "k", "int"), StageColumn("s", "s", "nvarchar(10)"), StageColumn("b", "b", "bit"))
    figures = job.figures(job.prepared(df, columns), columns)
    assert figures.rows == 3
    assert figures.nulls == (1, 1, 1)
    assert figures.ranges == {0: (-9, 5), 2: (0, 1)}  # text is not ranged


def test_an_integer_source_into_a_text_column_is_not_ranged(spark: Any) -> None:
    df = spark.createDataFrame([(1, 5)], [ROW, "k"])
    columns = (StageColumn("k", "k", "nvarchar(10)"),)
    assert job.figures(job.prepared(df, columns), columns).ranges == {}


def test_the_workers_parquet_export_reads_back_in_spark_numbered_with_time_as_text(
    spark: Any, tmp_path: Path
) -> None:
    import pyarrow as pa

    batch = pa.record_batch([pa.array([1, 2, None]), pa.array([dt.time(13, 14, 15, 123456), None, dt.time(0, 0)])],
                            ["k", "t"])
    seen: list[int] = []
    rows = export_parquet([batch, batch], tmp_path / "src", seen.append)
    assert rows == 6 and seen == [3, 6]
    df = spark.read.parquet(str(tmp_path / "src"))
    got = [tuple(r) for r in job.numbered(df).orderBy(ROW).collect()]
    assert got[:3] == [(1, 1, "13:14:15.123456"), (2, 2, None), (3, None, "00:00:00.000000")]
    assert [g[0] for g in got] == [1, 2, 3, 4, 5, 6]


def test_a_missing_source_table_is_a_permanent_failure_in_one_line(spark: Any) -> None:
    with pytest.raises(Exception) as caught:
        spark.table("`no_such_catalog`.`x`.`y`").collect()
    failure = job.describe_failure(caught.value)
    assert failure["permanent"] and failure["code"] is None
    assert "\n" not in failure["message"] and "no_such_catalog" in failure["message"].lower()


def test_the_answer_is_the_last_marker_line_among_log_lines() -> None:
    figures = StageFigures(3, (0, 1), {0: (1, 9)}, 1.5)
    text = "INFO starting\n" + "BRIDGE_STAGE_RESULT " + figures.to_json() + "\nINFO stopped\n"
    assert parse_output(text) == figures
    failed = parse_output('noise\nBRIDGE_STAGE_ERROR {"message": "boom", "permanent": false}\n')
    assert failed == StageFailure("boom", False)
    assert parse_output("a job that died before answering\n") is None


@pytest.mark.parametrize("failure, permanent", [
    (StageFailure("String or binary data would be truncated", False, 8152, "22001"), True),
    (StageFailure("Transaction was deadlocked", False, 1205, "40001"), False),
    (StageFailure("column is of type datetimeoffset", False, 33557097, "S1000"), True),  # Babelfish's number
    (StageFailure("canceling statement due to lock timeout", False, 33557097, "S1000"), False),
    (StageFailure("I/O Error: Connection reset", False, None, "08S01"), False),
    (StageFailure("AnalysisException: table not found", True), True),
    (StageFailure("Py4JError: the JVM went away", False), False),
])
def test_a_failed_run_is_sorted_as_the_workers_own_drivers_sort_server_errors(
    failure: StageFailure, permanent: bool
) -> None:
    assert is_permanent(failure) is permanent
