"""What a Spark staging run is asked to do, and what it answers: plain JSON, standard library only.

The worker writes a `StageSpec`; bridge's staging entry point (`bridge_cli.spark.job`) reads it on
a local SparkSession or on a Databricks cluster, loads the source into the staging table over JDBC,
and prints one `RESULT_MARKER` line (the figures the stage check compares) or one `ERROR_MARKER`
line. No secret is ever in a spec: the JDBC password travels in an environment variable (local) or
is read from a Databricks secret scope by the job itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

RESULT_MARKER = "BRIDGE_STAGE_RESULT "
ERROR_MARKER = "BRIDGE_STAGE_ERROR "
PASSWORD_ENV = "BRIDGE_SPARK_JDBC_PASSWORD"  # the local job's JDBC password (never in argv)
PARENT_ENV = "BRIDGE_SPARK_PARENT_PID"  # a local job dies with this process (job.die_with_parent)
ROW = "__bridge_row"  # the stage's order column (tsql.ROW)


@dataclass(frozen=True)
class StageColumn:
    source: str  # the source column's name
    target: str  # the stage (and target) column it feeds
    type: str    # the target column's declared T-SQL type, e.g. "datetime2(7)"


@dataclass(frozen=True)
class StageSpec:
    event_id: str
    columns: tuple[StageColumn, ...]
    stage: str                 # the staging table, quoted T-SQL: [schema].[bridge_stage_…]
    jdbc_url: str
    jdbc_driver_class: str
    jdbc_properties: dict[str, str]  # login options and user; never the password
    partitions: int            # JDBC connections writing at once
    batch_size: int            # rows per JDBC batch
    table: str | None = None   # a lake table the job reads natively (spark.table), or
    parquet: str | None = None  # a folder of Parquet files exported by the worker (local kind)
    master: str | None = None   # local kind: the SparkSession's master; None on a cluster
    spark_conf: dict[str, str] = field(default_factory=dict)
    password_secret: str | None = None  # databricks kind: "scope/key" of the JDBC password

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StageSpec:
        raw: dict[str, Any] = json.loads(text)
        raw["columns"] = tuple(StageColumn(**c) for c in raw["columns"])
        return cls(**raw)


@dataclass(frozen=True)
class StageFigures:
    """What the job sent, for the stage check: rows, NULLs per column, and (min, max) of the
    integer columns it could range, by column index."""

    rows: int
    nulls: tuple[int, ...]
    ranges: dict[int, tuple[int, int]]
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "nulls": list(self.nulls),
                           "ranges": {str(i): list(r) for i, r in self.ranges.items()},
                           "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> StageFigures:
        raw = json.loads(text)
        ranges = {int(i): (int(r[0]), int(r[1])) for i, r in raw["ranges"].items()}
        return cls(int(raw["rows"]), tuple(int(n) for n in raw["nulls"]), ranges, float(raw.get("seconds", 0)))


@dataclass(frozen=True)
class StageFailure:
    message: str
    permanent: bool  # the job's own judgement: a missing table, a query Spark cannot run
    code: int | None = None   # the server's error number, when SQL Server (through JDBC) refused
    state: str | None = None  # the JDBC SQLState


def parse_output(text: str) -> StageFigures | StageFailure | None:
    """The job's answer from its standard output (or a Databricks run's logs): the last marker
    line; None when it printed none (it died before answering)."""
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARKER):
            return StageFigures.from_json(line[len(RESULT_MARKER):])
        if line.startswith(ERROR_MARKER):
            raw = json.loads(line[len(ERROR_MARKER):])
            return StageFailure(str(raw["message"]), bool(raw["permanent"]), raw.get("code") or None,
                                raw.get("state") or None)
    return None
