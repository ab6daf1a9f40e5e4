"""The job-side API inside a Spark job: a real local SparkSession, event rows written with
spark.sql(..., args=...) binding. Needs pyspark and Java (make test-databricks installs them)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge_cli import jobs
from bridge_cli.events import Event

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (make test-databricks installs it)")
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")

TABLE = "spark_catalog.events.bridge_events"


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pyspark.sql import SparkSession

    from bridge_cli.lakes.databricks import COLUMN_TYPES

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[1]").appName("bridge-jobs-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.sql.session.timeZone", "America/Bogota")  # not UTC, on purpose
        .getOrCreate()
    )
    session.sql("CREATE DATABASE IF NOT EXISTS events")
    body = ", ".join(f"`{c}` {t}" for c, t in COLUMN_TYPES.items())
    session.sql(f"CREATE TABLE IF NOT EXISTS {TABLE} ({body}) USING parquet")
    jobs.use(spark=session, event_table=TABLE)
    yield session
    jobs.use()
    session.stop()


def test_submit_writes_the_event_with_bound_parameters(spark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    tricky = "o'brien \\ x \"q\" ${HOME}"
    event_id = jobs.sync_update_to_sql("`mi-catalog`.`mi-schema`.datos_actualizados", "dbo.MarketScopeAccess",
                                       ["username", "region"], rows_expected=3, metadata={"note": tricky})
    assert f"[UPDATE] Evento creado: {event_id}" in capsys.readouterr().out
    [row] = spark.sql(f"SELECT operation, source_table, primary_keys, priority, status, metadata, "
                      f"CAST(to_utc_timestamp(created_at, current_timezone()) AS STRING) FROM {TABLE} "
                      f"WHERE event_id = '{event_id}'").collect()
    assert list(row[:5]) == ["UPDATE", "`mi-catalog`.`mi-schema`.datos_actualizados",
                             ["username", "region"], 5, "pending"]
    assert json.loads(row[5]) == {"note": tricky}
    status = jobs.check_event_status(event_id)
    assert status is not None
    assert status["status"] == "pending" and status["rows_expected"] == 3
    # The instant survives the session's time zone (Spark drops trailing zeros of the fraction).
    assert status["created_at"] == datetime.fromisoformat(row[6])


def test_wait_returns_a_finished_event_and_raises_as_the_guide_says(spark: Any) -> None:
    store = jobs._store()
    store.insert_event(Event("done-1", operation="INSERT", target_table="dbo.t", primary_keys=["k"],
                             status="completed", rows_affected=4, rows_expected=4, discrepancy=0))
    result = jobs.wait_for_event("done-1", timeout_seconds=5, poll_interval=1)
    assert (result["status"], result["rows_affected"], result["discrepancy"]) == ("completed", 4, 0)
    pending = jobs.sync_delete_from_sql("dbo.t", ["k"], {"k": [1, 2]})
    with pytest.raises(TimeoutError, match=f"Evento {pending} no se procesó en 0.3s"):
        jobs.wait_for_event(pending, timeout_seconds=0.3, poll_interval=0.1)
    with pytest.raises(ValueError, match="Evento no encontrado: nope"):
        jobs.wait_for_event("nope", timeout_seconds=1, poll_interval=0.1)


def test_bad_requests_are_refused_before_anything_is_written(spark: Any) -> None:
    before = spark.sql(f"SELECT count(*) FROM {TABLE}").collect()[0][0]
    for call in (
        lambda: jobs.sync_insert_to_sql("c.s.t; DROP TABLE x", "dbo.t", ["k"]),
        lambda: jobs.sync_insert_to_sql("c.s.t", "dbo.t", ["k"], priority=0),
        lambda: jobs.sync_delete_from_sql("dbo.t", ["k"], {}),
    ):
        with pytest.raises(Exception) as info:
            call()
        assert type(info.value).__name__ == "ValidationError"
    assert spark.sql(f"SELECT count(*) FROM {TABLE}").collect()[0][0] == before


def test_the_event_table_name_is_validated(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="invalid event_table"):
        jobs.SparkEventTable(object(), "events.bridge_events; DROP TABLE x")
