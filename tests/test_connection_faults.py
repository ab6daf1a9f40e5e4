"""Faults on the real pairs: the server drops the worker's connection in the middle of an event.

SQL Server (when BRIDGE_TEST_MSSQL_URL is set): a second connection issues a real T-SQL `KILL` of
the worker's session while it stages, while it applies (blocked inside its transaction, the ledger
row already written), and between events. Hooks only choose the moment; the kill is the server's.
The event must be retried and applied exactly once, and no staging table may be left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.outcomes import EventResult
from tests.backends import Col, MssqlPair, MssqlPythonPair, mssql_python_available, mssql_url
from tests.helpers import submit

ROWS = [(i, f"row {i} ñ") for i in range(1, 2001)]
INT_ROWS = [(i, 1000 + i) for i in range(1, 2001)]
BATCH_ROWS = 50  # 40 source batches: a kill after the 10th read lands well inside staging


# -- SQL Server --------------------------------------------------------------------------------

needs_mssql = pytest.mark.skipif(
    mssql_url() is None, reason="BRIDGE_TEST_MSSQL_URL is not set: SQL Server connection faults skipped"
)


def make_pair(driver: str, home: Path, **target_options: Any) -> MssqlPair:
    """A DuckDB lake and the real server through one driver. The ledger lives in a schema of its own,
    so the shared staging tables (`<ledger schema>.bridge_stage_<hex>`) found there are this test's."""
    if driver == "mssql-python" and not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    pair_class = MssqlPythonPair if driver == "mssql-python" else MssqlPair
    schema = f"bridge_cf_{uuid.uuid4().hex[:8]}"
    options = {"ledger_table": f"{schema}.applied_events", **target_options}
    return pair_class(home, batch_rows=BATCH_ROWS, lock_timeout=30.0, target_options=options)


def drop_ledger_schema(pair: MssqlPair) -> None:
    from bridge_cli.targets.sqlserver.tsql import q

    pair.target.close()  # type: ignore[attr-defined]
    schema = pair.target.ledger.schema  # type: ignore[attr-defined]
    for (name,) in pair._run("SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(%s)",
                             [schema], fetch=True):
        pair._run(f"DROP TABLE {q(schema)}.{q(str(name))}")
    pair._run(f"DROP SCHEMA {q(schema)}")


@pytest.fixture(params=["pymssql", "mssql-python"])
def mssql(request: pytest.FixtureRequest, bridge_home: Path) -> Iterator[MssqlPair]:
    if mssql_url() is None:
        pytest.skip("BRIDGE_TEST_MSSQL_URL is not set: SQL Server connection faults skipped")
    pair = make_pair(request.param, bridge_home)
    yield pair
    drop_ledger_schema(pair)


def target_table(pair: MssqlPair, value_type: str = "text") -> str:
    """A target table of this test's own (other tests may use the same server at the same time)."""
    name = f"dbo.cf_{uuid.uuid4().hex[:10]}"
    pair.create_target(name, [Col("k", "int", pk=True), Col("v", value_type)])
    return name


def drop_target(pair: MssqlPair, name: str) -> None:
    from bridge_cli.identifiers import parse_target_table
    from bridge_cli.targets.sqlserver.tsql import table_sql

    pair._run(f"DROP TABLE {table_sql(parse_target_table(name))}")


def warm_up(pair: MssqlPair) -> str:
    """One small event first, as a running worker has done: `auto` has learnt what this server
    refuses (pymssql's refused bulk load replaces the session's connection), so the next event runs
    on the connection the target keeps."""
    table = target_table(pair)
    try:
        pair.create_source("c.s.warm", {"k": "int", "v": "text"}, ROWS[:3])
        event = submit(pair.lake, "insert", table, source_table="c.s.warm", primary_keys=["k"])
        assert [r.status for r in pair.engine().process_once()] == ["completed"]
    finally:
        drop_target(pair, table)
    return event.event_id


def worker_spid(pair: MssqlPair) -> int:
    """The session id of the connection the target keeps between uses, asked through that very
    connection; the next event takes it again (its own statements then run on this session)."""
    with pair.target._cursor("finding the worker's session") as cursor:  # type: ignore[attr-defined]
        cursor.execute("SELECT @@SPID")
        return int(cursor.fetchone()[0])


class Killer:
    """A second connection to the same server, opened beforehand, that ends sessions with T-SQL
    `KILL` (Babelfish implements it by terminating the session's backend)."""

    def __init__(self, pair: MssqlPair) -> None:
        self.connection = pair.target.connect()  # type: ignore[attr-defined]
        self.sql = pair.target.driver.sql  # type: ignore[attr-defined]
        self.killed: list[int] = []

    def kill(self, spid: int) -> None:
        # KILL takes no variable or parameter, only a literal: the spid is an int, never text.
        self.connection.cursor().execute(f"KILL {int(spid)}")
        self.killed.append(spid)

    def waiting_on_a_lock(self, spid: int) -> bool:
        cursor = self.connection.cursor()
        try:  # SQL Server
            cursor.execute(self.sql("SELECT blocking_session_id FROM sys.dm_exec_requests WHERE session_id = %s"),
                           (spid,))
            return any(row[0] for row in cursor.fetchall())
        except Exception:  # noqa: BLE001 - Babelfish has no sys.dm_exec_requests; @@SPID is the backend pid
            cursor = self.connection.cursor()
        cursor.execute(self.sql("SELECT wait_event_type FROM pg_catalog.pg_stat_activity WHERE pid = %s"), (spid,))
        return any(row[0] == "Lock" for row in cursor.fetchall())

    def close(self) -> None:
        self.connection.close()


def shared_stages(pair: MssqlPair) -> list[str]:
    schema = pair.target.ledger.schema  # type: ignore[attr-defined]
    rows = pair._run("SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(%s) AND t.name LIKE %s",
                     [schema, "bridge[_]stage[_]%"], fetch=True)
    return [str(r[0]) for r in rows]


def assert_applied_once(
    pair: MssqlPair, table: str, event_id: str, results: list[EventResult], earlier: tuple[str, ...] = (),
    rows: list[tuple[int, Any]] = ROWS,
) -> None:
    """Killed once, retried once: the first try waits for a retry, the second completes; the target
    holds each source row once, the ledger one row, the event its true count."""
    assert [r.status for r in results] == ["pending", "completed"], results
    stored = pair.lake.get_event(event_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.rows_affected, stored.discrepancy) == (
        "completed", 2, len(rows), 0), stored
    assert pair.target_rows(table, ["k", "v"], "k") == rows
    assert pair.ledger_ids() == sorted([event_id, *earlier])
    assert shared_stages(pair) == []


def connection_lost(message: str | None) -> bool:
    text = (message or "").lower()
    return any(m in text for m in ("dbprocess is dead", "unexpected eof", "communication link failure",
                                   "read from the server failed", "write to the server failed",
                                   "tcp provider", "connection"))


def insert_to_kill(mssql: MssqlPair, table: str) -> tuple[str, Any, int, Killer]:
    """After a warm-up event (see warm_up), an INSERT of ROWS into `table`, the spid of the
    session the worker will use for it, and a second session to kill that one."""
    warm = warm_up(mssql)
    mssql.create_source("c.s.t", {"k": "int", "v": "text"}, ROWS)
    event = submit(mssql.lake, "insert", table, source_table="c.s.t", primary_keys=["k"],
                   rows_expected=len(ROWS))
    return warm, event, worker_spid(mssql), Killer(mssql)


@needs_mssql
def test_sqlserver_session_killed_while_staging_is_retried_and_applied_once(mssql: MssqlPair) -> None:
    table = target_table(mssql)
    try:
        warm, event, spid, killer = insert_to_kill(mssql, table)

        def kill_mid_staging(event_id: str, rows_read: int) -> None:
            # Called as each source batch is read, a few batches ahead of the one being staged.
            if not killer.killed and rows_read >= 10 * BATCH_ROWS:
                killer.kill(spid)

        try:
            results = mssql.engine(on_progress=kill_mid_staging).process_once()
        finally:
            killer.close()
        assert killer.killed == [spid]
        first = results[0].warning or ""
        assert "staging source rows" in first and connection_lost(first), results[0]
        assert_applied_once(mssql, table, event.event_id, results, (warm,))
    finally:
        drop_target(mssql, table)


@needs_mssql
def test_sqlserver_session_killed_during_the_apply_is_retried_and_applied_once(mssql: MssqlPair) -> None:
    """The worker's apply waits on a lock held by another session, inside its transaction with the
    ledger row written; that is when its session is killed. Nothing of it may survive."""
    table = target_table(mssql)
    try:
        warm, event, spid, killer = insert_to_kill(mssql, table)
        results: list[EventResult] = []
        worker = threading.Thread(target=lambda: results.extend(mssql.engine().process_once()))
        try:
            with mssql.lock_target(table):
                worker.start()
                deadline = time.monotonic() + 25  # under the worker's 30 s lock timeout
                while not killer.waiting_on_a_lock(spid):
                    assert time.monotonic() < deadline, "the worker's apply never waited on the lock"
                    assert worker.is_alive(), f"the event ended before its apply was blocked: {results}"
                    time.sleep(0.05)
                killer.kill(spid)
            worker.join(timeout=60)
            assert not worker.is_alive()
        finally:
            killer.close()
        first = results[0].warning or ""
        assert f"INSERT into {table}" in first and connection_lost(first), results[0]
        assert_applied_once(mssql, table, event.event_id, results, (warm,))
    finally:
        drop_target(mssql, table)


@needs_mssql
def test_sqlserver_kept_connection_killed_between_events_is_replaced(mssql: MssqlPair) -> None:
    """The connection kept between events is killed while idle: the next event notices before
    using it and completes on its first attempt."""
    table = target_table(mssql)
    try:
        mssql.create_source("c.s.t", {"k": "int", "v": "text"}, ROWS[:100])
        mssql.create_source("c.s.u", {"k": "int", "v": "text"}, ROWS[100:])
        first = submit(mssql.lake, "insert", table, source_table="c.s.t", primary_keys=["k"])
        engine = mssql.engine()
        assert [r.status for r in engine.process_once()] == ["completed"]
        spid = worker_spid(mssql)
        killer = Killer(mssql)
        try:
            killer.kill(spid)
        finally:
            killer.close()
        second = submit(mssql.lake, "insert", table, source_table="c.s.u", primary_keys=["k"])
        assert [(r.status, r.attempts) for r in engine.process_once()] == [("completed", 1)]
        assert mssql.lake.get_event(second.event_id).rows_affected == len(ROWS) - 100  # type: ignore[union-attr]
        assert mssql.target_rows(table, ["k", "v"], "k") == ROWS
        assert mssql.ledger_ids() == sorted([first.event_id, second.event_id])
    finally:
        drop_target(mssql, table)


@needs_mssql
def test_sqlserver_session_killed_while_a_shared_stage_is_loaded_leaves_no_stage(
    bridge_home: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """mssql-python's bulk load runs on a connection of its own into a shared staging table the
    session made. The session is killed as that load starts: the stage must still be dropped, and a
    dead session must not be taken for the server refusing bulk loads."""
    # A 32 KiB packet and integer columns: Babelfish then takes this driver's bulk load and reports
    # success (with values in the wrong columns, which the stage check catches). With text columns
    # or the default packet, the load fails before it sends a row.
    mssql = make_pair("mssql-python", bridge_home, write_method="auto", packet_size=32767)
    table = target_table(mssql, "int")
    try:
        mssql.create_source("c.s.t", {"k": "int", "v": "int"}, INT_ROWS)
        event = submit(mssql.lake, "insert", table, source_table="c.s.t", primary_keys=["k"],
                       rows_expected=len(INT_ROWS))
        spid = worker_spid(mssql)
        killer = Killer(mssql)
        driver = mssql.target.driver  # type: ignore[attr-defined]
        real_load = driver.load
        seen_stages: list[list[str]] = []

        def load_after_a_kill(method: str, *args: Any) -> Any:
            if method == "bulk" and not killer.killed:
                seen_stages.append(shared_stages(mssql))
                killer.kill(spid)
            return real_load(method, *args)

        driver.load = load_after_a_kill
        try:
            with caplog.at_level(logging.WARNING, logger="bridge"):
                results = mssql.engine().process_once()
        finally:
            driver.load = real_load
            killer.close()
        assert killer.killed == [spid]
        assert len(seen_stages) == 1 and len(seen_stages[0]) == 1, seen_stages  # it existed when killed
        assert connection_lost(results[0].warning), results[0].warning
        refusals = [r.getMessage() for r in caplog.records if "does not work on this server" in r.getMessage()]
        assert not any(connection_lost(m) for m in refusals), refusals
        assert_applied_once(mssql, table, event.event_id, results, rows=INT_ROWS)
    finally:
        drop_target(mssql, table)
        drop_ledger_schema(mssql)


# -- Databricks (its front stopped: the stand-in only) -----------------------------------------------------------------


class StandinFront:
    """The stand-in warehouse's HTTPS front (its nginx, tests/standins/databricks): stopped, the
    warehouse is unreachable (connections refused); started again as the stand-in starts it, with
    its PID recorded where the stand-in stops it."""

    def __init__(self) -> None:
        from tests.databricks_env import ENV

        state = os.environ.get("DBX_STANDIN_DIR")
        if ENV is None or not ENV.standin or not state or not ENV.compat_dir:
            pytest.skip("the warehouse is not the local stand-in: a real warehouse cannot be stopped by a test")
        sys.path.insert(0, ENV.compat_dir)
        from dbx_standin import Front

        self.port = ENV.port
        self.front = Front(Path(state))
        if self.front.running() is None:
            pytest.skip("no stand-in front recorded in DBX_STANDIN_DIR")

    def running(self) -> bool:
        return self.front.running() is not None

    def stop(self) -> None:
        self.front.stop()

    def start(self) -> None:
        self.front.start(self.port)


@pytest.fixture
def databricks(bridge_home: Path) -> Iterator[Any]:
    from tests.backends import DatabricksPair
    from tests.databricks_env import ENV, NO_WAREHOUSE

    if ENV is None:
        pytest.skip(NO_WAREHOUSE)
    pair = DatabricksPair(bridge_home, batch_rows=BATCH_ROWS, lease_seconds=10.0)
    yield pair
    pair.close()


def run_worker_until(engine: Any, done: Any, timeout: float = 120) -> list[EventResult]:
    """A real worker loop (short polls) in a thread until `done(results)`."""
    stop = threading.Event()
    results: list[EventResult] = []

    def on_result(result: EventResult) -> None:
        results.append(result)
        if done(results):
            stop.set()

    worker = threading.Thread(target=engine.run_worker, args=(stop, 0.2, None, on_result), daemon=True)
    worker.start()
    worker.join(timeout=timeout)
    stop.set()
    assert not worker.is_alive(), f"the worker did not finish the event: {results}"
    return results


def databricks_insert(pair: Any, rows: int) -> Any:
    pair.create_target("dbo.t", [Col("k", "int", pk=True), Col("v", "int")])
    pair.create_source("c.s.cf_source", {"k": "int", "v": "int"}, INT_ROWS[:rows])
    return submit(pair.lake, "insert", "dbo.t", source_table="c.s.cf_source", primary_keys=["k"],
                  rows_expected=rows)


def assert_databricks_applied_once(pair: Any, event_id: str, rows: int) -> Any:
    stored = pair.lake.get_event(event_id)
    assert (stored.status, stored.rows_affected, stored.discrepancy) == ("completed", rows, 0), stored
    assert pair.target_rows("dbo.t", ["k", "v"], "k") == INT_ROWS[:rows]
    assert pair.ledger_ids() == [event_id]
    return stored


@pytest.mark.parametrize("value", ["soon", 0, True])
def test_lake_retry_budget_is_bounded_and_checked(value: Any) -> None:
    """The connector gives up on an unreachable warehouse after `retry_seconds` (default 120), not
    after its own 15 minutes; a wrong value is a one-line configuration error."""
    import dataclasses

    from bridge_cli.config import AdapterConfig, ConfigError, load_settings
    from bridge_cli.lakes.databricks import DatabricksLake

    settings = load_settings(env={"BRIDGE_HOME": "/tmp/unused"})
    options = {"server_hostname": "adb-1.azuredatabricks.net", "http_path": "/sql/1.0/warehouses/a", "token": "t"}

    def lake(patient: bool = True, **extra: Any) -> DatabricksLake:
        config = AdapterConfig("databricks", {**options, **extra})
        return DatabricksLake(dataclasses.replace(settings, lake=config), patient=patient)

    assert lake()._connect_args()["_retry_stop_after_attempts_duration"] == 120
    assert lake(retry_seconds="30")._connect_args()["_retry_stop_after_attempts_duration"] == 30
    # A command a person waits on gives up within connect_timeout (30 s) instead.
    assert lake(patient=False)._connect_args()["_retry_stop_after_attempts_duration"] == 30
    assert lake(patient=False, connect_timeout=5)._connect_args()["_retry_stop_after_attempts_duration"] == 5
    with pytest.raises(ConfigError, match="retry_seconds"):
        lake(retry_seconds=value)
    with pytest.raises(ConfigError, match="connect_timeout"):
        lake(connect_timeout=value)


def outage_after_three_batches(
    front: StandinFront, seconds: float, outage: list[int], back: list[threading.Timer]
) -> Callable[[str, int], None]:
    """An on_progress hook: once 3 batches are read, stop the warehouse's front for `seconds`."""

    def hook(event_id: str, rows_read: int) -> None:
        if not outage and rows_read >= 3 * BATCH_ROWS:
            outage.append(rows_read)
            front.stop()
            back.append(threading.Timer(seconds, front.start))  # the outage's length, not a bound
            back[0].start()

    return hook


def test_databricks_warehouse_gone_for_a_moment_mid_read_is_ridden_out(databricks: Any) -> None:
    """The warehouse's front stops while the source is read, batch by batch, and starts again a
    few seconds later: the worker rides it out and the event is applied once."""
    front = StandinFront()
    event = databricks_insert(databricks, 500)
    outage: list[int] = []
    back: list[threading.Timer] = []
    outage_mid_read = outage_after_three_batches(front, 3.0, outage, back)
    try:
        results = run_worker_until(databricks.engine(on_progress=outage_mid_read),
                                   lambda done: done[-1].status in ("completed", "failed"))
    finally:
        for timer in back:
            timer.join()
        if not front.running():
            front.start()
    assert outage == [3 * BATCH_ROWS]
    assert results[-1].status == "completed", results
    assert_databricks_applied_once(databricks, event.event_id, 500)


def test_databricks_warehouse_gone_longer_than_the_lake_retries_fails_over_to_a_retry(
    bridge_home: Path, databricks: Any,
) -> None:
    """The warehouse stays away longer than the lake's retry budget (`retry_seconds`): the read
    fails as a transient error instead of hanging, the event is claimed again once the warehouse is
    back (its lease ran out, or its retry was recorded), and it is applied once."""
    import dataclasses

    from bridge_cli.config import AdapterConfig
    from bridge_cli.lakes.databricks import DatabricksLake

    front = StandinFront()
    event = databricks_insert(databricks, 500)
    lake_config = databricks.settings.lake
    settings = dataclasses.replace(
        databricks.settings, lake=AdapterConfig("databricks", {**lake_config.options, "retry_seconds": 2})
    )
    engine = databricks.engine()
    engine.settings = settings
    engine.lake = DatabricksLake(settings, patient=True)  # a worker's lake
    outage: list[int] = []
    back: list[threading.Timer] = []
    engine.on_progress = outage_after_three_batches(front, 8.0, outage, back)
    try:
        results = run_worker_until(engine, lambda done: done[-1].status in ("completed", "failed"))
    finally:
        engine.lake.close()
        for timer in back:
            timer.join()
        if not front.running():
            front.start()
    assert outage == [3 * BATCH_ROWS]
    assert results[-1].status == "completed", results
    stored = assert_databricks_applied_once(databricks, event.event_id, 500)
    assert stored.attempts >= 2  # the first attempt stopped at the outage; a later one applied it
