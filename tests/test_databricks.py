"""The Databricks lake against a SQL warehouse through the real connector (the local stand-in, or
a workspace: tests/databricks_env.py), plus unit tests that pin the SQL sent where the stand-in
cannot show Databricks' behaviour."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bridge_cli import jobs
from bridge_cli.config import AdapterConfig, load_settings
from bridge_cli.errors import PermanentError, TransientError
from bridge_cli.lakes.databricks import DatabricksLake, LostRace, short_message, sort_error
from tests.backends import Col, DatabricksPair
from tests.databricks_env import ENV, NO_WAREHOUSE
from tests.helpers import submit

needs_databricks = pytest.mark.skipif(ENV is None, reason=NO_WAREHOUSE)
USERS = "dbo.MarketScopeAccess"


@pytest.fixture
def dbx(bridge_home: Path) -> Any:
    pair = DatabricksPair(bridge_home)
    yield pair
    pair.close()


# -- against the warehouse ---------------------------------------------------------------------
@needs_databricks
def test_two_workers_race_for_one_event_and_exactly_one_wins(dbx: DatabricksPair) -> None:
    event = submit(dbx.lake, "delete", USERS, filter_conditions={"username": "x"})
    engines = [dbx.engine(worker_id=f"w{i}") for i in range(2)]
    for engine in engines:  # separate lakes: separate connections, as two processes would have
        engine.lake = DatabricksLake(dbx.settings)
    barrier = threading.Barrier(2)
    won: list[Any] = [None, None]

    def claim(i: int) -> None:
        barrier.wait()
        won[i] = engines[i].claim_next_event()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [w for w in won if w is not None]
    assert len(winners) == 1
    stored = dbx.lake.get_event(event.event_id)
    assert (stored.status, stored.worker_id, stored.claim_token) == (
        "processing", winners[0].worker_id, winners[0].claim_token)
    assert stored.attempts == 1


@needs_databricks
def test_values_with_quotes_backslashes_and_arrays_travel_as_parameters(dbx: DatabricksPair) -> None:
    tricky = "o'brien \\ back\\slash \"dq\" :colon ? -- x /* y */ ${HOME} é 日本\nline"
    event = submit(dbx.lake, "delete", "`mi-esquema`.t", primary_keys=["username", "is_admin"],
                   filter_conditions={"username": tricky, "is_admin": [1, None]}, metadata={"note": tricky})
    stored = dbx.lake.get_event(event.event_id)
    assert stored.primary_keys == ["username", "is_admin"]
    assert json.loads(stored.filter_conditions) == {"username": tricky, "is_admin": [1, None]}
    assert json.loads(stored.metadata) == {"note": tricky}
    assert stored.target_table == "`mi-esquema`.t"
    assert dbx.lake.get_event("x' OR '1'='1") is None


@needs_databricks
def test_a_large_source_is_read_completely_in_bounded_batches(dbx: DatabricksPair) -> None:
    import pyarrow as pa

    rows = 250_000
    dbx.run(f"CREATE OR REPLACE TABLE {dbx.source_table('mi-catalog.mi-schema.grande')} USING DELTA AS "
            "SELECT id, concat('user-', id, repeat('x', 200)) AS username FROM range(250000)")
    lake = DatabricksLake(dataclasses.replace(dbx.settings, batch_rows=10_000))
    from bridge_cli.identifiers import parse_source_table

    table = parse_source_table(dbx.source("mi-catalog.mi-schema.grande"))
    columns = [c.name for c in lake.source_columns(table)]
    seen = 0
    total = 0
    biggest = 0
    peak = 0
    baseline = pa.total_allocated_bytes()
    for batch in lake.read_source(table, columns, 10_000):
        seen += batch.num_rows
        total += sum(batch.column(0).to_pylist())
        biggest = max(biggest, batch.num_rows)
        peak = max(peak, pa.total_allocated_bytes() - baseline)
    assert seen == rows
    assert total == rows * (rows - 1) // 2  # every id exactly once
    assert biggest <= 10_000
    # The whole source is ~52 MB as Arrow; what is held at once stays a few batches' worth.
    assert peak < 20 * 1024 * 1024, f"peak Arrow allocation {peak} bytes"

    # And end to end through the engine into the target.
    dbx.create_target("dbo.grande", [Col("id", "int", pk=True), Col("username", "text")])
    dbx.reconfigure(batch_rows=10_000)
    event = submit(dbx.lake, "insert", "dbo.grande", source_table="mi-catalog.mi-schema.grande",
                   primary_keys=["id"], rows_expected=rows)
    [result] = dbx.engine().process_once()
    assert result.status == "completed", result.error_message
    stored = dbx.lake.get_event(event.event_id)
    assert (stored.rows_affected, stored.discrepancy) == (rows, 0)
    assert dbx.target_sql("dbo", "SELECT count(*), count(DISTINCT id) FROM grande") == [(rows, rows)]


@needs_databricks
def test_timestamps_arrive_as_utc_wall_time(dbx: DatabricksPair) -> None:
    horas = dbx.source_table("mi-catalog.mi-schema.horas")
    dbx.run(f"CREATE OR REPLACE TABLE {horas} (id BIGINT, seen TIMESTAMP) USING DELTA")
    dbx.run(f"INSERT INTO {horas} VALUES (1, TIMESTAMP '2026-03-01 10:00:00.123456+02:00')")
    dbx.create_target("dbo.horas", [Col("id", "int", pk=True), Col("seen", "timestamp")])
    submit(dbx.lake, "insert", "dbo.horas", source_table="mi-catalog.mi-schema.horas", primary_keys=["id"])
    [result] = dbx.engine().process_once()
    assert result.status == "completed", result.error_message
    assert dbx.target_rows("dbo.horas", ["seen"], "id") == [("2026-03-01 08:00:00.123456",)]


@needs_databricks
def test_missing_source_column_or_table_is_a_clear_permanent_error(dbx: DatabricksPair) -> None:
    from bridge_cli.identifiers import parse_source_table

    table = parse_source_table(dbx.source("mi-catalog.nope.nada"))
    with pytest.raises(PermanentError, match=f"source table {re.escape(str(table))} does not exist"):
        dbx.lake.source_columns(table)


@needs_databricks
def test_job_side_api_submits_checks_and_waits(dbx: DatabricksPair, capsys: pytest.CaptureFixture[str]) -> None:
    dbx.create_target(USERS, [Col("id", "int", identity=True), Col("username", "text", unique=True),
                              Col("is_admin", "bool")])
    dbx.create_source("mi-catalog.mi-schema.datos_nuevos", {"username": "text", "is_admin": "bool"},
                      [("ana", True), ("bea", False)])
    jobs.use(lake=dbx.lake)
    try:
        event_id = jobs.sync_insert_to_sql(dbx.source("`mi-catalog`.`mi-schema`.datos_nuevos"), USERS,
                                           ["username"], rows_expected=2)
        assert event_id.startswith("insert-")
        assert f"[INSERT] Evento creado: {event_id}" in capsys.readouterr().out
        assert jobs.check_event_status(event_id)["status"] == "pending"
        assert jobs.check_event_status("nope") is None
        with pytest.raises(TimeoutError, match="no se procesó"):
            jobs.wait_for_event(event_id, timeout_seconds=0.5, poll_interval=0.2)
        worker = threading.Thread(target=lambda: dbx.engine().process_once())
        worker.start()
        result = jobs.wait_for_event(event_id, timeout_seconds=120, poll_interval=1)
        worker.join(timeout=120)
        assert (result["status"], result["rows_affected"], result["discrepancy"]) == ("completed", 2, 0)
        with pytest.raises(ValueError, match="Evento no encontrado: nope"):
            jobs.wait_for_event("nope", timeout_seconds=1, poll_interval=0.5)
        delete_id = jobs.sync_delete_from_sql(USERS, ["username"], {"username": "ana"})
        assert jobs.check_event_status(delete_id)["operation"] == "DELETE"
        with pytest.raises(Exception, match="must appear in the filter"):
            jobs.sync_delete_from_sql(USERS, ["is_admin"], {"username": "ana"})
    finally:
        jobs.use()


@needs_databricks
def test_the_bridge_command_works_against_the_warehouse(dbx: DatabricksPair, tmp_path: Path) -> None:
    assert ENV is not None
    options = ENV.lake_options()
    config = tmp_path / "bridge.yaml"
    port = f"      port: {options['port']}\n" if "port" in options else ""
    config.write_text(
        "profiles:\n  dbx:\n    lake:\n      kind: databricks\n"
        f"      server_hostname: {options['server_hostname']}\n      http_path: {options['http_path']}\n{port}"
        "      token: ${DBX_TEST_TOKEN}\n"
        f"      event_table: \"{dbx.lake.event_table_name}\"\n"
        f"    target: {{kind: sqlite, path: \"{dbx.target.root}\"}}\n",
        encoding="utf-8",
    )
    dbx.create_target(USERS, [Col("username", "text", pk=True), Col("is_admin", "bool")])
    dbx.create_source("mi-catalog.mi-schema.cambios", {"username": "text", "is_admin": "bool"}, [("ana", True)])
    env = ENV.subprocess_env({**os.environ, "DBX_TEST_TOKEN": options["token"],
                              "BRIDGE_CONFIG": str(config)})

    def bridge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge_cli", *args], env=env, capture_output=True,
                              text=True, timeout=300)

    submitted = bridge("submit", "insert", "--source", dbx.source("mi-catalog.mi-schema.cambios"), "--target", USERS,
                       "--pk", "username", "-q")
    assert submitted.returncode == 0, submitted.stderr
    event_id = submitted.stdout.strip()
    ran = bridge("process-once", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)[0]["status"] == "completed"
    waited = bridge("wait", event_id, "--timeout", "30", "--json")
    assert waited.returncode == 0 and json.loads(waited.stdout)["rows_affected"] == 1
    assert dbx.target_rows(USERS, ["username", "is_admin"], "username") == [("ana", 1)]
    assert options["token"] not in submitted.stderr + ran.stderr + waited.stderr


# -- unit tests: the SQL sent, and error sorting (run everywhere) ----------------------------
class RecordingConnection:
    """A stand-in for a connector connection that records SQL (named: not a real server)."""

    def __init__(self, results: list[list[Any]] | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any] | None]] = []
        self.results = results or []

    def cursor(self, **_: Any) -> RecordingConnection:
        return self

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.sent.append((sql, params))

    def fetchall(self) -> list[Any]:
        return self.results.pop(0) if self.results else []

    def close(self) -> None:
        pass


def recording_lake(results: list[list[Any]] | None = None) -> tuple[DatabricksLake, RecordingConnection]:
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/x"})
    config = AdapterConfig("databricks", {"server_hostname": "adb-1.azuredatabricks.net",
                                          "http_path": "/sql/1.0/warehouses/abc", "token": "dapi-secret"})
    lake = DatabricksLake(dataclasses.replace(settings, lake=config))
    connection = RecordingConnection(results)
    lake._local.connection = connection
    return lake, connection


def test_init_creates_a_delta_table_with_deletion_vectors_recording_fake() -> None:
    lake, connection = recording_lake()
    connection.execute = lambda sql, params=None: (  # type: ignore[method-assign]
        connection.sent.append((sql, params)),
        (_ for _ in ()).throw(Exception("[TABLE_OR_VIEW_NOT_FOUND] no table"))
        if sql.startswith("DESCRIBE") else None,
    )
    done = lake.init_event_table(upgrade=False)
    assert done[0] == f"created event table {lake.event_table_name}"
    assert done[1].startswith("created workers table")  # the heartbeats' table beside it
    schema, table = (sql for sql, _ in connection.sent[1:3])
    assert schema == "CREATE SCHEMA IF NOT EXISTS `000-sql-databricks-bridge`.`events`"
    assert table.startswith("CREATE TABLE IF NOT EXISTS `000-sql-databricks-bridge`.`events`.`bridge_events` (")
    assert "`primary_keys` ARRAY<STRING>" in table and "`claim_token` STRING" in table
    assert table.endswith("USING DELTA TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    assert "PARTITIONED" not in table and "IDENTITY" not in table


def test_upgrade_adds_only_missing_lifecycle_columns_recording_fake() -> None:
    seed_rows = [(c, "string", None) for c in ("event_id", "operation", "status", "attempts")]
    lake, connection = recording_lake([seed_rows])
    done = lake.init_event_table(upgrade=True)
    assert "added column attempts" not in done and "added column claim_token" in done
    sql = next(sql for sql, _ in connection.sent if sql.startswith("ALTER TABLE"))
    assert sql.startswith("ALTER TABLE `000-sql-databricks-bridge`.`events`.`bridge_events` ADD COLUMNS (")
    assert "`attempts`" not in sql and "`lease_expires_at` TIMESTAMP" in sql


def test_conditional_update_binds_values_and_confirms_by_reading_back_recording_fake() -> None:
    lake, connection = recording_lake([[], []])  # UPDATE result, then the read-back finds nothing
    assert lake.update_event_if("e'1", {"status": "pending", "claim_token": None},
                                {"status": "processing", "claim_token": "t"}) is False
    update, params = connection.sent[0]
    assert update == ("UPDATE `000-sql-databricks-bridge`.`events`.`bridge_events` SET `status` = :set_status, "
                      "`claim_token` = :set_claim_token WHERE event_id = :event_id AND `status` = :was_status "
                      "AND `claim_token` IS NULL")
    assert params == {"event_id": "e'1", "set_status": "processing", "set_claim_token": "t", "was_status": "pending"}
    # read back: every row with the id (a second row with it must not hide ours)
    assert connection.sent[1][0].startswith("SELECT ") and connection.sent[1][1] == {"event_id": "e'1", "limit": 100}


@pytest.mark.parametrize("message", [
    "io.delta.exceptions.ConcurrentAppendException: Files were added to the root of the table",
    "[DELTA_CONCURRENT_DELETE_READ] ConcurrentDeleteReadException: This transaction attempted to read",
    "org.apache.iceberg.exceptions.ValidationException: Missing required files to delete: /x.parquet",
    "org.apache.iceberg.exceptions.CommitFailedException: metadata changed",
])
def test_concurrent_modification_is_a_lost_race(message: str) -> None:
    assert isinstance(sort_error(Exception(message), "claim"), LostRace)


def test_missing_tables_are_permanent_and_network_errors_transient() -> None:
    class ServerOperationError(Exception):
        pass

    class RequestError(Exception):
        pass

    text = ("org.apache.hive.service.cli.HiveSQLException: Error running query: [TABLE_OR_VIEW_NOT_FOUND] "
            "The table `c`.`s`.`t` cannot be found.\n\tat org.apache.spark.Foo(Foo.java:1)\n" + "\tat x\n" * 200)
    error = sort_error(ServerOperationError(text), "reading")
    assert isinstance(error, PermanentError)
    assert str(error) == "reading: [TABLE_OR_VIEW_NOT_FOUND] The table `c`.`s`.`t` cannot be found."
    assert isinstance(sort_error(RequestError("Max retries exceeded"), "x"), TransientError)
    assert len(short_message(Exception("y" * 5000))) == 600


def test_the_token_never_shows_in_repr() -> None:
    lake, _ = recording_lake()
    assert "dapi-secret" not in repr(lake)


def test_without_a_token_unified_auth_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge_cli.lakes.databricks import unified_auth_provider

    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-from-env")
    monkeypatch.delenv("DATABRICKS_CONFIG_PROFILE", raising=False)
    header_factory = unified_auth_provider("localhost", None, timeout_seconds=1)()
    assert header_factory() == {"Authorization": "Bearer dapi-from-env"}
    settings = load_settings(env={"BRIDGE_HOME": "/tmp/x"})
    config = AdapterConfig("databricks", {"server_hostname": "localhost", "http_path": "/sql/1.0/warehouses/a"})
    args = DatabricksLake(dataclasses.replace(settings, lake=config))._connect_args()
    assert "access_token" not in args and callable(args["credentials_provider"])
