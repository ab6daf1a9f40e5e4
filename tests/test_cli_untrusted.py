"""Untrusted event rows as a person or a script sees them (issue 16): `status` and `wait` on an id
written twice, protected tables and allowed_sources in `submit`, and the jobs API's checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bridge_cli.lakes.duckdb import DuckDBLake
from tests.backends import Col, LocalPair
from tests.test_cli import run, show, submit


def _users(local: LocalPair) -> None:
    local.create_source("c.s.newusers", {"username": "text"}, [("d",), ("e",)])
    local.create_target("dbo.users", [Col("username", "text", pk=True)])
    local.create_target("dbo.types", [Col("id", "int", pk=True)])


def test_status_lists_every_row_of_an_id_written_twice_and_wait_exits_1(local: LocalPair) -> None:
    _users(local)
    event_id = submit("insert", "--source", "c.s.newusers", "--target", "dbo.users", "--pk", "username",
                      "--expected", "2")
    local.insert_raw_event({
        "event_id": event_id, "operation": "DELETE", "target_table": "dbo.users", "priority": 1,
        "primary_keys": ["username"], "filter_conditions": '{"username": ["b", "c"]}', "status": "pending",
    })
    processed = run("process-once")
    assert processed.exit_code == 0, show(processed)
    assert "appears 2 times in the event table; nothing was applied" in processed.stdout

    listed = run("status", event_id)
    assert listed.exit_code == 0, show(listed)
    lines = [line for line in listed.stdout.splitlines() if line.startswith(event_id)]
    assert len(lines) == 2 and all("failed" in line for line in lines), show(listed)
    assert f"event_id {event_id} appears 2 times in the event table (2 failed)" in listed.stderr

    as_json = run("status", event_id, "--json")
    rows = json.loads(as_json.stdout)
    assert [(r["operation"], r["status"]) for r in rows] == [("DELETE", "failed"), ("INSERT", "failed")]

    waited = run("wait", event_id, "--timeout", "5")
    assert waited.exit_code == 1, show(waited)
    assert "appears 2 times" in waited.stderr
    assert local.target_rows("dbo.users", ["username"], "username") == []


def test_submit_check_refuses_the_ledger_as_a_target(local: LocalPair) -> None:
    """`submit delete --target bridge.applied_events ... --check` exited 0 under the default
    allowed_targets."""
    _users(local)
    result = run("submit", "delete", "--target", "bridge.applied_events", "--pk", "event_id",
                 "--filter", '{"event_id": "insert-0123456789ab"}', "--check")
    assert result.exit_code == 2, show(result)
    assert "target table bridge.applied_events is refused: it is bridge's ledger" in result.stderr
    assert local.lake.list_events(None, 10) == []


def test_submit_refuses_a_source_outside_allowed_sources(local: LocalPair) -> None:
    _users(local)
    result = run("submit", "insert", "--source", "c.s.newusers", "--target", "dbo.users", "--pk", "username",
                 env={"BRIDGE_ALLOWED_SOURCES": "`other-cat`.*"})
    assert result.exit_code == 2, show(result)
    assert "source table c.s.newusers is not allowed by this profile (allowed_sources: `other-cat`.*)" in result.stderr
    allowed = run("submit", "insert", "--source", "c.s.newusers", "--target", "dbo.users", "--pk", "username",
                  env={"BRIDGE_ALLOWED_SOURCES": "c.*"})
    assert allowed.exit_code == 0, show(allowed)


def test_bracketed_allowed_targets_name_the_table_not_a_glob_class(local: LocalPair) -> None:
    """`BRIDGE_ALLOWED_TARGETS='[dbo].[users]'` refused dbo.users and accepted o.s (glob classes)."""
    _users(local)
    env = {"BRIDGE_ALLOWED_TARGETS": "[dbo].[users]"}
    ok = run("submit", "insert", "--source", "c.s.newusers", "--target", "dbo.users", "--pk", "username", env=env)
    assert ok.exit_code == 0, show(ok)
    refused = run("submit", "delete", "--target", "o.s", "--pk", "id", "--filter", '{"id": 1}', env=env)
    assert refused.exit_code == 2, show(refused)
    assert "not allowed by this profile (allowed_targets: [dbo].[users])" in refused.stderr


JOB = """
from bridge_cli.jobs import sync_delete_from_sql
try:
    sync_delete_from_sql('dbo.types', ['id'], {'id': 1})
except Exception as exc:
    print(f"refused: {type(exc).__name__}: {exc}")
"""


def test_the_jobs_api_checks_allowed_targets_as_bridge_submit_does(local: LocalPair, bridge_home: Path) -> None:
    """The README says the job functions are validated like `bridge submit`; they skipped
    allowed_targets and wrote the event ("Evento creado"), which the worker then failed."""
    _users(local)
    env = {**os.environ, "BRIDGE_HOME": str(bridge_home), "BRIDGE_ALLOWED_TARGETS": "dbo.users"}
    done = subprocess.run([sys.executable, "-c", JOB], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Evento creado" not in done.stdout
    assert ("refused: ValidationError: target table dbo.types is not allowed by this profile "
            "(allowed_targets: dbo.users)") in done.stdout
    assert DuckDBLake(local.settings).list_events(None, 10) == []
