"""The `spark:` profile section, the JDBC login it derives, and which events go to Spark.

No Spark runs here: these are the decisions made before a run starts (tests/test_spark_job.py runs
the job on a local SparkSession; tests/test_spark_path.py runs whole events against SQL Server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge_cli.config import load_settings
from bridge_cli.errors import ConfigError, PermanentError
from bridge_cli.events import Event, build_job
from bridge_cli.identifiers import TableName, parse_target_table
from bridge_cli.lakes import SourceColumn
from bridge_cli.planning import plan_job
from bridge_cli.spark import SparkStager
from bridge_cli.spark.route import choose_route
from bridge_cli.spark.settings import spark_settings
from bridge_cli.targets import TargetColumn, TargetTable

TARGET = """
    target:
      kind: sqlserver
      host: sql.example.com
      port: 1433
      database: sales
      user: bridge
      password: hunter22
      encrypt: optional
      trust_server_certificate: true
"""


def settings_with(tmp_path: Path, spark: str, extra: str = "", target: str = TARGET) -> Any:
    text = "profiles:\n  p:\n    lake: {kind: duckdb}\n" + target + extra + spark
    path = tmp_path / "bridge.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(config=str(path), env={"BRIDGE_HOME": str(tmp_path / "home")})


def jar(tmp_path: Path) -> str:
    path = tmp_path / "jtds-1.3.1.jar"
    path.write_bytes(b"PK")
    return str(path)


def test_local_spark_with_jtds_signs_in_as_the_target_does_without_the_password_in_sight(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, f"    spark:\n      kind: local\n      jars: [{jar(tmp_path)}]\n")
    config = spark_settings(settings)
    assert config.jdbc.driver == "jtds"
    assert config.jdbc.url == "jdbc:jtds:sqlserver://sql.example.com:1433/sales"
    assert config.jdbc.properties == {"user": "bridge", "ssl": "request"}  # encrypt: optional
    assert config.master == "local[2]" and config.partitions == 2
    assert "hunter22" not in repr(config) and "hunter22" not in str(config.jdbc.properties)


def test_the_microsoft_driver_gets_encrypt_and_trust_and_extra_properties(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "    spark:\n      kind: local\n      jdbc_driver: microsoft\n"
                                       "      partitions: 4\n      jdbc_properties: {applicationName: bridge}\n")
    config = spark_settings(settings)
    assert config.jdbc.url == "jdbc:sqlserver://sql.example.com:1433;databaseName=sales"
    assert config.jdbc.properties == {"user": "bridge", "encrypt": "false", "trustServerCertificate": "true",
                                      "applicationName": "bridge"}
    assert config.master == "local[4]"


@pytest.mark.parametrize("spark, message", [
    ("    spark:\n      kind: local\n      jars: [/no/such.jar]\n", "jars: /no/such.jar is not a file"),
    ("    spark:\n      kind: local\n      partitons: 2\n", "did you mean 'partitions'"),
    ("    spark:\n      kind: yarn\n", "'yarn' is not one of local, databricks"),
    ("    spark:\n      kind: local\n      partitions: 0\n", "partitions: must be at least 1"),
    ("    spark:\n      kind: local\n      jdbc_driver: odbc\n", "'odbc' is not one of microsoft, jtds"),
    ("    spark:\n      kind: local\n      jdbc_properties: {password: x}\n", "the password comes from the target"),
    ("    spark:\n      kind: databricks\n      wheel: /Volumes/w.whl\n      password_secret: s/k\n",
     "exactly one of cluster_id, serverless: true, or job_id"),
    ("    spark:\n      kind: databricks\n      cluster_id: c\n      wheel: /Volumes/w.whl\n", "password_secret"),
    ("    spark:\n      kind: databricks\n      cluster_id: c\n      password_secret: s/k\n", "wheel"),
])
def test_a_wrong_spark_section_is_one_clear_error(tmp_path: Path, spark: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        spark_settings(settings_with(tmp_path, spark))
    assert message in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_a_hostile_host_never_reaches_the_jdbc_url(tmp_path: Path) -> None:
    target = TARGET.replace("host: sql.example.com", "host: 'sql.example.com;integratedSecurity=true'")
    with pytest.raises(ConfigError, match="cannot go in a JDBC URL"):
        spark_settings(settings_with(tmp_path, "    spark:\n      kind: local\n", target=target))


def test_spark_staging_needs_a_sql_server_target(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "    spark:\n      kind: local\n", target="    target: {kind: sqlite}\n")
    with pytest.raises(ConfigError, match="writes to SQL Server; this profile's target is sqlite"):
        spark_settings(settings)


def test_an_unknown_engine_in_metadata_is_noted_never_a_reason_to_fail(tmp_path: Path) -> None:
    """Metadata is the jobs' own free JSON: a value bridge does not know is ignored, saying so."""
    settings = settings_with(tmp_path, "    spark:\n      kind: local\n      jdbc_driver: jtds\n",
                             extra="    spark_min_rows: 10\n")
    job, plan = plan_for("INSERT", '{"engine": "sprak"}')
    small = choose_route(job, plan, settings, SparkStager(settings), CountingLake(5))  # type: ignore[arg-type]
    assert not small.spark and small.note == "metadata engine 'sprak' is not one of spark, worker: ignored"
    big = choose_route(job, plan, settings, SparkStager(settings), CountingLake(50))  # type: ignore[arg-type]
    assert big.spark and big.note == small.note  # the size rule still applies


# -- which events go to Spark ------------------------------------------------------------------
class CountingLake:
    """Only count_rows is asked by the routing (a stand-in for the lake's one query)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.asked: list[TableName] = []

    def count_rows(self, table: TableName) -> int:
        self.asked.append(table)
        return self.rows


def plan_for(operation: str, metadata: str | None, column_type: str = "nvarchar(50)") -> tuple[Any, Any]:
    columns = (TargetColumn("id", "int"), TargetColumn("name", column_type))
    table = TargetTable(parse_target_table("dbo.t"), columns)
    event = Event(event_id="e1", operation=operation, source_table="a.b.c", target_table="dbo.t",
                  primary_keys=["id"], metadata=metadata,
                  filter_conditions='{"id": 1}' if operation == "DELETE" else None)
    job = build_job(event)
    source = None if operation == "DELETE" else [SourceColumn("id", "INTEGER"), SourceColumn("name", "VARCHAR")]
    return job, plan_job(job, table, source, 100)


@pytest.mark.parametrize("operation, metadata, min_rows, rows, spark", [
    ("INSERT", '{"engine": "spark"}', 0, 5, True),          # asked for
    ("UPDATE", '{"engine": "spark"}', 0, 5, True),
    ("INSERT", None, 1000, 1000, True),                     # big enough
    ("INSERT", None, 1000, 999, False),                     # not big enough
    ("INSERT", None, 0, 10**9, False),                      # spark_min_rows 0: only when asked
    ("INSERT", '{"engine": "worker"}', 1000, 10**9, False),  # the event says no
    ("DELETE", '{"engine": "spark"}', 1, 10**9, False),     # DELETE is always the worker's
])
def test_which_events_stage_on_spark(
    tmp_path: Path, operation: str, metadata: str | None, min_rows: int, rows: int, spark: bool
) -> None:
    settings = settings_with(tmp_path, "    spark:\n      kind: local\n      jdbc_driver: jtds\n",
                             extra=f"    spark_min_rows: {min_rows}\n")
    job, plan = plan_for(operation, metadata)
    lake = CountingLake(rows)
    route = choose_route(job, plan, settings, SparkStager(settings), lake)  # type: ignore[arg-type]
    assert route.spark is spark
    assert route.note is None
    # The source is counted only when its size decides
    assert bool(lake.asked) == (metadata is None and min_rows > 0 and operation != "DELETE")


def test_an_event_asking_for_spark_on_a_profile_without_it_is_staged_by_the_worker_saying_so(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "")
    job, plan = plan_for("INSERT", '{"engine": "spark"}')
    route = choose_route(job, plan, settings, None, CountingLake(5))  # type: ignore[arg-type]
    assert not route.spark
    assert route.note is not None and "has no spark: section" in route.note


def test_a_max_column_is_refused_by_jtds_and_the_event_staged_by_the_worker_saying_why(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "    spark:\n      kind: local\n      jdbc_driver: jtds\n")
    job, plan = plan_for("INSERT", '{"engine": "spark"}', column_type="nvarchar(max)")
    route = choose_route(job, plan, settings, SparkStager(settings), CountingLake(5))  # type: ignore[arg-type]
    assert not route.spark
    assert route.note is not None and "jTDS" in route.note and "nvarchar(max)" in route.note


def test_a_max_column_is_no_obstacle_for_the_microsoft_driver(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "    spark:\n      kind: local\n      jdbc_driver: microsoft\n")
    job, plan = plan_for("INSERT", '{"engine": "spark"}', column_type="nvarchar(max)")
    assert choose_route(job, plan, settings, SparkStager(settings), CountingLake(5)).spark  # type: ignore[arg-type]


def test_counting_a_missing_source_fails_the_event_clearly(tmp_path: Path) -> None:
    class MissingLake:
        def count_rows(self, table: TableName) -> int:
            raise PermanentError(f"source table {table} does not exist")

    settings = settings_with(tmp_path, "    spark:\n      kind: local\n      jdbc_driver: jtds\n",
                             extra="    spark_min_rows: 10\n")
    job, plan = plan_for("INSERT", None)
    with pytest.raises(PermanentError, match="a.b.c does not exist"):
        choose_route(job, plan, settings, SparkStager(settings), MissingLake())  # type: ignore[arg-type]


def test_config_show_lists_the_spark_section_with_where_each_value_came_from(tmp_path: Path) -> None:
    from bridge_cli.config import describe_settings

    settings_with(tmp_path, "    spark:\n      kind: local\n      partitions: 3\n", extra="    spark_min_rows: 500\n")
    _, sources = describe_settings(config=str(tmp_path / "bridge.yaml"), env={"BRIDGE_HOME": str(tmp_path)})
    shown = {s.key: (s.value, s.source) for s in sources}
    path = tmp_path / "bridge.yaml"
    assert shown["spark_min_rows"] == (500, f"{path}:14")
    assert shown["spark.kind"] == ("local", f"{path}:16")
    assert shown["spark.partitions"] == (3, f"{path}:17")
    assert shown["spark.master"] == ("local[3]", "default")  # local[partitions]
    assert shown["target.password"][0] == "***"


def test_every_option_the_spark_section_is_read_for_is_a_known_option() -> None:
    """spark/settings.py reads config.get("x") / _int(config, "x"), jdbc.py spark.get("x"): every key
    must be in SPARK_OPTIONS for some kind, or a profile holding it would be refused as a typo."""
    import re

    from bridge_cli.config import SPARK_OPTIONS

    root = Path(__file__).resolve().parent.parent / "bridge_cli" / "spark"
    reads = re.compile(r'(?:config|spark)(?:\.get\(|, )"([a-z_]+)"')
    found = {key for name in ("settings.py", "jdbc.py") for key in reads.findall((root / name).read_text())}
    known = set().union(*SPARK_OPTIONS.values())
    assert {"partitions", "jdbc_driver", "cluster_id", "password_secret"} <= found
    assert found <= known, found - known
