"""`bridge pause` / `resume` and `bridge cancel` of a processing event, as an operator meets them
(messages, exit codes, what the worker does), on the embedded pair, SQL Server and Databricks."""

from __future__ import annotations

import getpass
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from bridge_cli.api import cancel_events, pause_targets, resume_targets
from bridge_cli.config import load_settings
from bridge_cli.errors import NotInitialized, PermanentError
from bridge_cli.identifiers import TableName, parse_source_table, parse_target_table
from bridge_cli.lakes import QueueStats, control_table_name
from bridge_cli.metrics import WorkerMetrics
from bridge_cli.policy import table_policy
from bridge_cli.worker_loop import queue_stats_for_metrics
from tests import test_cli, test_databricks
from tests.backends import Col, DatabricksPair, LocalPair, MssqlPair, MssqlPythonPair, mssql_python_available, mssql_url
from tests.helpers import submit as submit_to
from tests.test_cli import NEW_USERS, USERS_TARGET, event, insert_users, run, show, user_rows
from tests.test_cli_queue_control import AfterRead, delete_event

users = test_cli.users  # the fixture: a users source and an empty users target
WHO = f"{getpass.getuser()}@{socket.gethostname()}"


# -- pause and resume --------------------------------------------------------------------------
def test_pause_and_resume_say_what_who_when_and_why_with_their_exit_codes(users: LocalPair) -> None:
    result = run("pause", "--target", "dbo.users", "--reason", "index rebuild")
    assert result.exit_code == 0, show(result)
    assert result.stdout.startswith(f"paused dbo.users (by {WHO} since 20") and "Z: index rebuild)" in result.stdout
    assert "an event in hand finishes" in result.stderr
    everything = json.loads(run("pause", "--json").stdout)
    assert (everything["target"], everything["reason"], everything["paused_by"]) == ("*", None, WHO)
    assert everything["paused_at"].endswith("Z") and everything["replaced"] == []
    bad = run("pause", "--target", "dbo.[users")
    assert bad.exit_code == 2 and "unclosed [" in bad.stderr, show(bad)

    summary = json.loads(run("status", "--summary", "--json").stdout)
    assert [(p["target"], p["reason"]) for p in summary["paused"]] == [("*", None), ("dbo.users", "index rebuild")]
    doctor = {c["name"]: c for c in json.loads(run("doctor", "--json").stdout)}
    assert doctor["pauses"]["status"] == "warning"
    assert "dbo.users (by" in doctor["pauses"]["detail"] and "index rebuild" in doctor["pauses"]["detail"]
    assert "bridge resume" in doctor["pauses"]["fix"]

    again = run("pause", "--target", "users", "--reason", "longer", "--json")  # the same pattern
    assert [p["reason"] for p in json.loads(again.stdout)["replaced"]] == ["index rebuild"]
    held = run("resume", "--target", "dbo.users")  # removed, but everything is still paused
    assert held.exit_code == 1, show(held)
    assert "resumed users (by" in held.stdout
    assert "dbo.users is still paused by every target (*) (by" in held.stderr
    rest = run("resume")
    assert rest.exit_code == 0 and "resumed every target (*) (by" in rest.stdout, show(rest)
    nothing = run("resume", "--json")
    assert nothing.exit_code == 0 and json.loads(nothing.stdout) == {"resumed": [], "still_paused_by": []}
    assert "pauses" not in json.loads(run("status", "--summary", "--json").stdout)
    assert {c["name"]: c["status"] for c in json.loads(run("doctor", "--json").stdout)}["pauses"] == "ok"


def test_a_worker_skips_paused_targets_and_their_line_waits_while_others_proceed(users: LocalPair) -> None:
    first = insert_users()
    second = test_cli.submit("update", "--source", test_cli.CHANGED_USERS, "--target", USERS_TARGET,
                             "--pk", "username")
    other = delete_event("x")  # dbo.users too: the line waits whole
    users.create_target("dbo.others", [Col("id", "int", pk=True)])
    elsewhere = submit_to(users.lake, "delete", "dbo.others", filter_conditions={"id": 1})
    assert run("pause", "--target", "dbo.users").exit_code == 0
    engine = users.engine()
    assert [r.event_id for r in engine.process_once()] == [elsewhere.event_id]
    assert [event(e)["status"] for e in (first, second, other)] == ["pending"] * 3
    assert engine.process_once(event_id=first) == []  # an explicit event obeys the pause too
    explicit = run("process-once", "--event-id", first)
    assert explicit.exit_code == 1, show(explicit)
    assert f"event {first} waits: its target {USERS_TARGET} is paused, dbo.users (by {WHO}" in explicit.stderr
    resume_targets(users.lake, "dbo.users")
    assert [r.event_id for r in engine.process_once()] == [first, second, other]  # in claim order
    assert user_rows(users)[0] == ("ana", "a", 1)


class Counting:
    """The real lake, counting the calls of each method."""

    def __init__(self, lake: Any) -> None:
        self.lake = lake
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.lake, name)
        if not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return real(*args, **kwargs)

        return call


def test_an_idle_poll_reads_no_pauses_and_a_busy_one_reads_them_once(users: LocalPair) -> None:
    pause_targets(users.lake, "dbo.elsewhere")
    engine = users.engine()
    counting = Counting(users.lake)
    engine.lake = counting  # type: ignore[assignment]
    assert engine.claim_next_event() is None  # nothing claimable: nothing to pause
    assert counting.calls == {"claimable_events": 1}
    insert_users()
    assert engine.claim_next_event() is not None
    assert counting.calls["list_pauses"] == 1


def test_a_missing_control_table_pauses_nothing_warns_once_and_commands_say_run_init(
    users: LocalPair, caplog: pytest.LogCaptureFixture
) -> None:
    users.event_sql(f"DROP TABLE {users.lake._control}")  # an install from before it
    # Submitted without the CLI: a CLI run sets up logging anew, past caplog's capture.
    first = submit_to(users.lake, "insert", USERS_TARGET, source_table=NEW_USERS, primary_keys=["username"]).event_id
    second = submit_to(users.lake, "delete", USERS_TARGET, filter_conditions={"username": "x"}).event_id
    engine = users.engine()
    with caplog.at_level(logging.WARNING, logger="bridge"):
        assert [r.status for r in engine.process_once(max_events=1)] == ["completed"]
        assert [r.status for r in engine.process_once()] == ["completed"]
    said = [r.getMessage() for r in caplog.records if "control table" in r.getMessage()]
    assert len(said) == 1 and "run `bridge init`" in said[0] and "nothing is paused" in said[0], said
    for args in (("pause",), ("resume",)):
        result = run(*args)
        assert result.exit_code == 5 and "does not exist: run `bridge init`" in result.stderr, show(result)
    assert [event(e)["status"] for e in (first, second)] == ["completed", "completed"]
    busy = delete_event("y")
    assert engine.claim_next_event(busy) is not None
    refused = run("cancel", busy, "--no-wait")
    assert refused.exit_code == 5 and "run `bridge init`" in refused.stderr, show(refused)
    assert "created control table" in run("init").stdout  # and the events stay
    assert run("pause").exit_code == 0 and event(first)["status"] == "completed"


# -- cancel of a processing event ------------------------------------------------------------------
def test_cancel_of_a_processing_event_waits_for_its_worker_and_says_cancelled(users: LocalPair) -> None:
    event_id = insert_users()
    engine = users.engine(worker_id="vm:1")
    claimed = engine.claim_next_event()
    assert claimed is not None
    results: list[Any] = []

    def work() -> None:
        time.sleep(0.5)  # the request is written meanwhile; the worker sees it before applying
        results.append(engine.process_event(claimed))

    thread = threading.Thread(target=work)
    thread.start()
    result = run("cancel", event_id, "--timeout", "30")
    thread.join()
    assert result.exit_code == 0, show(result)
    assert f"cancelled by {WHO} at " in result.stdout
    stored = event(event_id)
    assert stored["status"] == "failed" and stored["error_message"].startswith(f"cancelled by {WHO} at ")
    assert results[0].status == "failed" and user_rows(users) == []  # nothing applied
    assert users.ledger_ids() == []
    assert users.lake.cancel_request(event_id, claimed.claim_token or "") is None  # done with


def test_cancel_no_wait_records_the_request_and_a_timeout_exits_3_leaving_it(users: LocalPair) -> None:
    event_id = insert_users()
    engine = users.engine(worker_id="vm:2")
    claimed = engine.claim_next_event()
    assert claimed is not None and claimed.claim_token
    asked = run("cancel", event_id, "--no-wait")
    assert asked.exit_code == 0, show(asked)
    assert "cancel requested of worker vm:2" in asked.stdout
    late = run("cancel", event_id, "--timeout", "0")
    assert late.exit_code == 3, show(late)
    assert "still processing after 0s: the cancel request stands" in late.stderr
    assert run("cancel", event_id, "--no-wait", "--timeout", "5").exit_code == 2
    request = users.lake.cancel_request(event_id, claimed.claim_token)
    assert request is not None and request.requested_by == WHO
    result = engine.process_event(claimed)  # the worker sees it at its next checkpoint
    assert result.status == "failed" and (result.error_message or "").startswith(f"cancelled by {WHO}")
    assert user_rows(users) == []


def test_a_cancel_that_arrives_after_the_commit_changes_nothing_and_says_so(
    users: LocalPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = insert_users()
    engine = users.engine()
    claimed = engine.claim_next_event()
    assert claimed is not None
    # cancel reads the event as processing; its worker commits before the request is written.
    lake = AfterRead(users.lake, "get_event", lambda: engine.process_event(claimed))
    monkeypatch.setattr("bridge_cli.cli_queue.open_lake", lambda _settings: lake)
    result = run("cancel", event_id)
    assert result.exit_code == 1, show(result)
    assert f"{event_id}: completed before its worker saw the cancel; nothing was changed" in result.stderr
    assert event(event_id)["status"] == "completed" and len(user_rows(users)) == 3
    assert users.event_sql(f"SELECT count(*) FROM {users.lake._control}") == [(0,)]  # its request deleted


def test_a_cancel_request_never_touches_a_later_claim_of_the_same_event(users: LocalPair) -> None:
    event_id = insert_users()
    dead = users.engine(worker_id="dead:1").claim_next_event()
    assert dead is not None
    [asked] = cancel_events(users.lake, [event_id], wait=None)
    assert asked.outcome == "requested"
    users.set_event_fields(event_id, lease_expires_at=test_cli.utcnow().replace(year=2000))  # its worker died
    later = users.engine(worker_id="vm:3")
    claim = later.claim_next_event()
    assert claim is not None and claim.claim_token != dead.claim_token
    assert later.process_event(claim).status == "completed"
    assert len(user_rows(users)) == 3


def test_cancel_follows_an_event_sent_back_to_pending_and_cancels_it_there(users: LocalPair) -> None:
    event_id = insert_users()
    claimed = users.engine().claim_next_event()
    assert claimed is not None
    # While cancel waits, the event goes back to pending (a retry): it is cancelled there.
    lake = AfterRead(users.lake, "request_cancel", lambda: users.set_event_fields(
        event_id, status="pending", claim_token=None, lease_expires_at=None))
    [result] = cancel_events(lake, [event_id], wait=10)  # type: ignore[arg-type]
    assert result.cancelled and result.reason.startswith(f"cancelled by {WHO}")
    assert event(event_id)["status"] == "failed"


# -- bridge's own tables and what shows a pause ----------------------------------------------------
def test_the_control_table_is_named_beside_the_event_table_and_refused_as_target_and_source() -> None:
    assert control_table_name(TableName(("c", "s", "bridge_events"))).table == "bridge_control"
    assert control_table_name(TableName(("c", "s", "queue"))).table == "queue_control"
    policy = table_policy(load_settings(env={}))
    with pytest.raises(PermanentError, match="it has the name of bridge's control table"):
        policy.check_target(parse_target_table("events.bridge_control"))
    with pytest.raises(PermanentError, match="it is bridge's control table"):
        policy.check_source(parse_source_table("`000-sql-databricks-bridge`.events.BRIDGE_CONTROL"))


def test_submit_refuses_the_control_table_as_a_source(users: LocalPair) -> None:
    result = run("submit", "insert", "--source", "`000-sql-databricks-bridge`.`events`.bridge_control",
                 "--target", USERS_TARGET, "--pk", "username")
    assert result.exit_code == 2 and "bridge's control table" in result.stderr, show(result)


def test_metrics_show_each_paused_pattern_as_a_gauge_read_with_the_queue_counts(users: LocalPair) -> None:
    metrics = WorkerMetrics()
    engine = users.engine()
    pause_targets(users.lake, "dbo.*")
    stats = queue_stats_for_metrics(engine)
    assert stats is not None and stats.paused == ("dbo.*",)
    metrics.on_poll(True, stats)
    assert 'bridge_paused{target="dbo.*"} 1.0' in generate_latest(metrics.registry).decode()
    resume_targets(users.lake)
    metrics.on_poll(True, queue_stats_for_metrics(engine))
    assert "bridge_paused{" not in generate_latest(metrics.registry).decode()
    metrics.on_poll(True, QueueStats({}, None))  # counted without pauses: the gauge is left alone
    assert "bridge_paused{" not in generate_latest(metrics.registry).decode()


def test_workers_and_top_name_what_is_paused(users: LocalPair) -> None:
    from rich.console import Console

    from bridge_cli.api import queue_view
    from bridge_cli.reporting import top_renderable

    pause_targets(users.lake, "dbo.users", "rebuild")
    listed = run("workers")
    assert listed.exit_code == 0 and "paused (workers claim none of their events): dbo.users (by" in listed.stderr
    console = Console(width=200, record=True)
    console.print(top_renderable(queue_view(users.lake), 2.0, width=200))
    shown = console.export_text()
    assert f"paused: dbo.users (by {WHO} since" in shown and "rebuild" in shown, shown


# -- SQL Server --------------------------------------------------------------------------------------
needs_mssql = pytest.mark.skipif(mssql_url() is None, reason="BRIDGE_TEST_MSSQL_URL is not set: SQL Server not tested")
SQLSERVER_ROWS = [(1, "old-1"), (2, "old-2"), (3, "old-3")]


def sqlserver_pair(bridge_home: Path, driver: str) -> MssqlPair:
    if driver == "mssql-python" and not mssql_python_available():
        pytest.skip("mssql-python is not installed")
    pair = (MssqlPythonPair if driver == "mssql-python" else MssqlPair)(bridge_home)
    from bridge_cli.targets.sqlserver.tsql import table_sql

    pair.create_target("dbo.cancelled", [Col("id", "int", pk=True)])
    # An NVARCHAR(MAX) column: mssql-python stages into a permanent bridge_stage_<hex> table.
    pair._run(f"ALTER TABLE {table_sql(parse_target_table('dbo.cancelled'))} ADD name NVARCHAR(MAX) NULL")
    pair.insert_target_rows("dbo.cancelled", ["id", "name"], SQLSERVER_ROWS)
    pair.create_source("lake.s.changes", {"id": "int", "name": "text"}, [(1, "new-1"), (2, "new-2"), (3, "new-3")])
    return pair


@needs_mssql
@pytest.mark.parametrize("driver", ["pymssql", "mssql-python"])
def test_sqlserver_a_cancel_seen_inside_the_transaction_rolls_it_back_and_drops_the_stage(
    bridge_home: Path, driver: str
) -> None:
    pair = sqlserver_pair(bridge_home, driver)
    event_id = submit_to(pair.lake, "update", "dbo.cancelled", source_table="lake.s.changes",
                         primary_keys=["id"]).event_id
    engine = pair.engine()
    claimed = engine.claim_next_event()
    assert claimed is not None
    real = pair.target.execute  # type: ignore[attr-defined]
    stage_tables = "SELECT name FROM sys.tables WHERE name LIKE 'bridge_stage%'"
    before = set(pair._run(stage_tables, fetch=True))  # another run's leftovers, if any
    stages: list[Any] = []

    def execute(cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> None:
        real(cursor, sql, params)
        if sql.startswith("UPDATE") and "applied_" in sql:  # the ledger row, the last statement
            stages.append(set(pair._run(stage_tables, fetch=True)) - before)
            cancel_events(pair.lake, [event_id], wait=None)
            engine.check_cancel()  # as the lease keeper's renewal landing now would

    pair.target.execute = execute  # type: ignore[attr-defined]
    result = engine.process_event(claimed)
    assert result.status == "failed" and (result.error_message or "").startswith(f"cancelled by {WHO}")
    assert pair.target_rows("dbo.cancelled", ["id", "name"], "id") == SQLSERVER_ROWS  # rolled back
    assert event_id not in pair.ledger_ids()
    assert set(pair._run(stage_tables, fetch=True)) == before  # the stage was dropped
    if driver == "mssql-python":
        assert stages[0], "the stage was a table of its own while the transaction ran"
    # The worker goes on: the same change, submitted again, is applied.
    pair.target.execute = real  # type: ignore[attr-defined]
    again = submit_to(pair.lake, "update", "dbo.cancelled", source_table="lake.s.changes", primary_keys=["id"])
    assert [r.status for r in engine.process_once()] == ["completed"]
    assert pair.target_rows("dbo.cancelled", ["id", "name"], "id") == [(1, "new-1"), (2, "new-2"), (3, "new-3")]
    assert again.event_id in pair.ledger_ids()


@needs_mssql
def test_sqlserver_a_paused_target_waits_and_resumes(bridge_home: Path) -> None:
    pair = sqlserver_pair(bridge_home, "pymssql")
    event_id = submit_to(pair.lake, "update", "dbo.cancelled", source_table="lake.s.changes",
                         primary_keys=["id"]).event_id
    pause_targets(pair.lake, "dbo.cancel*", "maintenance")
    assert pair.engine().process_once() == []
    assert pair.target_rows("dbo.cancelled", ["id", "name"], "id") == SQLSERVER_ROWS
    resume_targets(pair.lake)
    assert [r.event_id for r in pair.engine().process_once()] == [event_id]
    assert pair.target_rows("dbo.cancelled", ["name"], "id") == [("new-1",), ("new-2",), ("new-3",)]


# -- Databricks --------------------------------------------------------------------------------------
dbx = test_databricks.dbx  # the fixture: a Databricks pair (the stand-in, or a workspace)
needs_databricks = test_databricks.needs_databricks


@needs_databricks
def test_databricks_init_creates_the_control_table_and_adds_it_to_an_old_install(dbx: DatabricksPair) -> None:
    assert dbx.lake.list_pauses() == []
    dbx.run(f"DROP TABLE {dbx.lake._control}")  # type: ignore[attr-defined]
    with pytest.raises(NotInitialized, match="run `bridge init`"):
        dbx.lake.list_pauses()
    assert any("created control table" in line for line in dbx.lake.init_event_table(upgrade=False))
    assert dbx.lake.list_pauses() == []


@needs_databricks
def test_databricks_pause_resume_and_cancel_requests_round_trip(dbx: DatabricksPair) -> None:
    first = pause_targets(dbx.lake, "dbo.*", "it's 'quoted' -- maintenance", by="ana@vm")
    pause_targets(dbx.lake)
    again = pause_targets(dbx.lake, "DBO.*", "longer", by="bea@vm")
    assert [p.reason for p in again.replaced] == [first.pause.reason]
    pauses = dbx.lake.list_pauses()
    assert [(p.target, p.reason, p.paused_by) for p in pauses] == [("*", None, WHO), ("DBO.*", "longer", "bea@vm")]
    assert pauses[1].paused_at == again.pause.paused_at
    held = resume_targets(dbx.lake, "dbo.*")
    assert [p.target for p in held.resumed] == ["DBO.*"] and [p.target for p in held.still_paused_by] == ["*"]
    assert [p.target for p in resume_targets(dbx.lake).resumed] == ["*"] and dbx.lake.list_pauses() == []

    event = submit_to(dbx.lake, "delete", "dbo.t", filter_conditions={"k": 1})
    claimed = dbx.engine(worker_id="w1").claim_next_event()
    assert claimed is not None and claimed.claim_token
    [asked] = cancel_events(dbx.lake, [event.event_id], wait=None, by="ana@vm")
    assert asked.outcome == "requested"
    request = dbx.lake.cancel_request(event.event_id, claimed.claim_token)
    assert request is not None and request.requested_by == "ana@vm"
    assert dbx.lake.cancel_request(event.event_id, "another-claim") is None
    dbx.lake.forget_cancel_request(event.event_id, claimed.claim_token)
    assert dbx.lake.cancel_request(event.event_id, claimed.claim_token) is None


@needs_databricks
def test_databricks_a_worker_skips_a_paused_target_and_stops_a_cancelled_event(dbx: DatabricksPair) -> None:
    dbx.create_source(NEW_USERS, {"username": "text"}, [("ana",), ("bruno",)])
    for name in ("dbo.held", "dbo.free"):
        dbx.create_target(name, [Col("username", "text", pk=True)])
    held = submit_to(dbx.lake, "insert", "dbo.held", source_table=NEW_USERS, primary_keys=["username"])
    free = submit_to(dbx.lake, "insert", "dbo.free", source_table=NEW_USERS, primary_keys=["username"])
    pause_targets(dbx.lake, "dbo.held")
    engine = dbx.engine()
    assert [r.event_id for r in engine.process_once()] == [free.event_id]
    assert dbx.lake.get_event(held.event_id).status == "pending"  # type: ignore[union-attr]
    resume_targets(dbx.lake)
    claimed = engine.claim_next_event()
    assert claimed is not None and claimed.event_id == held.event_id
    cancel_events(dbx.lake, [held.event_id], wait=None, by="ana@vm")
    result = engine.process_event(claimed)  # seen before applying
    assert result.status == "failed" and (result.error_message or "").startswith("cancelled by ana@vm at ")
    assert dbx.target_rows("dbo.held", ["username"], "username") == []
    assert dbx.target_rows("dbo.free", ["username"], "username") == [("ana",), ("bruno",)]
