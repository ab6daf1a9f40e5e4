"""UPSERT and REPLACE from the shell and from a job: `bridge submit upsert|replace`, what status,
process-once and the worker's log show of their counts, the jobs API, the metrics, and the
upgrade of an event table made before the `details` column existed. (The operations' semantics on
every lake/target pair are in tests/test_contract_sync.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from bridge_cli import jobs
from bridge_cli.errors import ValidationError
from bridge_cli.metrics import WorkerMetrics
from bridge_cli.outcomes import EventResult
from tests.backends import Col, LocalPair
from tests.helpers import submit
from tests.test_cli import TERMINAL, run, show

TARGET = "dbo.ventas"
DAY = "lakecat.sales.hoy"
MARCH = "lakecat.sales.marzo"
COLUMNS = {"id": "int", "mes": "text", "total": "int"}


@pytest.fixture
def ventas(local: LocalPair) -> LocalPair:
    """A target of 4 sales (2 in March, 2 in April) and two sources: today's batch (one existing
    id changed, one the same, one new) and a reload of March."""
    local.create_target(TARGET, [Col("id", "int", pk=True), Col("mes", "text"), Col("total", "int")])
    local.insert_target_rows(TARGET, ["id", "mes", "total"],
                             [(1, "03", 10), (2, "03", 20), (3, "04", 30), (4, "04", 40)])
    local.create_source(DAY, COLUMNS, [(1, "03", 11), (3, "04", 30), (5, "04", 50)])
    local.create_source(MARCH, COLUMNS, [(1, "03", 100), (6, "03", 600)])
    return local


def submitted(*args: str, env: dict[str, str | None] | None = None) -> str:
    result = run("submit", *args, "-q", env=env)
    assert result.exit_code == 0, show(result)
    return result.stdout.strip()


def rows(pair: LocalPair) -> list[tuple[int, str, int]]:
    return pair.target_rows(TARGET, ["id", "mes", "total"], "id")


def test_submit_upsert_then_status_shows_what_it_did(ventas: LocalPair) -> None:
    event_id = submitted("upsert", "--source", DAY, "--target", TARGET, "--pk", "id",
                         "--metadata", '{"changed_only": true}', "--expected", "3")
    assert event_id.startswith("upsert-")
    ran = run("process-once", "--json")
    assert ran.exit_code == 0, show(ran)
    [result] = json.loads(ran.stdout)
    assert (result["status"], result["rows_affected"]) == ("completed", 2)
    assert result["details"] == {"inserted": 1, "updated": 1, "unchanged": 1}
    assert rows(ventas) == [(1, "03", 11), (2, "03", 20), (3, "04", 30), (4, "04", 40), (5, "04", 50)]

    status = run("status", event_id, "--json")
    assert status.exit_code == 0, show(status)
    data = json.loads(status.stdout)
    assert data["operation"] == "UPSERT" and data["details"] == {"inserted": 1, "updated": 1, "unchanged": 1}
    # rows_expected 3, rows_affected 2: the unchanged row is why, and the warning says so.
    assert data["discrepancy"] == 1 and "changed_only" in data["warning"]
    table = run("status", event_id, env=TERMINAL)
    assert table.exit_code == 0, show(table)
    assert '{"inserted": 1, "updated": 1, "unchanged": 1}' in table.stdout


def test_submit_replace_reloads_the_slice_and_counts_both_sides(ventas: LocalPair) -> None:
    event_id = submitted("replace", "--source", MARCH, "--target", TARGET, "--pk", "id",
                         "--filter", '{"mes": "03"}')
    ran = run("process-once")
    assert ran.exit_code == 0, show(ran)
    data = json.loads(run("status", event_id, "--json").stdout)
    assert (data["status"], data["rows_affected"], data["details"]) == (
        "completed", 2, {"deleted": 2, "inserted": 2})
    assert rows(ventas) == [(1, "03", 100), (3, "04", 30), (4, "04", 40), (6, "03", 600)]


def test_whole_table_replace_from_the_shell_needs_its_metadata(ventas: LocalPair) -> None:
    refused = run("submit", "replace", "--source", MARCH, "--target", TARGET, "--pk", "id", "--filter", "{}")
    assert refused.exit_code == 2, show(refused)
    assert '"whole_table": true' in refused.stderr
    missing = run("submit", "replace", "--source", MARCH, "--target", TARGET, "--pk", "id")
    assert missing.exit_code == 2 and "REPLACE needs --filter" in missing.stderr, show(missing)
    event_id = submitted("replace", "--source", MARCH, "--target", TARGET, "--pk", "id", "--filter", "{}",
                         "--metadata", '{"whole_table": true}')
    assert run("process-once").exit_code == 0
    data = json.loads(run("status", event_id, "--json").stdout)
    # 4 rows replaced by 2: exactly the default ratio of 0.5, so allowed.
    assert (data["status"], data["details"]) == ("completed", {"deleted": 4, "inserted": 2})
    assert rows(ventas) == [(1, "03", 100), (6, "03", 600)]


def test_submit_refuses_what_the_worker_would_refuse(ventas: LocalPair) -> None:
    for args, words in [
        (("upsert", "--target", TARGET, "--pk", "id"), "UPSERT needs --source"),
        (("upsert", "--source", DAY, "--target", TARGET, "--pk", "id", "--filter", '{"id": 1}'),
         "only for DELETE and REPLACE"),
        (("upsert", "--source", DAY, "--target", TARGET, "--pk", "id", "--metadata", '{"changed_only": "yes"}'),
         "metadata 'changed_only' must be true or false"),
        (("replace", "--source", MARCH, "--target", TARGET, "--pk", "id", "--filter", '{"mes": "03"}',
          "--metadata", '{"whole_table": true}'), "takes empty filter_conditions"),
    ]:
        refused = run("submit", *args)
        assert refused.exit_code == 2, show(refused)
        assert words in refused.stderr, show(refused)
    # --check: a slice column the source lacks cannot be checked row by row.
    local_source = "lakecat.sales.sin_mes"
    ventas.create_source(local_source, {"id": "int", "total": "int"}, [(1, 5)])
    checked = run("submit", "replace", "--source", local_source, "--target", TARGET, "--pk", "id",
                  "--filter", '{"mes": "03"}', "--check")
    assert checked.exit_code == 2, show(checked)
    assert "REPLACE filter_conditions column(s) mes not in source table" in checked.stderr
    # The profile's allowed_targets hold for the new operations as for the old.
    outside = run("submit", "upsert", "--source", DAY, "--target", TARGET, "--pk", "id",
                  env={"BRIDGE_ALLOWED_TARGETS": "dbo.otra"})
    assert outside.exit_code == 2 and "allowed_targets" in outside.stderr, show(outside)
    assert run("status", "--json").stdout.strip() == "[]"  # nothing was written


def test_the_worker_log_line_and_metrics_carry_the_counts(
    ventas: LocalPair, caplog: pytest.LogCaptureFixture
) -> None:
    # Through the library: a CLI run would replace the root logger's handlers (caplog's too).
    submit(ventas.lake, "upsert", TARGET, source_table=DAY, primary_keys=["id"])
    metrics = WorkerMetrics()
    with caplog.at_level(logging.INFO, logger="bridge"):
        [result] = ventas.engine().process_once(on_result=metrics.on_result)
    assert isinstance(result, EventResult)
    assert result.details == {"inserted": 1, "updated": 2, "unchanged": 0}
    assert any("completed: 3 rows (inserted 1, updated 2, unchanged 0)" in r.getMessage() for r in caplog.records)
    text = generate_latest(metrics.registry).decode()
    assert 'bridge_sync_rows_total{operation="UPSERT",outcome="inserted"} 1.0' in text
    assert 'bridge_sync_rows_total{operation="UPSERT",outcome="updated"} 2.0' in text


def test_jobs_api_submits_upsert_and_replace(ventas: LocalPair, capsys: pytest.CaptureFixture[str]) -> None:
    jobs.use(lake=ventas.lake, settings=ventas.settings)
    try:
        upsert_id = jobs.sync_upsert_to_sql(DAY, TARGET, ["id"], rows_expected=3, changed_only=True)
        assert f"[UPSERT] Evento creado: {upsert_id}" in capsys.readouterr().out
        replace_id = jobs.sync_replace_in_sql(MARCH, TARGET, ["id"], {"mes": "03"}, metadata={"job": "marzo"})
        with pytest.raises(ValidationError, match="whole_table"):
            jobs.sync_replace_in_sql(MARCH, TARGET, ["id"], {})
        whole_id = jobs.sync_replace_in_sql(MARCH, TARGET, ["id"], {}, whole_table=True, allow_shrink=True)
        stored = {e: json.loads(ventas.lake.get_event(e).metadata or "null")
                  for e in (upsert_id, replace_id, whole_id)}
        assert stored == {upsert_id: {"changed_only": True}, replace_id: {"job": "marzo"},
                          whole_id: {"whole_table": True, "allow_shrink": True}}
        ventas.engine().process_once()
        assert jobs.wait_for_event(upsert_id, timeout_seconds=5, poll_interval=0.1)["rows_affected"] == 2
        assert jobs.check_event_status(replace_id)["status"] == "completed"
        assert jobs.check_event_status(whole_id)["rows_affected"] == 2
    finally:
        jobs.use()
    assert rows(ventas) == [(1, "03", 100), (6, "03", 600)]


def test_an_event_table_without_details_asks_for_upgrade_and_keeps_its_events(local: LocalPair) -> None:
    local.event_sql("INSERT INTO {events} (event_id, operation, target_table, status) "
                    "VALUES ('old-1', 'INSERT', 'dbo.t', 'completed')")
    local.event_sql("ALTER TABLE {events} DROP COLUMN details")
    refused = run("init")
    assert refused.exit_code == 5, show(refused)
    assert "details" in refused.stderr and "bridge init --upgrade" in refused.stderr
    worker = run("process-once")
    assert worker.exit_code == 5 and "bridge init --upgrade" in worker.stderr, show(worker)
    upgraded = run("init", "--upgrade")
    assert upgraded.exit_code == 0, show(upgraded)
    data = json.loads(run("status", "old-1", "--json").stdout)
    assert (data["status"], data["details"]) == ("completed", None)


def test_a_raw_replace_without_a_slice_fails_at_once_changing_nothing(ventas: LocalPair, bridge_home: Path) -> None:
    ventas.insert_raw_event({"event_id": "raw-1", "operation": "replace", "source_table": MARCH,
                             "target_table": TARGET, "primary_keys": ["id"], "status": "pending"})
    [result] = ventas.engine().process_once()
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.error_message is not None and "REPLACE needs filter_conditions" in result.error_message
    assert len(rows(ventas)) == 4 and ventas.ledger_ids() == []


def test_a_raw_upsert_with_a_filter_fails_at_once_rather_than_ignore_it(ventas: LocalPair) -> None:
    ventas.insert_raw_event({"event_id": "raw-2", "operation": "UPSERT", "source_table": DAY,
                             "target_table": TARGET, "primary_keys": ["id"], "status": "pending",
                             "filter_conditions": '{"mes": "04"}'})
    [result] = ventas.engine().process_once()
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.error_message == "UPSERT takes no filter_conditions (a slice to reload is a REPLACE)"
    assert rows(ventas) == [(1, "03", 10), (2, "03", 20), (3, "04", 30), (4, "04", 40)]
