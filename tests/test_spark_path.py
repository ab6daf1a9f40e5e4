"""Whole events through the Spark staging path: local Spark (jTDS over JDBC) into a real SQL Server.

Needs BRIDGE_TEST_MSSQL_URL, pyspark, Java and a JDBC jar (tests/backends.spark_unavailable says
which is missing). The contract suite runs every INSERT and UPDATE scenario through this path too
(the duckdb-sqlserver-spark pair); this file adds the fidelity matrix, the documented driver limit,
a failing run, and real workers stopped and killed while Spark writes their stage.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_cli.targets.sqlserver.tsql import q
from tests.backends import (
    MssqlPair,
    MssqlPythonPair,
    local_spark,
    mssql_python_available,
    mssql_url,
    spark_jar,
    spark_unavailable,
)
from tests.helpers import submit
from tests.test_cli_process import BRIDGE, cli_env, ctrl_c_as_in_a_terminal, wait_until
from tests.test_sqlserver_fidelity import MATRIX, mismatches, seed_fidelity_source

pytestmark = [
    pytest.mark.skipif(mssql_url() is None, reason="BRIDGE_TEST_MSSQL_URL is not set: the Spark path was not tested"),
    pytest.mark.skipif(spark_unavailable() is not None, reason=f"Spark path: {spark_unavailable()}"),
]

# jTDS breaks the connection on (MAX) columns: the one documented limit of this driver.
SPARK_MATRIX = {name: spec for name, spec in MATRIX.items() if "(MAX)" not in spec[0]}


@pytest.fixture(params=["pymssql", "mssql-python"])
def pair(bridge_home: Path, request: pytest.FixtureRequest) -> Iterator[MssqlPair]:
    """A DuckDB lake and the real server through each worker driver (the worker creates, checks
    and applies the stage Spark loads), with the Spark path on; the ledger in a schema of its own
    so that the staging tables found there are this test's."""
    if request.param == "mssql-python" and not mssql_python_available():
        pytest.skip("mssql-python is not installed (pip install 'bridge-cli[mssql-python]')")
    pair_class = MssqlPythonPair if request.param == "mssql-python" else MssqlPair
    schema = f"bridge_sp_{uuid.uuid4().hex[:8]}"
    made = pair_class(bridge_home, spark=local_spark(), lock_timeout=30.0,
                      target_options={"ledger_table": f"{schema}.applied_events"})
    yield made
    made.target.close()  # type: ignore[attr-defined]
    for (name,) in made._run("SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(%s)",
                             [schema], fetch=True):
        made._run(f"DROP TABLE {q(schema)}.{q(str(name))}")
    made._run(f"DROP SCHEMA {q(schema)}")


def stages(pair: MssqlPair) -> list[str]:
    schema = pair.target.ledger.schema  # type: ignore[attr-defined]
    rows = pair._run("SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(%s) "
                     "AND t.name LIKE N'bridge[_]stage[_]%%'", [schema], fetch=True)
    return [str(r[0]) for r in rows]


def fresh_table(pair: MssqlPair, ddl: str) -> str:
    name = f"sp_{uuid.uuid4().hex[:10]}"
    pair._run(f"CREATE TABLE [dbo].[{name}] ({ddl})")
    return name


def test_every_type_but_max_round_trips_exactly_through_spark(pair: MssqlPair) -> None:
    table = fresh_table(pair, "[id] INT NOT NULL PRIMARY KEY, " + ", ".join(
        f"[{name}] {sql_type} NULL" for name, (sql_type, _, _) in SPARK_MATRIX.items()))
    seed_fidelity_source(pair, SPARK_MATRIX)
    event = submit(pair.lake, "insert", f"dbo.{table}", source_table="lake.s.fidelity", primary_keys=["id"],
                   metadata={"engine": "spark"})
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed", stored.error_message
    assert stored.warning is None, stored.warning  # staged on Spark, not by the worker
    names = ", ".join(f"[{n}]" for n in SPARK_MATRIX)
    got = pair._run(f"SELECT [id], {names} FROM [dbo].[{table}] ORDER BY [id]", fetch=True)
    assert len(got) == 5, got
    assert mismatches(got, SPARK_MATRIX) == []
    assert stages(pair) == []


def test_a_max_column_is_staged_by_the_worker_and_the_event_says_why(pair: MssqlPair) -> None:
    table = fresh_table(pair, "[id] INT NOT NULL PRIMARY KEY, [body] NVARCHAR(MAX) NULL")
    long_text = "ñ" + "x" * 9000
    pair.create_source("lake.s.wide", {"id": "int", "body": "text"}, [(1, long_text), (2, None)])
    event = submit(pair.lake, "insert", f"dbo.{table}", source_table="lake.s.wide", primary_keys=["id"],
                   metadata={"engine": "spark"})
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed", stored.error_message
    assert "jTDS" in (stored.warning or "") and "staged by the worker itself" in (stored.warning or "")
    assert pair._run(f"SELECT [id], [body] FROM [dbo].[{table}] ORDER BY [id]", fetch=True) == [
        (1, long_text), (2, None)]


def test_a_run_the_server_refuses_fails_the_event_having_applied_nothing(pair: MssqlPair) -> None:
    table = fresh_table(pair, "[id] INT NOT NULL PRIMARY KEY, [name] NVARCHAR(10) NULL")
    pair.create_source("lake.s.narrow", {"id": "int", "name": "text"}, [(1, "short"), (2, "ñ" * 11)])
    event = submit(pair.lake, "insert", f"dbo.{table}", source_table="lake.s.narrow", primary_keys=["id"],
                   metadata={"engine": "spark"})
    pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    message = stored.error_message or ""
    assert stored.status == "failed", (stored.status, stored.warning)
    assert "Spark staging run failed" in message, message
    assert "truncat" in message.lower() or "too long" in message.lower(), message  # SQL Server's words, or Babelfish's
    assert stored.attempts == 1  # the server's refusal is permanent: no Spark run is wasted on retries
    assert "spark.log" in message  # where to read the whole run
    assert pair._run(f"SELECT COUNT(*) FROM [dbo].[{table}]", fetch=True) == [(0,)]
    assert stages(pair) == []


# -- real workers stopped and killed while Spark writes their stage --------------------------------
BIG = 300_000


def big_event(pair: MssqlPair) -> tuple[str, str]:
    table = fresh_table(pair, "[id] BIGINT NOT NULL PRIMARY KEY, [name] NVARCHAR(40) NULL, [amount] DECIMAL(18,4) NULL")
    with pair.lake.connect("lake", create=True) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS s")
        con.execute("CREATE OR REPLACE TABLE s.big AS SELECT range + 1 AS id, 'fila ñ ' || range AS name, "
                    "CAST(range / 7 AS DECIMAL(18,4)) AS amount FROM range(?)", [BIG])
    event = submit(pair.lake, "insert", f"dbo.{table}", source_table="lake.s.big", primary_keys=["id"],
                   metadata={"engine": "spark"}, rows_expected=BIG)
    return event.event_id, table


def write_profile(pair: MssqlPair, home: Path, lease_seconds: int) -> dict[str, str]:
    options = {k: v for k, v in pair.settings.target.options.items()}
    profile = {"profiles": {"t": {
        "lease_seconds": lease_seconds, "retry_backoff": 0, "lock_timeout": 30,
        "lake": {"kind": "duckdb"},
        "target": {"kind": "sqlserver", **options},
        "spark": {"kind": "local", "jars": [spark_jar()], "partitions": 2, "poll_seconds": 1},
    }}}
    path = home.parent / "bridge.yaml"
    path.write_text(json.dumps(profile), encoding="utf-8")  # JSON is YAML
    return cli_env(BRIDGE_CONFIG=str(path))


def spark_processes() -> list[int]:
    """Pids of the running staging jobs (by command line) and of the JVMs they started (their
    children): not this test process's own JVM, which pyspark keeps after a SparkSession stops."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry.name)] = (parent, command)
    jobs = [pid for pid, (_, command) in table.items() if b"bridge_cli.spark.job" in command]
    jvms = [pid for pid, (parent, command) in table.items() if parent in jobs and b"java" in command]
    return jobs + jvms


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie has finished)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.append(pid)
    return running


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    try:
        return subprocess.Popen([*BRIDGE, "worker", "--poll-interval", "1"], env=env, stdout=handle,
                                stderr=subprocess.STDOUT, preexec_fn=ctrl_c_as_in_a_terminal)
    finally:
        handle.close()


def wait_for_spark_writing(pair: MssqlPair) -> list[int]:
    """The stage exists and the job's JVM has been up a few seconds: the run is under way. Returns
    the job's and its JVM's pids."""
    wait_until(lambda: bool(stages(pair)) and len(spark_processes()) >= 2, 120, "the Spark run to start", every=0.5)
    time.sleep(4)
    return spark_processes()


def signal_mid_run(
    pair: MssqlPair, event_id: str, env: dict[str, str], log: Path, sig: int
) -> tuple[list[str], list[int]]:
    """Start a worker, wait until Spark writes the event's stage, send `sig`; the stages seen then,
    and the Spark job's and JVM's pids."""
    worker = start_worker(env, log)
    try:
        pids = wait_for_spark_writing(pair)
        assert pair.lake.get_event(event_id).status == "processing"
        seen = stages(pair)
        worker.send_signal(sig)
        worker.wait(timeout=90)
    finally:
        if worker.poll() is None:
            worker.kill()
    if sig != signal.SIGKILL:
        assert worker.returncode == 0, log.read_text(errors="replace")
    return seen, pids


def process_once(env: dict[str, str], event_id: str) -> None:
    done = subprocess.run([*BRIDGE, "process-once", "--event-id", event_id], env=env, capture_output=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def test_a_worker_stopped_mid_run_cancels_spark_drops_the_stage_and_releases_the_event(
    pair: MssqlPair, bridge_home: Path, tmp_path: Path
) -> None:
    event_id, table = big_event(pair)
    env = write_profile(pair, bridge_home, lease_seconds=60)
    _, pids = signal_mid_run(pair, event_id, env, tmp_path / "worker.log", signal.SIGTERM)
    assert "cancelling the Spark staging run" in (tmp_path / "worker.log").read_text(errors="replace")
    wait_until(lambda: alive(pids) == [], 30, "the Spark job and its JVM to be gone")
    assert stages(pair) == []
    assert pair._run(f"SELECT COUNT(*) FROM [dbo].[{table}]", fetch=True) == [(0,)]
    stored = pair.lake.get_event(event_id)
    assert (stored.status, stored.attempts) == ("pending", 0), stored
    assert "the worker stopped while Spark staged this event" in (stored.warning or "")
    process_once(env, event_id)  # the next worker applies it, once and whole
    stored = pair.lake.get_event(event_id)
    assert (stored.status, stored.rows_affected, stored.discrepancy) == ("completed", BIG, 0), stored.error_message
    assert pair._run(f"SELECT COUNT(*), COUNT(DISTINCT [id]), MIN([id]), MAX([id]) FROM [dbo].[{table}]",
                     fetch=True) == [(BIG, BIG, 1, BIG)]
    assert stages(pair) == []


def test_a_worker_killed_mid_run_takes_spark_with_it_and_the_next_attempt_drops_its_stage(
    pair: MssqlPair, bridge_home: Path, tmp_path: Path
) -> None:
    event_id, table = big_event(pair)
    env = write_profile(pair, bridge_home, lease_seconds=5)
    left, pids = signal_mid_run(pair, event_id, env, tmp_path / "worker.log", signal.SIGKILL)
    # No orphan keeps writing: the job dies with its worker, and the JVM with the job.
    wait_until(lambda: alive(pids) == [], 30, "the Spark job and its JVM to die with the worker")
    assert stages(pair) == left and len(left) == 1  # left behind, for now
    time.sleep(6)  # the killed worker's lease runs out
    process_once(env, event_id)
    stored = pair.lake.get_event(event_id)
    assert (stored.status, stored.rows_affected, stored.attempts) == ("completed", BIG, 2), stored.error_message
    assert pair._run(f"SELECT COUNT(*), COUNT(DISTINCT [id]) FROM [dbo].[{table}]", fetch=True) == [(BIG, BIG)]
    assert stages(pair) == []  # the earlier attempt's stage went with the second attempt


def test_the_contract_suites_spark_pair_really_stages_on_spark(
    bridge_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The duckdb-sqlserver-spark pair runs the contract suite's INSERT and UPDATE scenarios: they
    must go through Spark, not quietly through the worker."""
    import logging

    from tests.backends import Col, MssqlSparkPair

    pair = MssqlSparkPair(bridge_home)
    table = f"dbo.sp_{uuid.uuid4().hex[:10]}"
    pair.create_target(table, [Col("k", "int", pk=True), Col("v")])
    pair.create_source("lake.s.few", {"k": "int", "v": "text"}, [(1, "a"), (2, "b")])
    first = submit(pair.lake, "insert", table, source_table="lake.s.few", primary_keys=["k"])
    pair.create_source("lake.s.change", {"k": "int", "v": "text"}, [(2, "B")])
    second = submit(pair.lake, "update", table, source_table="lake.s.change", primary_keys=["k"])
    with caplog.at_level(logging.INFO, logger="bridge"):
        pair.engine().process_once()
    staged = [r.getMessage() for r in caplog.records if "Spark staged" in r.getMessage()]
    assert [m.split(":")[0] for m in staged] == [f"event {first.event_id}", f"event {second.event_id}"]
    assert pair.target_rows(table, ["k", "v"], order_by="k") == [(1, "a"), (2, "B")]
