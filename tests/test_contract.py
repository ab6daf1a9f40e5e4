"""The engine's contract: every scenario runs against each available lake/target pair."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from bridge_cli.events import Status
from bridge_cli.lakes import WorkerBeat
from tests.backends import Col, LocalPair
from tests.helpers import ManualClock, submit

USERS = "dbo.MarketScopeAccess"
USER_COLUMNS = [
    Col("id", "int", identity=True),
    Col("username", "text", unique=True, not_null=True),
    Col("is_user", "bool"),
    Col("is_admin", "bool"),
]
SOURCE = "mi-catalog.mi-schema.datos_nuevos"
SOURCE_COLUMNS = {"username": "text", "is_user": "bool", "is_admin": "bool"}


def users(pair: LocalPair) -> list[tuple]:
    return pair.target_rows(USERS, ["username", "is_user", "is_admin"], order_by="username")


def seed_users(pair: LocalPair, rows: list[tuple]) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source("seed.s.users", SOURCE_COLUMNS, rows)
    submit(pair.lake, "insert", USERS, source_table="seed.s.users", primary_keys=["username"])
    assert [r.status for r in pair.engine().process_once()] == ["completed"]


def process_all(pair: LocalPair, **kwargs):
    return {r.event_id: r for r in pair.engine(**kwargs).process_once()}


# -- INSERT ----------------------------------------------------------------------------------
def test_insert_adds_source_rows(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False), ("bruno", True, True)])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"],
                   rows_expected=2)
    result = process_all(pair)[event.event_id]
    assert result.status == "completed"
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed"
    assert (stored.rows_affected, stored.discrepancy, stored.warning) == (2, 0, None)
    assert stored.processed_at is not None and stored.error_message is None
    assert users(pair) == [("ana", 1, 0), ("bruno", 1, 1)]


def test_insert_skips_duplicate_and_existing_keys_and_reports_discrepancy(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False)])
    pair.create_source(SOURCE, SOURCE_COLUMNS, [
        ("ana", False, True),      # already in the target: skipped, not overwritten
        ("bruno", True, False),
        ("bruno", False, False),   # duplicate key in the source: one row per key
        ("carla", True, True),
    ])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"],
                   rows_expected=4)
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed"
    assert (stored.rows_affected, stored.discrepancy) == (2, 2)
    assert "duplicate" in stored.warning
    rows = users(pair)
    assert [r[0] for r in rows] == ["ana", "bruno", "carla"]
    assert rows[0] == ("ana", 1, 0)


def test_insert_without_expected_still_warns_about_skipped_rows(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False)])
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False), ("bea", True, False)])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert (stored.rows_affected, stored.discrepancy) == (1, None)
    assert "1 source row(s) not inserted" in stored.warning


def test_empty_source_fails_with_no_data_to_insert(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    assert stored.error_message.startswith("No data to insert")
    assert pair.ledger_ids() == []


def test_identity_column_in_source_fails_before_writing(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, {"id": "int", **SOURCE_COLUMNS}, [(7, "ana", True, False)])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    assert "Cannot insert explicit value for identity column id" in stored.error_message
    assert "identity_insert" in stored.error_message
    assert users(pair) == []


def test_identity_insert_metadata_keeps_source_identity_values(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, {"id": "int", **SOURCE_COLUMNS}, [(70, "ana", True, False)])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"],
                   metadata={"identity_insert": True})
    process_all(pair)
    assert pair.lake.get_event(event.event_id).status == "completed"
    assert pair.target_rows(USERS, ["id", "username"], "id") == [(70, "ana")]


@pytest.mark.parametrize("source", [
    "`mi-catalog`.`mi-schema`.datos_nuevos",
    "mi-catalog.mi-schema.datos_nuevos",
    "`mi-catalog`.mi-schema.`datos_nuevos`",
])
def test_hyphenated_names_work_with_or_without_backticks(pair: LocalPair, source: str) -> None:
    pair.create_target("mi-esquema.usuarios", [Col("username", "text", pk=True), Col("is_user", "bool")])
    pair.create_source(SOURCE, {"username": "text", "is_user": "bool"}, [("ana", True)])
    event = submit(pair.lake, "insert", "`mi-esquema`.usuarios", source_table=source,
                   primary_keys=["username"])
    process_all(pair)
    assert pair.lake.get_event(event.event_id).status == "completed"
    assert pair.target_rows("mi-esquema.usuarios", ["username"], "username") == [("ana",)]


# -- UPDATE ----------------------------------------------------------------------------------
def test_update_sets_non_key_columns_on_matching_rows(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False), ("bruno", True, False), ("carla", False, False)])
    pair.create_source("mi-catalog.mi-schema.cambios", {"username": "text", "is_admin": "bool"},
                       [("bruno", True), ("zoe", True)])
    event = submit(pair.lake, "update", USERS, source_table="mi-catalog.mi-schema.cambios",
                   primary_keys=["username"], rows_expected=2)
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed"
    assert (stored.rows_affected, stored.discrepancy) == (1, 1)
    assert "not found in the target" in stored.warning
    # is_user untouched (not in the source), is_admin set only for bruno
    assert users(pair) == [("ana", 1, 0), ("bruno", 1, 1), ("carla", 0, 0)]


def test_update_with_only_key_columns_fails_clearly(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False)])
    pair.create_source("c.s.keys_only", {"username": "text"}, [("ana",)])
    event = submit(pair.lake, "update", USERS, source_table="c.s.keys_only", primary_keys=["username"])
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    assert "nothing to set" in stored.error_message


# -- DELETE ----------------------------------------------------------------------------------
def test_delete_by_value_and_by_list(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False), ("bruno", False, False), ("carla", False, False),
                      ("diego", True, True)])
    one = submit(pair.lake, "delete", USERS, primary_keys=["username"],
                 filter_conditions={"username": "ana"})
    inactive = submit(pair.lake, "delete", USERS, primary_keys=["is_admin"],
                      filter_conditions={"is_admin": 0, "is_user": 0})
    listed = submit(pair.lake, "delete", USERS, filter_conditions={"username": ["diego", "nadie"]},
                    rows_expected=2)
    process_all(pair)
    assert pair.lake.get_event(one.event_id).rows_affected == 1
    assert pair.lake.get_event(inactive.event_id).rows_affected == 2
    stored = pair.lake.get_event(listed.event_id)
    assert (stored.rows_affected, stored.discrepancy) == (1, 1)
    assert "filter conditions" in stored.warning
    assert users(pair) == []


def test_delete_over_the_cap_deletes_nothing(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False), ("bruno", True, False), ("carla", True, False)])
    pair.reconfigure(max_delete_rows=2)
    event = submit(pair.lake, "delete", USERS, filter_conditions={"is_user": 1})
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed"
    assert "max_delete_rows=2" in stored.error_message and "split" in stored.error_message
    assert len(users(pair)) == 3
    assert event.event_id not in pair.ledger_ids()


# -- events written by the seed's own SQL ----------------------------------------------------
def test_event_inserted_with_the_seed_column_list_is_processed(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False)])
    # The seed's sync_insert_to_sql column list (no priority in its full example, no lifecycle).
    pair.insert_raw_event({
        "event_id": "sync-precios-1a2b3c4d", "operation": "INSERT",
        "source_table": "003-precios.bronze-data.sync_temp", "target_table": "dbo.MarketScopeAccess",
        "primary_keys": ["username"], "status": "pending", "rows_expected": 1,
        "metadata": '{"job": "sync_precios"}', "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
    })
    pair.create_source("003-precios.bronze-data.sync_temp", SOURCE_COLUMNS, [("ana", True, False)])
    process_all(pair)
    stored = pair.lake.get_event("sync-precios-1a2b3c4d")
    assert stored.status == "completed", stored.error_message
    assert (stored.rows_affected, stored.discrepancy, stored.attempts) == (1, 0, 1)
    assert users(pair) == [("ana", 1, 0)]


# -- hostile and broken events ---------------------------------------------------------------
BROKEN = [
    ("sql in target", dict(operation="INSERT", target_table="dbo.t; DROP TABLE x",
                           source_table=SOURCE, primary_keys=["username"]), "invalid target table 'dbo.t; DROP TABLE x'"),
    ("sql in source", dict(operation="INSERT", target_table=USERS,
                           source_table="c.s.t' OR 1=1 --", primary_keys=["username"]),
     "invalid source table"),
    ("unknown operation", dict(operation="MERGE", target_table=USERS, source_table=SOURCE,
                               primary_keys=["username"]), "unknown operation 'MERGE'"),
    ("filter key not a column", dict(operation="DELETE", target_table=USERS, source_table="",
                                     filter_conditions='{"nope": 1}'),
     "filter_conditions column 'nope' is not a column"),
    ("hostile filter key", dict(operation="DELETE", target_table=USERS, source_table="",
                                filter_conditions='{"username = username OR 1": 1}'),
     "invalid filter_conditions column"),
    ("malformed filter", dict(operation="DELETE", target_table=USERS, source_table="",
                              filter_conditions="{username: ana"), "not valid JSON"),
    ("filter not an object", dict(operation="DELETE", target_table=USERS, source_table="",
                                  filter_conditions='["ana"]'), "must be a JSON object"),
    ("delete without filter", dict(operation="DELETE", target_table=USERS, source_table=""),
     "DELETE needs filter_conditions"),
    ("malformed metadata", dict(operation="INSERT", target_table=USERS, source_table=SOURCE,
                                primary_keys=["username"], metadata="{oops"), "metadata is not valid JSON"),
    ("missing source", dict(operation="INSERT", target_table=USERS, source_table="c.s.nowhere",
                            primary_keys=["username"]), "source table c.s.nowhere does not exist"),
    ("missing target", dict(operation="INSERT", target_table="dbo.nowhere", source_table=SOURCE,
                            primary_keys=["username"]), "target table dbo.nowhere does not exist"),
    ("no keys", dict(operation="UPDATE", target_table=USERS, source_table=SOURCE),
     "needs primary_keys"),
    ("key not in source", dict(operation="INSERT", target_table=USERS, source_table=SOURCE,
                               primary_keys=["email"]), "primary key 'email' is not a column"),
    ("source column not in target", dict(operation="INSERT", target_table=USERS,
                                         source_table="c.s.extra", primary_keys=["username"]),
     "source column(s) email of c.s.extra do not exist in target"),
    ("two-part source", dict(operation="INSERT", target_table=USERS, source_table="s.t",
                             primary_keys=["username"]), "catalog.schema.table"),
]


@pytest.mark.parametrize("fields,message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_event_fails_clearly_changes_nothing_and_processing_goes_on(
    pair: LocalPair, fields: dict, message: str
) -> None:
    seed_users(pair, [("ana", True, False), ("bruno", True, False)])
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("carla", True, False)])
    pair.create_source("c.s.extra", {**SOURCE_COLUMNS, "email": "text"}, [("x", True, False, "x@")])
    if fields.get("source_table") and fields["source_table"] in message:  # where the lake put it
        message = message.replace(fields["source_table"], pair.shown(fields["source_table"]))
    pair.insert_raw_event({"event_id": "broken-1", "status": "pending", "priority": 1, **fields})
    good = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"],
                  priority=9)
    before_ledger = pair.ledger_ids()
    results = process_all(pair)
    broken = pair.lake.get_event("broken-1")
    assert broken.status == "failed"
    assert message in broken.error_message
    assert results["broken-1"].status == "failed"
    assert pair.lake.get_event(good.event_id).status == "completed"
    assert [r[0] for r in users(pair)] == ["ana", "bruno", "carla"]
    assert pair.ledger_ids() == sorted([*before_ledger, good.event_id])


def test_allowed_targets_refuses_other_tables(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False)])
    pair.reconfigure(allowed_targets=("staging.*",))
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "failed" and "allowed_targets" in stored.error_message
    assert users(pair) == []


# -- claiming, ordering, leases --------------------------------------------------------------
def test_claims_lower_priority_number_first_then_oldest(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False)])
    late_urgent = None
    order = []
    for name, priority in [("a", 5), ("b", 9), ("c", 5), ("d", 1)]:
        e = submit(pair.lake, "delete", USERS, filter_conditions={"username": name}, priority=priority)
        order.append((name, e.event_id))
        if name == "d":
            late_urgent = e.event_id
    results = list(process_all(pair))
    ids = dict(order)
    assert results == [late_urgent, ids["a"], ids["c"], ids["b"]]


# -- per-target order ------------------------------------------------------------------------
OTHER = "dbo.Other"


def test_events_for_one_target_apply_one_at_a_time_in_claim_order(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_target(OTHER, USER_COLUMNS)
    first = submit(pair.lake, "delete", USERS, filter_conditions={"username": "a"})
    # The same table written three ways: one line, whatever the spelling.
    second = submit(pair.lake, "delete", "`dbo`.`marketscopeaccess`", filter_conditions={"username": "b"})
    other = submit(pair.lake, "delete", OTHER, filter_conditions={"username": "c"}, priority=9)
    urgent = submit(pair.lake, "delete", "MarketScopeAccess", filter_conditions={"username": "d"}, priority=1)
    w1, w2, w3 = (pair.engine(worker_id=f"w{i}") for i in (1, 2, 3))

    # The urgent one heads its line; the users line is then busy, so w2 takes the other table.
    claimed = w1.claim_next_event()
    assert claimed is not None and claimed.event_id == urgent.event_id
    parallel = w2.claim_next_event()
    assert parallel is not None and parallel.event_id == other.event_id
    assert w3.claim_next_event() is None

    assert w1.process_event(claimed).status == "completed"
    claimed = w3.claim_next_event()
    assert claimed is not None and claimed.event_id == first.event_id
    assert w3.process_event(claimed).status == "completed"

    # A retry waiting out its backoff keeps its place: later events for its table wait too.
    pair.set_event_fields(second.event_id, next_attempt_at=datetime.now(timezone.utc) + timedelta(hours=1))
    later = submit(pair.lake, "delete", USERS, filter_conditions={"username": "e"})
    assert w1.claim_next_event() is None
    pair.set_event_fields(second.event_id, next_attempt_at=None)
    claimed = w1.claim_next_event()
    assert claimed is not None and claimed.event_id == second.event_id
    assert w1.process_event(claimed).status == "completed"
    claimed = w1.claim_next_event()
    assert claimed is not None and claimed.event_id == later.event_id


def test_a_failed_event_does_not_hold_its_target_back(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    broken = submit(pair.lake, "insert", USERS, source_table="c.s.missing", primary_keys=["username"])
    after = submit(pair.lake, "delete", USERS, filter_conditions={"username": "a"})
    results = process_all(pair)
    assert results[broken.event_id].status == "failed"
    assert results[after.event_id].status == "completed"


def test_ordering_none_lets_two_workers_take_one_target_at_once(pair: LocalPair) -> None:
    first = submit(pair.lake, "delete", USERS, filter_conditions={"username": "a"})
    second = submit(pair.lake, "delete", USERS, filter_conditions={"username": "b"})
    assert pair.engine(worker_id="w1").claim_next_event() is not None
    assert pair.engine(worker_id="w2").claim_next_event() is None
    pair.reconfigure(ordering="none")
    claimed = pair.engine(worker_id="w2").claim_next_event()
    assert claimed is not None and claimed.event_id == second.event_id
    assert {e.status for e in (pair.lake.get_event(first.event_id), claimed)} == {"processing"}


def test_a_claim_is_won_once(pair: LocalPair) -> None:
    event = submit(pair.lake, "delete", USERS, filter_conditions={"username": "x"})
    first = pair.engine(worker_id="w1").claim_next_event()
    second = pair.engine(worker_id="w2").claim_next_event()
    assert first is not None and first.event_id == event.event_id
    assert second is None
    stored = pair.lake.get_event(event.event_id)
    assert (stored.status, stored.worker_id, stored.attempts) == ("processing", "w1", 1)
    # A stale read cannot win either: the conditional update checks the claim token.
    assert not pair.lake.update_event_if(
        event.event_id, {"status": "pending", "claim_token": None}, {"worker_id": "w3"}
    )


def test_expired_lease_is_reclaimed_and_live_one_is_not(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False)])
    clock = ManualClock(pair.settings and None)
    clock.current = pair.lake.list_events(None, 1)[0].created_at + timedelta(hours=1)
    event = submit(pair.lake, "delete", USERS, filter_conditions={"username": "ana"})
    crashed = pair.engine(worker_id="crashed", clock=clock).claim_next_event()
    assert crashed is not None
    rescuer = pair.engine(worker_id="rescuer", clock=clock)
    clock.advance(pair.settings.lease_seconds - 1)
    assert rescuer.claim_next_event() is None
    clock.advance(2)
    reclaimed = rescuer.claim_next_event()
    assert reclaimed is not None and reclaimed.attempts == 2
    assert rescuer.process_event(reclaimed).status == "completed"
    # The crashed worker coming back cannot overwrite the result: its claim is gone.
    assert crashed.claim_token != reclaimed.claim_token
    late = pair.engine(worker_id="crashed", clock=clock).process_event(crashed)
    assert late.status == "lost"
    stored = pair.lake.get_event(event.event_id)
    assert (stored.status, stored.worker_id, stored.rows_affected) == ("completed", "rescuer", 1)


def test_an_event_whose_workers_keep_dying_fails_after_max_attempts(pair: LocalPair) -> None:
    pair.reconfigure(max_attempts=3)
    seed_users(pair, [("ana", True, False)])
    clock = ManualClock(pair.lake.list_events(None, 1)[0].created_at + timedelta(hours=1))
    event = submit(pair.lake, "delete", USERS, filter_conditions={"username": "ana"})
    for crash in range(3):  # each claim's worker dies: its lease runs out
        claimed = pair.engine(worker_id=f"crash{crash}", clock=clock).claim_next_event()
        assert claimed is not None and claimed.attempts == crash + 1
        clock.advance(pair.settings.lease_seconds + 1)
    last = pair.engine(worker_id="last", clock=clock)
    claimed = last.claim_next_event()
    assert claimed is not None
    assert last.process_event(claimed).status == "failed"
    stored = pair.lake.get_event(event.event_id)
    assert stored.error_message.startswith("gave up after 3 attempts: the last worker that claimed it")
    assert users(pair) == [("ana", 1, 0)]  # nothing applied
    assert event.event_id not in pair.ledger_ids()


def test_event_found_in_the_ledger_is_completed_without_applying_twice(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False), ("bea", True, False)])
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    process_all(pair)
    # A worker that died after the target commit but before recording the result leaves the
    # event pending again (here: put back by hand); the target meanwhile lost a row.
    pair.set_event_fields(event.event_id, status="pending", processed_at=None)
    pair.delete_target_rows(USERS, "username", "bea")
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert stored.status == "completed" and stored.rows_affected == 2
    assert "already applied" in stored.warning
    assert users(pair) == [("ana", 1, 0)]  # not re-inserted
    assert pair.ledger_ids() == [event.event_id]


def test_transient_lock_goes_back_to_pending_with_backoff_then_fails(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False)])
    pair.reconfigure(lock_timeout=0.1, max_attempts=2, retry_backoff=60)
    clock = ManualClock()
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    pair.set_event_fields(None, created_at=clock.now())
    with pair.lock_target(USERS):
        engine = pair.engine(clock=clock)
        [first] = engine.process_once()
        assert first.status == "pending"
        stored = pair.lake.get_event(event.event_id)
        assert stored.status == "pending" and stored.attempts == 1
        assert "transient" in stored.warning and "lock" in stored.warning.lower()
        assert stored.next_attempt_at > clock.now()
        assert engine.process_once() == []  # not due yet
        clock.advance(61)
        [second] = engine.process_once()
        assert second.status == "failed"
        assert "gave up after 2 attempts" in pair.lake.get_event(event.event_id).error_message
    assert users(pair) == []


def test_retry_succeeds_once_the_lock_is_gone(pair: LocalPair) -> None:
    pair.create_target(USERS, USER_COLUMNS)
    pair.create_source(SOURCE, SOURCE_COLUMNS, [("ana", True, False)])
    pair.reconfigure(lock_timeout=0.1, retry_backoff=0)
    event = submit(pair.lake, "insert", USERS, source_table=SOURCE, primary_keys=["username"])
    with pair.lock_target(USERS):
        [first] = pair.engine().process_once(max_events=1)
    assert first.status == "pending"
    process_all(pair)
    stored = pair.lake.get_event(event.event_id)
    assert (stored.status, stored.attempts, stored.rows_affected) == ("completed", 2, 1)
    assert users(pair) == [("ana", 1, 0)]


def test_event_table_without_lifecycle_columns_is_upgraded_in_place(pair: LocalPair) -> None:
    pair.recreate_seed_event_table()
    pair.insert_raw_event({
        "event_id": "old-1", "operation": "DELETE", "target_table": "dbo.MarketScopeAccess",
        "primary_keys": ["username"], "status": "pending",
        "filter_conditions": json.dumps({"username": "ana"}),
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
    })
    with pytest.raises(Exception, match="init --upgrade"):
        pair.lake.init_event_table(upgrade=False)
    done = pair.lake.init_event_table(upgrade=True)
    assert any("attempts" in line for line in done)
    assert pair.lake.init_event_table(upgrade=True) == [
        f"event table {pair.lake.event_table_name} is up to date"]
    pair.create_target(USERS, USER_COLUMNS)
    pair.insert_target_rows(USERS, ["username"], [("ana",), ("bea",)])
    process_all(pair)
    stored = pair.lake.get_event("old-1")
    assert (stored.status, stored.rows_affected) == (Status.COMPLETED.value, 1)
    assert users(pair) == [("bea", None, None)]


def test_a_constraint_error_mid_transaction_rolls_back_and_keeps_the_server_message(pair: LocalPair) -> None:
    pair.create_target("dbo.strict", [Col("username", "text", pk=True), Col("email", "text", not_null=True)])
    pair.create_source("c.s.sin_email", {"username": "text"}, [("ana",), ("bea",)])
    event = submit(pair.lake, "insert", "dbo.strict", source_table="c.s.sin_email", primary_keys=["username"])
    [result] = pair.engine().process_once()
    stored = pair.lake.get_event(event.event_id)
    assert result.status == stored.status == "failed"
    assert "email" in stored.error_message.lower() and "null" in stored.error_message.lower()
    assert pair.target_rows("dbo.strict", ["username"], "username") == []
    assert event.event_id not in pair.ledger_ids()


# -- queue control and retention -------------------------------------------------------------
def test_list_events_filters_by_target_operation_age_and_worker(pair: LocalPair) -> None:
    from bridge_cli.lakes import EventFilter

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    first = submit(pair.lake, "delete", "dbo.Users", filter_conditions={"u": "a"})
    bare = submit(pair.lake, "delete", "`USERS`", filter_conditions={"u": "b"})
    other = submit(pair.lake, "insert", "sales.orders", source_table=SOURCE, primary_keys=["id"])
    old = submit(pair.lake, "insert", "users", source_table=SOURCE, primary_keys=["username"])
    pair.set_event_fields(old.event_id, created_at=now - timedelta(days=3))
    pair.set_event_fields(other.event_id, worker_id="vm:9", status="processing")

    def listed(status: str | None = None, **where: object) -> list[str]:
        events = pair.lake.list_events(status, 100, EventFilter(**where))  # type: ignore[arg-type]
        return sorted(e.event_id for e in events)

    assert listed(target="dbo.users") == sorted([first.event_id, bare.event_id, old.event_id])
    assert listed(target="`DBO`.`users`") == listed(target="Users") == listed(target="dbo.users")
    assert listed(target="sales.orders") == [other.event_id]
    assert listed(operation="insert") == sorted([other.event_id, old.event_id])
    assert listed(since=now - timedelta(days=1)) == sorted([first.event_id, bare.event_id, other.event_id])
    assert listed(worker_id="vm:9") == [other.event_id]
    assert listed("pending", target="users", operation="INSERT") == [old.event_id]
    assert listed("processing", target="users") == []
    assert len(pair.lake.list_events(None, 2, EventFilter(target="dbo.users"))) == 2
    assert len(pair.lake.list_events(None, 100)) == 4


def test_cancel_and_a_claim_one_wins(pair: LocalPair) -> None:
    from bridge_cli.api import cancel_events

    won_by_claim = submit(pair.lake, "delete", "dbo.a", filter_conditions={"u": "a"})
    won_by_cancel = submit(pair.lake, "delete", "dbo.b", filter_conditions={"u": "b"})
    engine = pair.engine(worker_id="vm:1")
    assert engine.claim_next_event(won_by_claim.event_id) is not None
    stale_view = pair.lake.get_event(won_by_cancel.event_id)  # a worker read it as pending...
    results = cancel_events(pair.lake, [won_by_claim.event_id, won_by_cancel.event_id], by="ana@vm",
                            wait=None)
    assert [(r.cancelled, r.outcome) for r in results] == [(False, "requested"), (True, "cancelled")]
    assert "cancel requested of worker vm:1" in results[0].reason  # its worker is asked to stop it
    # ...and its claim, made after the cancel, loses.
    assert not pair.lake.update_event_if(
        won_by_cancel.event_id, {"status": stale_view.status, "claim_token": stale_view.claim_token},
        {"status": "processing", "claim_token": "t", "worker_id": "vm:2"},
    )
    cancelled = pair.lake.get_event(won_by_cancel.event_id)
    assert cancelled.status == "failed" and cancelled.error_message.startswith("cancelled by ana@vm at ")
    assert pair.lake.get_event(won_by_claim.event_id).status == "processing"


def test_delete_finished_events_then_their_ledger_rows(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False)])  # one completed event, with its ledger row
    (seeded,) = pair.ledger_ids()
    recent = submit(pair.lake, "delete", USERS, filter_conditions={"username": "nobody"})
    failed = submit(pair.lake, "insert", "dbo.missing", source_table="seed.s.users", primary_keys=["username"])
    assert {r.status for r in process_all(pair).values()} == {"completed", "failed"}
    waiting = submit(pair.lake, "delete", USERS, filter_conditions={"username": "x"})
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    old = now - timedelta(days=40)
    pair.set_event_fields(seeded, processed_at=old)
    pair.set_event_fields(failed.event_id, processed_at=old)
    pair.set_event_fields(waiting.event_id, created_at=old)
    cutoff = now - timedelta(days=30)

    assert pair.lake.delete_finished_events(cutoff, ["completed", "failed"], dry_run=True) == sorted(
        [seeded, failed.event_id])
    assert pair.target.delete_ledger_entries([seeded, failed.event_id], dry_run=True) == 1
    assert pair.lake.get_event(seeded) is not None and pair.ledger_ids() == sorted([seeded, recent.event_id])

    assert pair.lake.delete_finished_events(cutoff, ["completed"], dry_run=False) == [seeded]
    assert pair.target.delete_ledger_entries([seeded]) == 1
    assert pair.lake.get_event(seeded) is None
    assert pair.ledger_ids() == [recent.event_id]
    assert pair.lake.get_event(failed.event_id).status == "failed"
    assert pair.lake.delete_finished_events(cutoff, ["failed"], dry_run=False) == [failed.event_id]
    # Pending (and processing) events are never deleted, however old.
    assert pair.lake.delete_finished_events(now + timedelta(days=1), ["completed", "failed"], dry_run=False) == [
        recent.event_id]
    assert [e.event_id for e in pair.lake.list_events(None, 100)] == [waiting.event_id]
    with pytest.raises(ValueError):
        pair.lake.delete_finished_events(cutoff, ["pending"], dry_run=True)


def test_delete_ledger_entries_takes_ids_in_batches_as_parameters(pair: LocalPair) -> None:
    seed_users(pair, [("ana", True, False)])
    (seeded,) = pair.ledger_ids()
    hostile = ["x') OR ('1'='1", "y]; DROP TABLE bridge.applied_events; --", "%s", "z'"]
    ids = [f"nope-{i}" for i in range(1200)] + hostile + [seeded]
    assert pair.target.delete_ledger_entries(ids, dry_run=True) == 1
    assert pair.target.delete_ledger_entries(hostile) == 0
    assert pair.ledger_ids() == [seeded]
    assert pair.target.delete_ledger_entries(ids) == 1
    assert pair.ledger_ids() == []
    assert pair.target.delete_ledger_entries([]) == 0


# -- workers table (issue 10 §2) -------------------------------------------------------------------
def _beat(worker_id: str, seen: datetime, **fields) -> WorkerBeat:
    values = {"host": "host-a", "pid": 41, "version": "0.1.0", "started_at": seen - timedelta(minutes=5),
              "last_seen": seen, "expires_at": seen + timedelta(seconds=30), **fields}
    return WorkerBeat(worker_id, **values)


def test_worker_heartbeats_upsert_list_and_forget(pair: LocalPair) -> None:
    seen = datetime(2026, 3, 1, 12, 0, 0)
    odd = "host'; DROP TABLE x; --:7"  # values travel as parameters
    assert pair.lake.list_workers() == []
    pair.lake.heartbeat(_beat("host-a:41", seen))
    pair.lake.heartbeat(_beat(odd, seen, pid=7))
    later = seen + timedelta(seconds=10)
    busy = _beat("host-a:41", later, event_id="insert-1", phase="staging", rows=12_000_000_000,
                 rows_per_second=1234.5)
    pair.lake.heartbeat(busy)  # the same worker again: its row replaced, not a second one
    listed = {w.worker_id: w for w in pair.lake.list_workers()}
    assert set(listed) == {"host-a:41", odd}
    assert listed["host-a:41"] == busy
    assert (listed[odd].pid, listed[odd].event_id, listed[odd].phase, listed[odd].rows) == (7, None, None, None)
    assert busy.alive(later + timedelta(seconds=30)) and not busy.alive(later + timedelta(seconds=31))
    pair.lake.forget_worker(odd)
    pair.lake.forget_worker("no-such-worker")  # nothing to remove: no error
    assert [w.worker_id for w in pair.lake.list_workers()] == ["host-a:41"]


def test_forgetting_a_gone_worker_spares_one_heard_from_since(pair: LocalPair) -> None:
    seen = datetime(2026, 3, 1, 12, 0, 0)
    pair.lake.heartbeat(_beat("gone:1", seen, event_id="insert-1", phase="applying"))
    pair.lake.heartbeat(_beat("back:2", seen))
    pair.lake.heartbeat(_beat("back:2", seen + timedelta(minutes=5)))  # heard from again
    cutoff = seen + timedelta(minutes=1)  # both had expired by then, as first listed
    pair.lake.forget_worker("gone:1", expired_before=cutoff)
    pair.lake.forget_worker("back:2", expired_before=cutoff)
    assert [w.worker_id for w in pair.lake.list_workers()] == ["back:2"]


def test_init_adds_the_workers_table_to_an_existing_install(pair: LocalPair) -> None:
    from bridge_cli.errors import NotInitialized

    event = submit(pair.lake, "delete", "dbo.t", filter_conditions={"k": 1})
    pair.drop_workers_table()
    with pytest.raises(NotInitialized, match="bridge init"):
        pair.lake.list_workers()
    done = pair.lake.init_event_table(upgrade=False)
    assert any("created workers table" in line for line in done), done
    assert pair.lake.get_event(event.event_id) is not None  # the events stay
    assert pair.lake.list_workers() == []
    assert not any("workers" in line for line in pair.lake.init_event_table(upgrade=False))
