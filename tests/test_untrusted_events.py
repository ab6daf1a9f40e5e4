"""Event rows are untrusted input (issue 16), on every adapter pair: one event per id, bridge's own
and the servers' system tables out of reach, allowed_sources, and malformed rows that fail at once.

Each test writes rows into the event table as a job's own SQL would (or a hostile one), runs the
real engine, and checks the event rows, the target tables and the ledger.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from bridge_cli import api
from bridge_cli.errors import EventNotFound, ValidationError
from bridge_cli.events import Operation, SubmitRequest
from bridge_cli.lakes import workers_table_name
from tests.backends import Col, DatabricksPair, LocalPair
from tests.helpers import submit

USERS = "dbo.users"
USER_COLUMNS = [Col("username", "text", pk=True), Col("is_user", "bool")]
SOURCE = "c.s.newusers"
SOURCE_COLUMNS = {"username": "text", "is_user": "bool"}


def users(pair: LocalPair) -> list[str]:
    return [r[0] for r in pair.target_rows(USERS, ["username"], order_by="username")]


def seeded(pair: LocalPair) -> None:
    """Target users a, b, c; a source of 2 new users d, e."""
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source("c.s.seed", SOURCE_COLUMNS, [("a", True), ("b", True), ("c", True)])
    submit(pair.lake, "insert", USERS, source_table="c.s.seed", primary_keys=["username"])
    assert [r.status for r in pair.engine().process_once()] == ["completed"]
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("d", True), ("e", False)])


def process(pair: LocalPair) -> dict[str, str]:
    return {r.event_id: r.status for r in pair.engine().process_once()}


# -- 1. one event per id ----------------------------------------------------------------------
def test_two_rows_with_one_event_id_apply_nothing_and_both_fail(pair: LocalPair) -> None:
    """The issue's repro: an INSERT, then a hand-written DELETE row with the same id and a better
    priority. Today the DELETE ran under the INSERT's id and both rows read completed."""
    seeded(pair)
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"],
                   rows_expected=2)
    pair.insert_raw_event({
        "event_id": event.event_id, "operation": "DELETE", "target_table": USERS,
        "primary_keys": ["username"], "filter_conditions": json.dumps({"username": ["b", "c"]}),
        "priority": 1, "status": "pending",
    })
    ledger_before = pair.ledger_ids()
    process(pair)
    rows = pair.lake.get_events(event.event_id)
    assert len(rows) == 2
    wanted = f"event_id {event.event_id} appears 2 times in the event table; nothing was applied"
    assert [(r.status, r.error_message, r.rows_affected) for r in rows] == [("failed", wanted, None)] * 2
    assert users(pair) == ["a", "b", "c"]  # neither the DELETE nor the INSERT ran
    assert pair.ledger_ids() == ledger_before
    assert max(r.attempts or 0 for r in rows) == 1  # failed at once, never retried
    # What `status` and `wait` read: failed, with every row's status counted.
    shown = api.get_event(pair.lake, event.event_id)
    assert shown.status == "failed" and "appears 2 times" in (shown.error_message or "")


def test_a_copy_of_a_completed_events_id_fails_and_the_completed_event_is_kept(pair: LocalPair) -> None:
    """A row written later with the id of an applied event is refused (today it was 'completed'
    from the ledger without doing anything); the applied event's row stays as it was."""
    seeded(pair)
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    assert process(pair) == {event.event_id: "completed"}
    pair.insert_raw_event({
        "event_id": event.event_id, "operation": "DELETE", "target_table": USERS,
        "primary_keys": ["username"], "filter_conditions": json.dumps({"username": "a"}),
        "status": "pending",
    })
    assert process(pair) == {event.event_id: "failed"}
    statuses = sorted((r.status, r.rows_affected) for r in pair.lake.get_events(event.event_id))
    assert statuses == [("completed", 2), ("failed", None)]
    assert users(pair) == ["a", "b", "c", "d", "e"]
    shown = api.get_event(pair.lake, event.event_id)
    assert shown.status == "failed" and "1 completed, 1 failed" in (shown.error_message or "")


# -- 2. bridge's own tables and the servers' system tables ------------------------------------
PROTECTED_TARGETS = [
    ("ledger", "LEDGER", "bridge's ledger"),  # the pair's ledger_table
    ("ledger-any-case", "[LEDGER-UPPER]", "bridge's ledger"),
    ("stage", "bridge.bridge_stage_0123456789abcdef", "staging tables"),
    ("event-table", "EVENTS", "event table"),  # the pair's event table, as schema.table
    ("workers-table", "WORKERS", "workers table"),
    ("sys", "sys.objects", "belongs to the server"),
    ("information-schema", "INFORMATION_SCHEMA.TABLES", "belongs to the server"),
    ("guest", "guest.t", "belongs to the server"),
    ("sqlite-internal", "dbo.sqlite_sequence", "belong to SQLite"),
]


@pytest.mark.parametrize("target,why", [p[1:] for p in PROTECTED_TARGETS], ids=[p[0] for p in PROTECTED_TARGETS])
def test_bridges_own_and_system_tables_are_refused_as_targets_whatever_allowed_targets_says(
    pair: LocalPair, target: str, why: str
) -> None:
    seeded(pair)
    ledger = pair.target.ledger
    if target == "LEDGER":
        target = str(ledger)
    elif target == "[LEDGER-UPPER]":
        target = f"[{ledger.schema.upper()}].[{ledger.table.upper()}]"
    elif target in ("EVENTS", "WORKERS"):
        table = pair.lake.event_table  # type: ignore[attr-defined]
        table = table if target == "EVENTS" else workers_table_name(table)
        target = f"{table.schema}.{table.table}"
    ledger_before = pair.ledger_ids()
    request = SubmitRequest(Operation.DELETE, target, ("event_id",), filter_conditions={"event_id": "x"})
    with pytest.raises(ValidationError, match=why):
        api.submit_event(pair.lake, request, pair.settings)
    # Written by hand, with a filter matching everything: fails on its first attempt.
    pair.insert_raw_event({
        "event_id": "hostile-1", "operation": "DELETE", "target_table": target,
        "primary_keys": ["event_id"], "filter_conditions": json.dumps({"event_id": ledger_before}),
        "status": "pending", "priority": 1,
    })
    assert process(pair) == {"hostile-1": "failed"}
    stored = pair.lake.get_event("hostile-1")
    assert stored is not None and why in (stored.error_message or "") and stored.attempts == 1
    assert pair.ledger_ids() == ledger_before


def test_the_event_and_workers_tables_are_refused_as_sources(pair: LocalPair) -> None:
    seeded(pair)
    events = pair.lake.event_table  # type: ignore[attr-defined]
    for table, why in ((events, "bridge's event table"), (workers_table_name(events), "bridge's workers table")):
        source = ".".join(f"`{p}`" for p in table.parts)
        request = SubmitRequest(Operation.INSERT, USERS, ("username",), source_table=source)
        with pytest.raises(ValidationError, match=why):
            api.submit_event(pair.lake, request, pair.settings)


# -- 3. allowed_sources ------------------------------------------------------------------------
def test_allowed_sources_refuses_other_lake_tables_in_submit_and_in_the_worker(pair: LocalPair) -> None:
    seeded(pair)
    pair.create_source("secret.hr.salaries", SOURCE_COLUMNS, [("boss", True)])
    pair.reconfigure(allowed_sources=("c.s.*",))
    request = SubmitRequest(Operation.INSERT, USERS, ("username",), source_table=pair.source("secret.hr.salaries"))
    refused = f"source table {pair.shown('secret.hr.salaries')} is not allowed .*allowed_sources: {pair.source('c.s.*')}"
    with pytest.raises(ValidationError, match=re.escape(refused).replace(re.escape(".*"), ".*")):
        api.submit_event(pair.lake, request, pair.settings)
    with pytest.raises(ValidationError, match="allowed_sources"):
        api.submit_event(pair.lake, request, pair.settings, check_with=pair.target)
    pair.insert_raw_event({
        "event_id": "copy-secrets", "operation": "INSERT", "source_table": "secret.hr.salaries",
        "target_table": USERS, "primary_keys": ["username"], "status": "pending",
    })
    allowed = api.submit_event(pair.lake, dataclasses.replace(request, source_table=pair.source(SOURCE)), pair.settings)
    assert process(pair) == {"copy-secrets": "failed", allowed.event_id: "completed"}
    assert users(pair) == ["a", "b", "c", "d", "e"]


# -- 8. malformed or oversized input fails at once ---------------------------------------------
MALFORMED = [
    ("huge-integer", {"filter_conditions": '{"username": 123456789012345678901234567890}'},
     "filter_conditions is not valid JSON: number 123456789012345678901234567890 is out of range"),
    ("deep-nesting", {"metadata": "[" * 1000}, "metadata nests deeper than 32 levels"),
    ("100000-brackets", {"metadata": "[" * 100_000}, "metadata is 100,000 characters long; at most 65,536"),
    ("nan", {"metadata": '{"a": NaN}'}, "metadata is not valid JSON: NaN is not JSON"),
    ("infinity", {"filter_conditions": '{"username": Infinity}'}, "Infinity is not JSON"),
    ("float-overflow", {"filter_conditions": '{"username": 1e999}'}, "out of range"),
    ("oversized", {"metadata": json.dumps({"note": "x" * 70_000})}, "metadata is 70,012 characters long; at most 65,536"),
    ("repeated-key", {"filter_conditions": '{"username": "a", "username": "b"}'}, "key 'username' appears twice"),
    ("not-an-object", {"filter_conditions": '["a"]'}, "filter_conditions must be a JSON object"),
    ("wrong-type-identity", {"metadata": '{"identity_insert": "yes"}'}, "metadata 'identity_insert' must be true or false"),
    ("nul-in-text", {"filter_conditions": '{"username": "a\x00"}'}, "filter_conditions holds a NUL character"),
    ("control-in-id", {"event_id": "bad\x1b[2Jid"}, "event_id holds control"),
    ("long-id", {"event_id": "x" * 201}, "event_id is 201 characters long; at most 200"),
    ("null-key", {"primary_keys": ["username", None]}, "primary_keys holds a null"),
    ("repeated-key-column", {"primary_keys": ["username", "USERNAME"]}, "primary_keys names a column twice"),
]


@pytest.mark.parametrize("fields,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_or_oversized_rows_fail_on_their_first_attempt_with_one_line(
    pair: LocalPair, fields: dict, message: str
) -> None:
    seeded(pair)
    row = {"event_id": "malformed-1", "operation": "DELETE", "target_table": USERS,
           "primary_keys": ["username"], "filter_conditions": json.dumps({"username": "a"}),
           "status": "pending", "priority": 1, **fields}
    if "filter_conditions" not in fields and "primary_keys" not in fields and "event_id" not in fields:
        row["operation"], row["source_table"], row["filter_conditions"] = "INSERT", SOURCE, None
    pair.insert_raw_event(row)
    ledger_before = pair.ledger_ids()
    results = process(pair)
    assert results == {row["event_id"]: "failed"}
    [stored] = pair.lake.get_events(row["event_id"])
    assert stored.attempts == 1 and stored.status == "failed"
    assert message in (stored.error_message or ""), stored.error_message
    assert "\n" not in (stored.error_message or "") and len(stored.error_message or "") < 400
    assert users(pair) == ["a", "b", "c"] and pair.ledger_ids() == ledger_before


def test_submit_refuses_what_the_worker_would_fail_as_malformed(pair: LocalPair) -> None:
    for request, message in (
        (SubmitRequest(Operation.DELETE, USERS, ("username",), filter_conditions={"username": 10**30}),
         "out of range"),
        (SubmitRequest(Operation.DELETE, USERS, ("username",), filter_conditions={"username": "a"},
                       metadata={"a": float("nan")}), "cannot be stored as JSON"),
    ):
        with pytest.raises(ValidationError, match=message):
            api.submit_event(pair.lake, request, pair.settings)
    assert pair.lake.list_events(None, 10) == []


def test_an_unknown_id_is_not_found(pair: LocalPair) -> None:
    with pytest.raises(EventNotFound):
        api.get_event(pair.lake, "no-such-event")


def test_an_event_row_whose_text_is_not_utf8_blocks_nothing(pair: LocalPair) -> None:
    """Bytes that are not UTF-8 in a STRING column (Spark stores what it is given; DuckDB and the
    seed's own writers cannot) reach bridge as U+FFFD through the connector here: the row is read
    as that text, ends on its first attempt having changed nothing, and the events after it are
    processed (a row the lake could not decode would stop every claim)."""
    if not isinstance(pair, DatabricksPair):
        pytest.skip("only a Databricks table can hold a STRING that is not UTF-8")
    seeded(pair)
    from bridge_cli.lakes.databricks import COLUMN_TYPES

    values = {"event_id": "'bad-bytes'", "operation": "'DELETE'", "target_table": "'dbo.users'",
              "primary_keys": "array('username')", "status": "'pending'", "priority": "1",
              # {"username": "\xff"}: one byte that is not UTF-8
              "filter_conditions": "CAST(X'7B22757365726E616D65223A2022FF227D' AS STRING)"}
    listed = ", ".join(values.get(c, f"CAST(NULL AS {t})") for c, t in COLUMN_TYPES.items())
    pair.run(f"INSERT INTO {pair.lake._table} ({', '.join(COLUMN_TYPES)}) VALUES ({listed})")  # type: ignore[attr-defined]
    good = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    results = process(pair)
    assert results[good.event_id] == "completed"
    [stored] = pair.lake.get_events("bad-bytes")
    assert stored.attempts == 1 and stored.status in ("completed", "failed"), stored
    assert stored.rows_affected in (None, 0), stored  # {"username": "\ufffd"} matches no user
    if stored.status == "failed":  # a lake that hands over what is not text: said, in one line
        assert "filter_conditions" in (stored.error_message or "")
    assert users(pair) == ["a", "b", "c", "d", "e"]
