"""bridge's Spark staging entry point: read the source, write it into the staging table over JDBC.

Runs where Spark runs: as `python -m bridge_cli.spark.job SPEC_FILE` on a local SparkSession, or
as the `bridge-spark-stage` wheel entry point of a Databricks job run (the spec JSON is its one
parameter). It only stages: the worker verifies the stage with the figures printed here and
applies it with the ledger row in one transaction, as it does for every event.

Driver quirks handled here rather than hoped away:
- timestamps go as text with six fractional digits: jTDS sends a JDBC timestamp as old DATETIME,
  rounded to 1/300 s;
- dates go as text: a JDBC date is shifted through the JVM's time zone;
- the stage's order column is numbered 1..N in the source's read order, without a shuffle, from
  per-partition counts (`monotonically_increasing_id` alone leaves gaps).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

from bridge_cli.spark.spec import (
    ERROR_MARKER,
    PARENT_ENV,
    PASSWORD_ENV,
    RESULT_MARKER,
    ROW,
    StageColumn,
    StageFigures,
    StageSpec,
)

_INTEGER_TARGETS = frozenset({"tinyint", "smallint", "int", "bigint", "bit"})
_TIMESTAMP_TEXT = "yyyy-MM-dd HH:mm:ss.SSSSSS"


def base_type(sql_type: str) -> str:
    return sql_type.split("(")[0].split()[0].lower()


def session(spec: StageSpec) -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(f"bridge stage {spec.event_id}")
    if spec.master:
        builder = builder.master(spec.master).config("spark.ui.enabled", "false")
    for key, value in spec.spark_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # Instants are written as UTC wall time, as the single-process path does.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    for mode in ("datetimeRebaseModeInRead", "int96RebaseModeInRead"):
        spark.conf.set(f"spark.sql.parquet.{mode}", "CORRECTED")
    return spark


def read_source(spark: Any, spec: StageSpec) -> Any:
    if spec.parquet is not None:
        return spark.read.parquet(spec.parquet)
    assert spec.table is not None
    return spark.table(spec.table)


def numbered(df: Any) -> Any:
    """The source with ROW = 1..N in read order. A worker's Parquet export carries it already."""
    from pyspark.sql import functions as F

    if ROW in df.columns:
        return df
    # monotonically_increasing_id() is (partition << 33) + position in the partition; the counts
    # per partition turn it into a gapless number. Both passes read the same splits.
    counts = dict(
        df.select(F.spark_partition_id().alias("p")).groupBy("p").count().collect()
    )
    offsets: dict[int, int] = {}
    running = 0
    for partition in sorted(counts):
        offsets[partition] = running
        running += counts[partition]
    if not offsets:
        return df.withColumn(ROW, F.lit(1).cast("long"))
    mapping = F.create_map(*[x for p, o in offsets.items() for x in (F.lit(p), F.lit(o))])
    position = F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1))
    return df.withColumn(ROW, mapping[F.spark_partition_id()] + position + F.lit(1))


def prepared(df: Any, columns: tuple[StageColumn, ...]) -> Any:
    """The stage's columns, named as the target's, with the conversions the JDBC driver needs."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kinds = {f.name.lower(): f.dataType for f in df.schema.fields}
    selected = [F.col(ROW).cast("long").alias(ROW)]
    for column in columns:
        value = F.col(f"`{column.source}`")
        kind = kinds.get(column.source.lower())
        target = base_type(column.type)
        if isinstance(kind, (T.TimestampType, T.TimestampNTZType)):
            if target == "datetimeoffset":
                value = F.date_format(value, _TIMESTAMP_TEXT + " xxx")
            elif target == "date":
                value = F.date_format(value, "yyyy-MM-dd")
            else:
                value = F.date_format(value, _TIMESTAMP_TEXT)
        elif isinstance(kind, T.DateType):
            value = F.date_format(value, "yyyy-MM-dd")
        selected.append(value.alias(column.target))
    return df.select(*selected)


def figures(df: Any, columns: tuple[StageColumn, ...]) -> StageFigures:
    """One aggregate pass: rows, NULLs per column, min/max of integer columns (the stage check)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    integral = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.BooleanType)
    kinds = {f.name: f.dataType for f in df.schema.fields}
    ranged = [
        i for i, c in enumerate(columns)
        if base_type(c.type) in _INTEGER_TARGETS and isinstance(kinds.get(c.target), integral)
    ]
    parts = [F.count(F.lit(1))]
    parts += [F.sum(F.col(f"`{c.target}`").isNull().cast("long")) for c in columns]
    for i in ranged:
        value = F.col(f"`{columns[i].target}`").cast("long")
        parts += [F.min(value), F.max(value)]
    row = df.agg(*parts).collect()[0]
    width = len(columns)
    nulls = tuple(int(v or 0) for v in row[1 : 1 + width])
    ranges = {}
    at = 1 + width
    for i in ranged:
        low, high = row[at], row[at + 1]
        at += 2
        if low is not None:
            ranges[i] = (int(low), int(high))
    return StageFigures(int(row[0]), nulls, ranges)


def jdbc_password(spec: StageSpec, spark: Any) -> str | None:
    if spec.password_secret:
        scope, _, key = spec.password_secret.partition("/")
        try:  # a job's dbutils, serverless included (databricks-sdk comes with the bridge wheel)
            from databricks.sdk.runtime import dbutils
        except ImportError:
            from pyspark.dbutils import DBUtils  # a classic cluster's

            dbutils = DBUtils(spark)
        return str(dbutils.secrets.get(scope=scope, key=key))
    return os.environ.get(PASSWORD_ENV)


def write_stage(df: Any, spec: StageSpec, password: str | None) -> None:
    try:
        partitions = df.rdd.getNumPartitions()
    except Exception:  # serverless and shared clusters have no RDD API: never more writers than asked
        partitions = None
    if partitions is None or partitions > spec.partitions:
        df = df.coalesce(spec.partitions)
    elif partitions < spec.partitions:
        df = df.repartition(spec.partitions)
    writer = (
        df.write.format("jdbc")
        .option("url", spec.jdbc_url)
        .option("driver", spec.jdbc_driver_class)
        .option("dbtable", spec.stage)
        .option("batchsize", str(spec.batch_size))
        .mode("append")
    )
    for key, value in spec.jdbc_properties.items():
        writer = writer.option(key, value)
    if password is not None:
        writer = writer.option("password", password)
    writer.save()


def run(spec: StageSpec, spark: Any) -> StageFigures:
    started = time.monotonic()
    source = numbered(read_source(spark, spec))
    stage_rows = prepared(source, spec.columns)
    counted = figures(stage_rows, spec.columns)
    write_stage(stage_rows, spec, jdbc_password(spec, spark))
    return StageFigures(counted.rows, counted.nulls, counted.ranges, round(time.monotonic() - started, 3))


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """The root cause in one line, with the server's error number and SQLState when JDBC carried
    them (the worker sorts those as its own drivers do), and whether Spark itself says a retry
    cannot help (a missing table)."""
    java = getattr(exc, "java_exception", None)
    if java is not None:  # Py4JJavaError: walk to the root cause, keeping the SQL facts on the way
        cause, code, state = java, None, None
        while cause is not None:
            with contextlib.suppress(Exception):  # not every cause is an SQLException
                code = int(cause.getErrorCode()) or code
                state = str(cause.getSQLState() or "") or state
            deeper = cause.getCause()
            if deeper is None or deeper.equals(cause):
                break
            cause = deeper
        message = " ".join(str(cause.toString()).split())[:1000]
        return {"message": message, "permanent": False, "code": code, "state": state}
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:1000]
    permanent = name in ("AnalysisException", "ParseException")  # e.g. the source table does not exist
    return {"message": f"{name}: {text}", "permanent": permanent, "code": None, "state": None}


def die_with_parent() -> None:
    """A local job is killed with the worker that started it (Linux), kill -9 included: no orphan
    keeps writing to a stage. The JVM follows: it exits when its Python driver's pipe closes."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(parent):  # the worker died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bridge_cli.spark.job SPEC_FILE_OR_JSON", file=sys.stderr)
        return 2
    text = args[0]
    if not text.lstrip().startswith("{"):
        with open(text, encoding="utf-8") as handle:
            text = handle.read()
    spec = StageSpec.from_json(text)
    try:
        spark = session(spec)
        result = run(spec, spark)
    except Exception as exc:
        print(ERROR_MARKER + json.dumps(describe_failure(exc)), flush=True)
        return 1
    print(RESULT_MARKER + result.to_json(), flush=True)
    if spec.master:  # a local session is ours to stop; a cluster's is not
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
