"""UPSERT and REPLACE, as a user sees them: every scenario runs against each lake/target pair
(the `pair` fixture), through the worker's whole claim -> plan -> apply -> record path, and checks
the event row (status, rows_affected, details, discrepancy, messages), the target's rows read back
and the ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.errors import ValidationError
from bridge_cli.events import Event
from tests.backends import Col, LocalPair, MssqlPair, MssqlSparkPair, mssql_url, spark_unavailable
from tests.helpers import submit

PEOPLE = "dbo.people"
PEOPLE_COLUMNS = [Col("username", "text", pk=True), Col("city", "text"), Col("age", "int")]
PEOPLE_SOURCE = "lake.s.people"
PEOPLE_SOURCE_COLUMNS = {"username": "text", "city": "text", "age": "int"}

SALES = "dbo.sales"
SALES_COLUMNS = [Col("id", "int", pk=True), Col("region", "text"), Col("qty", "int")]
SALES_SOURCE = "lake.s.sales_reload"
SALES_SOURCE_COLUMNS = {"id": "int", "region": "text", "qty": "int"}

ACCOUNTS = "dbo.accounts"
ACCOUNT_COLUMNS = [
    Col("id", "int", identity=True),
    Col("username", "text", unique=True, not_null=True),
    Col("region", "text"),
]
ACCOUNTS_SOURCE = "lake.s.accounts"


# -- helpers ---------------------------------------------------------------------------------
def process_all(pair: LocalPair, **kwargs: Any) -> dict[str, Any]:
    return {r.event_id: r for r in pair.engine(**kwargs).process_once()}


def stored(pair: LocalPair, event: Event | str) -> Event:
    found = pair.lake.get_event(event if isinstance(event, str) else event.event_id)
    assert found is not None
    return found


def details(event: Event) -> dict[str, int] | None:
    return None if event.details is None else json.loads(event.details)


def people(pair: LocalPair) -> list[tuple[Any, ...]]:
    return pair.target_rows(PEOPLE, ["username", "city", "age"], order_by="username")


def seed_people(pair: LocalPair, rows: list[tuple[Any, ...]]) -> None:
    pair.create_target(PEOPLE, PEOPLE_COLUMNS)
    pair.insert_target_rows(PEOPLE, ["username", "city", "age"], rows)


def sales(pair: LocalPair) -> list[tuple[Any, ...]]:
    return pair.target_rows(SALES, ["id", "region", "qty"], order_by="id")


def seed_sales(pair: LocalPair, rows: list[tuple[Any, ...]]) -> None:
    pair.create_target(SALES, SALES_COLUMNS)
    pair.insert_target_rows(SALES, ["id", "region", "qty"], rows)


def upsert(pair: LocalPair, rows: list[tuple[Any, ...]], **fields: Any) -> Event:
    pair.create_source(PEOPLE_SOURCE, PEOPLE_SOURCE_COLUMNS, rows)
    return submit(pair.lake, "upsert", PEOPLE, source_table=PEOPLE_SOURCE, primary_keys=["username"], **fields)


def replace(pair: LocalPair, rows: list[tuple[Any, ...]], **fields: Any) -> Event:
    pair.create_source(SALES_SOURCE, SALES_SOURCE_COLUMNS, rows)
    fields.setdefault("filter_conditions", {"region": "EU"})
    return submit(pair.lake, "replace", SALES, source_table=SALES_SOURCE, primary_keys=["id"], **fields)


def assert_failed_and_nothing_written(pair: LocalPair, event: Event) -> Event:
    """The event failed on its first attempt, with no counts, and left no ledger row."""
    row = stored(pair, event)
    assert row.status == "failed", (row.status, row.warning)
    assert row.attempts == 1
    assert (row.rows_affected, row.discrepancy, row.details) == (None, None, None)
    assert row.processed_at is not None and row.error_message
    assert event.event_id not in pair.ledger_ids()
    return row


def assert_completed(pair: LocalPair, event: Event, rows_affected: int, counts: dict[str, int]) -> Event:
    row = stored(pair, event)
    assert row.status == "completed", row.error_message
    assert row.error_message is None and row.processed_at is not None
    assert row.rows_affected == rows_affected
    assert details(row) == counts
    assert event.event_id in pair.ledger_ids()
    return row


# -- UPSERT ----------------------------------------------------------------------------------
def test_upsert_of_new_keys_only_inserts_them(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    event = upsert(pair, [("bruno", "Quito", 41), ("carla", None, None)])
    [result] = pair.engine().process_once()
    assert result.status == "completed" and result.details == {"inserted": 2, "updated": 0, "unchanged": 0}
    row = assert_completed(pair, event, 2, {"inserted": 2, "updated": 0, "unchanged": 0})
    assert (row.discrepancy, row.warning) == (None, None)
    assert people(pair) == [("ana", "Lima", 30), ("bruno", "Quito", 41), ("carla", None, None)]
    assert pair.ledger_ids() == [event.event_id]


def test_upsert_of_existing_keys_only_sets_their_non_key_columns(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30), ("bruno", "Quito", 41), ("carla", "Cusco", 25)])
    # bruno's values are the same as the target's: without changed_only it is updated all the same.
    event = upsert(pair, [("ana", "Bogota", 31), ("bruno", "Quito", 41)])
    process_all(pair)
    row = assert_completed(pair, event, 2, {"inserted": 0, "updated": 2, "unchanged": 0})
    assert row.warning is None
    assert people(pair) == [("ana", "Bogota", 31), ("bruno", "Quito", 41), ("carla", "Cusco", 25)]


def test_upsert_of_a_mix_updates_existing_keys_and_inserts_new_ones(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30), ("bruno", "Quito", 41)])
    event = upsert(pair, [("bruno", None, 42), ("dora", "Caracas", 50), ("ana", "Lima", 30), ("eva", "Cali", 19)])
    process_all(pair)
    assert_completed(pair, event, 4, {"inserted": 2, "updated": 2, "unchanged": 0})
    assert people(pair) == [
        ("ana", "Lima", 30), ("bruno", None, 42), ("dora", "Caracas", 50), ("eva", "Cali", 19)]


def test_upsert_only_sets_the_columns_the_source_has(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    pair.create_source("lake.s.ages", {"username": "text", "age": "int"}, [("ana", 31), ("bea", 22)])
    event = submit(pair.lake, "upsert", PEOPLE, source_table="lake.s.ages", primary_keys=["username"])
    process_all(pair)
    assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    assert people(pair) == [("ana", "Lima", 31), ("bea", None, 22)]


def test_upsert_of_a_source_with_only_key_columns_inserts_missing_keys(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    pair.create_source("lake.s.names", {"username": "text"}, [("ana",), ("bea",)])
    event = submit(pair.lake, "upsert", PEOPLE, source_table="lake.s.names", primary_keys=["username"])
    process_all(pair)
    assert_completed(pair, event, 1, {"inserted": 1, "updated": 0, "unchanged": 1})
    assert people(pair) == [("ana", "Lima", 30), ("bea", None, None)]


def test_upsert_matches_rows_on_every_key_column(pair: LocalPair) -> None:
    table = "dbo.stock"
    pair.create_target(table, [Col("region", "text"), Col("id", "int"), Col("qty", "int")])
    pair.insert_target_rows(table, ["region", "id", "qty"], [("EU", 1, 10), ("US", 1, 20)])
    pair.create_source("lake.s.stock", {"region": "text", "id": "int", "qty": "int"},
                       [("US", 1, 21), ("EU", 2, 30)])
    event = submit(pair.lake, "upsert", table, source_table="lake.s.stock", primary_keys=["region", "id"])
    process_all(pair)
    assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    assert pair.target_rows(table, ["region", "id", "qty"], "qty") == [("EU", 1, 10), ("US", 1, 21), ("EU", 2, 30)]
    # Two source rows for one (region, id): refused, the example naming both columns.
    pair.create_source("lake.s.stock", {"region": "text", "id": "int", "qty": "int"},
                       [("EU", 1, 11), ("US", 1, 22), ("EU", 1, 12)])
    again = submit(pair.lake, "upsert", table, source_table="lake.s.stock", primary_keys=["region", "id"])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, again)
    assert row.error_message.startswith("UPSERT source has 1 duplicate key(s) (2 rows)")
    assert row.error_message.endswith("First: (region='EU', id=1)")
    assert pair.target_rows(table, ["region", "id", "qty"], "qty") == [("EU", 1, 10), ("US", 1, 21), ("EU", 2, 30)]


def test_upsert_with_filter_conditions_is_refused_at_submit(pair: LocalPair) -> None:
    with pytest.raises(ValidationError, match=r"--filter is only for DELETE and REPLACE"):
        submit(pair.lake, "upsert", PEOPLE, source_table=PEOPLE_SOURCE, primary_keys=["username"],
               filter_conditions={"city": "Lima"})
    assert pair.lake.list_events(None, 100) == []


@pytest.mark.parametrize("operation", ["upsert", "replace"])
def test_duplicate_source_keys_fail_naming_the_count_and_at_most_five_keys(
    pair: LocalPair, operation: str
) -> None:
    seed_sales(pair, [(1, "EU", 10), (2, "EU", 20)])
    duplicated = [3, 4, 5, 6, 7, 8, 9]  # seven keys twice, key 3 three times: 15 rows
    rows = [(1, "EU", 11)] + [(k, "EU", k) for k in duplicated] + [(k, "EU", -k) for k in duplicated] + [
        (3, "EU", 0), (100, "EU", 100)]
    pair.create_source(SALES_SOURCE, SALES_SOURCE_COLUMNS, rows)
    fields: dict[str, Any] = {"filter_conditions": {"region": "EU"}} if operation == "replace" else {}
    event = submit(pair.lake, operation, SALES, source_table=SALES_SOURCE, primary_keys=["id"], **fields)
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    message = row.error_message
    assert message.startswith(f"{operation.upper()} source has 7 duplicate key(s) (15 rows); "
                               "keys must be unique and nothing was written. First: "), message
    examples = message.split("First: ", 1)[1].split("; ")
    assert len(examples) == 5 == len(set(examples)), examples
    assert set(examples) <= {f"id={k}" for k in duplicated}, examples
    assert sales(pair) == [(1, "EU", 10), (2, "EU", 20)]


def test_upsert_changed_only_compares_nulls_as_values_and_counts_exactly(pair: LocalPair) -> None:
    seed_people(pair, [
        ("a-null-null", None, None),     # NULL -> NULL in both columns: unchanged
        ("b-null-value", None, 1),       # city NULL -> 'Lima': changed
        ("c-value-null", "Lima", 2),     # city 'Lima' -> NULL: changed
        ("d-same", "Lima", 3),           # equal values: unchanged
        ("e-int-null-value", "Quito", None),  # age NULL -> 5: changed
        ("f-int-value-null", "Quito", 6),     # age 6 -> NULL: changed
        ("g-untouched", "Cusco", 7),     # not in the source
    ])
    event = upsert(pair, [
        ("a-null-null", None, None),
        ("b-null-value", "Lima", 1),
        ("c-value-null", None, 2),
        ("d-same", "Lima", 3),
        ("e-int-null-value", "Quito", 5),
        ("f-int-value-null", "Quito", None),
        ("h-new", None, None),
    ], metadata={"changed_only": True}, rows_expected=5)
    process_all(pair)
    row = assert_completed(pair, event, 5, {"inserted": 1, "updated": 4, "unchanged": 2})
    assert (row.discrepancy, row.warning) == (0, None)
    assert people(pair) == [
        ("a-null-null", None, None), ("b-null-value", "Lima", 1), ("c-value-null", None, 2),
        ("d-same", "Lima", 3), ("e-int-null-value", "Quito", 5), ("f-int-value-null", "Quito", None),
        ("g-untouched", "Cusco", 7), ("h-new", None, None)]


def test_upsert_changed_only_counts_a_case_or_trailing_space_difference_as_changed(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 1), ("bea", "Lima", 2), ("cris", "Lima", 3), ("dani", "Lima ", 4)])
    if isinstance(pair, MssqlPair):
        # The premise: this server's own `=` (the column's collation) calls these values equal.
        equal = pair._run("SELECT COUNT(*) FROM [dbo].[people] WHERE city = N'lima' AND city = N'Lima '",
                          fetch=True)
        assert equal == [(4,)]
    event = upsert(pair, [("ana", "lima", 1), ("bea", "Lima ", 2), ("cris", "Lima", 3), ("dani", "Lima", 4)],
                   metadata={"changed_only": True})
    process_all(pair)
    assert_completed(pair, event, 3, {"inserted": 0, "updated": 3, "unchanged": 1})
    assert people(pair) == [("ana", "lima", 1), ("bea", "Lima ", 2), ("cris", "Lima", 3), ("dani", "Lima", 4)]


def test_upsert_changed_only_ignores_the_column_collation(pair: LocalPair) -> None:
    """A column declared case-insensitive (SQLite NOCASE, SQL Server _CI_AI) or blind to trailing
    spaces (SQLite RTRIM) still has a case, accent or space change counted as changed."""
    if isinstance(pair, MssqlPair):
        pair._run("IF OBJECT_ID(N'[dbo].[people_ci]', N'U') IS NOT NULL DROP TABLE [dbo].[people_ci]")
        pair._run("CREATE TABLE [dbo].[people_ci] ([username] NVARCHAR(50) NOT NULL PRIMARY KEY, "
                  "[city] NVARCHAR(50) COLLATE Latin1_General_CI_AI NULL, [code] NVARCHAR(50) NULL)")
    else:
        pair.target_sql("dbo", 'DROP TABLE IF EXISTS "people_ci"')
        pair.target_sql("dbo", 'CREATE TABLE "people_ci" ("username" TEXT PRIMARY KEY, '
                               '"city" TEXT COLLATE NOCASE, "code" TEXT COLLATE RTRIM)')
    pair.insert_target_rows("dbo.people_ci", ["username", "city", "code"], [
        ("ana", "Lima", "A1"), ("bea", "Peru", "B1"), ("cris", "Lima", "C1"), ("dani", "Lima", "D1")])
    pair.create_source("lake.s.people_ci", {"username": "text", "city": "text", "code": "text"}, [
        ("ana", "lima", "A1"), ("bea", "Perú", "B1"), ("cris", "Lima", "C1 "), ("dani", "Lima", "D1")])
    event = submit(pair.lake, "upsert", "dbo.people_ci", source_table="lake.s.people_ci",
                   primary_keys=["username"], metadata={"changed_only": True})
    process_all(pair)
    assert_completed(pair, event, 3, {"inserted": 0, "updated": 3, "unchanged": 1})
    assert pair.target_rows("dbo.people_ci", ["username", "city", "code"], "username") == [
        ("ana", "lima", "A1"), ("bea", "Perú", "B1"), ("cris", "Lima", "C1 "), ("dani", "Lima", "D1")]


def test_upsert_changed_only_reports_unchanged_rows_in_the_discrepancy(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30), ("bruno", "Quito", 41)])
    event = upsert(pair, [("ana", "Lima", 30), ("bruno", "Quito", 42), ("carla", "Cusco", 25)],
                   metadata={"changed_only": True}, rows_expected=3)
    process_all(pair)
    row = assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 1})
    assert row.discrepancy == 1
    assert row.warning.startswith("rows_expected=3 but rows_affected=2 (discrepancy 1): ")
    assert "already the same" in row.warning and "changed_only" in row.warning


def test_upsert_rows_expected_matching_leaves_no_discrepancy_nor_warning(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    event = upsert(pair, [("ana", "Lima", 31), ("bruno", "Quito", 41)], rows_expected=2)
    process_all(pair)
    row = assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    assert (row.discrepancy, row.warning) == (0, None)


@pytest.mark.parametrize("expected,discrepancy,why", [
    (5, 3, "the source had fewer rows than expected"),
    (1, -1, "more rows written than expected: check rows_expected"),
])
def test_upsert_rows_expected_differing_gives_a_discrepancy_and_a_warning(
    pair: LocalPair, expected: int, discrepancy: int, why: str
) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    event = upsert(pair, [("ana", "Lima", 31), ("bruno", "Quito", 41)], rows_expected=expected)
    process_all(pair)
    row = assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    assert row.discrepancy == discrepancy
    # Every source row was written: the warning must not blame rows held back as unchanged.
    assert row.warning == f"rows_expected={expected} but rows_affected=2 (discrepancy {discrepancy}): {why}"


def test_upsert_of_an_empty_source_fails_with_no_data_to_upsert(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    event = upsert(pair, [])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message == f"No data to upsert: source table {pair.shown(PEOPLE_SOURCE)} is empty"
    assert people(pair) == [("ana", "Lima", 30)]


def test_upsert_feeding_an_identity_column_without_identity_insert_fails_like_insert(pair: LocalPair) -> None:
    pair.create_target(ACCOUNTS, ACCOUNT_COLUMNS)
    pair.insert_target_rows(ACCOUNTS, ["username", "region"], [("ana", "EU")])
    pair.create_source(ACCOUNTS_SOURCE, {"id": "int", "username": "text", "region": "text"},
                       [(1, "ana", "US"), (9, "zoe", "EU")])
    event = submit(pair.lake, "upsert", ACCOUNTS, source_table=ACCOUNTS_SOURCE, primary_keys=["id"])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith("Cannot insert explicit value for identity column id in dbo.accounts")
    assert 'metadata {"identity_insert": true}' in row.error_message
    assert pair.target_rows(ACCOUNTS, ["id", "username", "region"], "id") == [(1, "ana", "EU")]


def test_upsert_with_the_identity_column_as_key_and_identity_insert_keeps_source_ids(pair: LocalPair) -> None:
    pair.create_target(ACCOUNTS, ACCOUNT_COLUMNS)
    pair.insert_target_rows(ACCOUNTS, ["username", "region"], [("ana", "EU"), ("bruno", "EU")])
    assert pair.target_rows(ACCOUNTS, ["id", "username"], "id") == [(1, "ana"), (2, "bruno")]
    pair.create_source(ACCOUNTS_SOURCE, {"id": "int", "username": "text", "region": "text"},
                       [(2, "bruno", "US"), (50, "zoe", "EU")])
    event = submit(pair.lake, "upsert", ACCOUNTS, source_table=ACCOUNTS_SOURCE, primary_keys=["id"],
                   metadata={"identity_insert": True})
    process_all(pair)
    assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    assert pair.target_rows(ACCOUNTS, ["id", "username", "region"], "id") == [
        (1, "ana", "EU"), (2, "bruno", "US"), (50, "zoe", "EU")]


def test_upsert_refuses_an_identity_column_that_is_not_one_of_the_keys(pair: LocalPair) -> None:
    pair.create_target(ACCOUNTS, ACCOUNT_COLUMNS)
    pair.insert_target_rows(ACCOUNTS, ["username", "region"], [("ana", "EU")])
    pair.create_source(ACCOUNTS_SOURCE, {"id": "int", "username": "text", "region": "text"},
                       [(7, "ana", "US")])
    event = submit(pair.lake, "upsert", ACCOUNTS, source_table=ACCOUNTS_SOURCE, primary_keys=["username"],
                   metadata={"identity_insert": True})
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith(
        "UPSERT cannot set identity column id of existing rows in dbo.accounts: make it one of primary_keys")
    assert pair.target_rows(ACCOUNTS, ["id", "username", "region"], "id") == [(1, "ana", "EU")]


def test_upsert_failing_on_its_insert_rolls_back_its_updates(pair: LocalPair) -> None:
    table = "dbo.strict_people"
    pair.create_target(table, [Col("username", "text", pk=True), Col("email", "text", not_null=True)])
    pair.insert_target_rows(table, ["username", "email"], [("ana", "ana@old")])
    # ana's update runs first and works; bea's insert then breaks the NOT NULL constraint.
    pair.create_source("lake.s.emails", {"username": "text", "email": "text"}, [("ana", "ana@new"), ("bea", None)])
    event = submit(pair.lake, "upsert", table, source_table="lake.s.emails", primary_keys=["username"])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert "email" in row.error_message.lower() and "null" in row.error_message.lower()
    assert pair.target_rows(table, ["username", "email"], "username") == [("ana", "ana@old")]


def test_upsert_replayed_after_its_commit_is_not_applied_twice(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    event = upsert(pair, [("ana", "Quito", 31), ("bruno", "Cusco", 41)])
    process_all(pair)
    assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    # The worker died after the target's commit, before recording the result: the event is
    # pending again (put back by hand) while the target has moved on.
    pair.set_event_fields(event.event_id, status="pending", processed_at=None)
    pair.delete_target_rows(PEOPLE, "username", "bruno")
    pair.insert_target_rows(PEOPLE, ["username", "city", "age"], [("carla", "Lima", 5)])
    [result] = pair.engine().process_once()
    assert result.status == "completed"
    row = stored(pair, event)
    assert (row.status, row.rows_affected, row.attempts) == ("completed", 2, 2)
    assert "already applied" in row.warning and "not applied again" in row.warning
    assert people(pair) == [("ana", "Quito", 31), ("carla", "Lima", 5)]  # bruno not inserted again
    assert pair.ledger_ids() == [event.event_id]


def test_upsert_retried_after_a_lock_applies_once(pair: LocalPair) -> None:
    seed_people(pair, [("ana", "Lima", 30)])
    pair.reconfigure(lock_timeout=0.1, retry_backoff=0)
    event = upsert(pair, [("ana", "Quito", 31), ("bruno", "Cusco", 41)])
    with pair.lock_target(PEOPLE):
        [first] = pair.engine().process_once(max_events=1)
    assert first.status == "pending"
    waiting = stored(pair, event)
    assert waiting.details is None and waiting.rows_affected is None
    assert "transient" in waiting.warning and event.event_id not in pair.ledger_ids()
    assert people(pair) == [("ana", "Lima", 30)]
    process_all(pair)
    row = assert_completed(pair, event, 2, {"inserted": 1, "updated": 1, "unchanged": 0})
    assert row.attempts == 2
    assert people(pair) == [("ana", "Quito", 31), ("bruno", "Cusco", 41)]


# -- REPLACE ---------------------------------------------------------------------------------
SALES_ROWS = [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "US", 40), (5, "US", 50), (6, None, 60)]


def test_replace_reloads_its_slice_and_leaves_other_rows_untouched(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    event = replace(pair, [(1, "EU", 11), (3, "EU", 33), (7, "EU", 70), (8, "EU", 80)], rows_expected=4)
    [result] = pair.engine().process_once()
    assert result.status == "completed" and result.details == {"deleted": 3, "inserted": 4}
    row = assert_completed(pair, event, 4, {"deleted": 3, "inserted": 4})
    assert (row.discrepancy, row.warning) == (0, None)
    assert sales(pair) == [(1, "EU", 11), (3, "EU", 33), (4, "US", 40), (5, "US", 50), (6, None, 60),
                           (7, "EU", 70), (8, "EU", 80)]


def test_replace_of_a_slice_given_as_a_list_of_values(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    event = replace(pair, [(4, None, 41), (5, "US", 55), (9, "US", 90)],
                    filter_conditions={"region": ["US", None]}, rows_expected=2)
    process_all(pair)
    row = assert_completed(pair, event, 3, {"deleted": 3, "inserted": 3})
    assert row.discrepancy == -1
    assert row.warning.startswith("rows_expected=2 but rows_affected=3 (discrepancy -1): ")
    assert sales(pair) == [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, None, 41), (5, "US", 55),
                           (9, "US", 90)]


def test_replace_with_a_source_row_outside_the_slice_fails_and_changes_nothing(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    event = replace(pair, [(1, "EU", 11), (9, "US", 90), (10, None, 100), (3, "EU", 33)])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith(
        'REPLACE: 2 of 4 source rows fall outside the slice {"region": "EU"} of dbo.sales; nothing was changed'
    ), row.error_message
    assert row.error_message.endswith(". First: (id=9, region='US')")
    assert sales(pair) == SALES_ROWS


def test_replace_with_a_slice_column_the_source_lacks_fails_before_writing(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    pair.create_source("lake.s.qty_only", {"id": "int", "qty": "int"}, [(1, 11)])
    event = submit(pair.lake, "replace", SALES, source_table="lake.s.qty_only", primary_keys=["id"],
                   filter_conditions={"region": "EU"})
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith(
        f"REPLACE filter_conditions column(s) region not in source table {pair.shown('lake.s.qty_only')}")
    assert sales(pair) == SALES_ROWS


def test_replace_whole_table_without_whole_table_is_refused_at_submit(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    pair.create_source(SALES_SOURCE, SALES_SOURCE_COLUMNS, [(1, "EU", 11)])
    for filters in ({}, None):
        with pytest.raises(ValidationError, match=r"REPLACE needs filter_conditions naming the slice"):
            submit(pair.lake, "replace", SALES, source_table=SALES_SOURCE, primary_keys=["id"],
                   filter_conditions=filters)
    with pytest.raises(ValidationError, match=r"takes empty filter_conditions"):
        submit(pair.lake, "replace", SALES, source_table=SALES_SOURCE, primary_keys=["id"],
               filter_conditions={"region": "EU"}, metadata={"whole_table": True})
    assert pair.lake.list_events(None, 100) == []
    assert sales(pair) == SALES_ROWS


@pytest.mark.parametrize("filters,metadata,message", [
    ("{}", None, "REPLACE needs filter_conditions naming the slice to reload"),
    (None, None, "REPLACE needs filter_conditions naming the slice to reload"),
    ("{}", '{"whole_table": false}', "REPLACE needs filter_conditions naming the slice to reload"),
    ('{"region": "EU"}', '{"whole_table": true}', "takes empty filter_conditions"),
    ("{}", '{"whole_table": "yes"}', "metadata 'whole_table' must be true or false"),
], ids=["empty-object", "null", "whole-table-false", "slice-and-whole-table", "whole-table-not-boolean"])
def test_replace_written_raw_without_a_slice_fails_at_once(
    pair: LocalPair, filters: str | None, metadata: str | None, message: str
) -> None:
    seed_sales(pair, SALES_ROWS)
    pair.create_source(SALES_SOURCE, SALES_SOURCE_COLUMNS, [(1, "EU", 11)])
    pair.insert_raw_event({
        "event_id": "replace-raw-1", "operation": "REPLACE", "source_table": SALES_SOURCE,
        "target_table": SALES, "primary_keys": ["id"], "status": "pending",
        "filter_conditions": filters, "metadata": metadata,
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
    })
    [result] = pair.engine().process_once()
    assert result.status == "failed"
    row = stored(pair, "replace-raw-1")
    assert (row.status, row.attempts, row.rows_affected, row.details) == ("failed", 1, None, None)
    assert message in row.error_message
    assert sales(pair) == SALES_ROWS
    assert pair.ledger_ids() == []


def test_replace_whole_table_with_whole_table_metadata(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    event = replace(pair, [(1, "EU", 1), (4, "US", 4), (7, None, 7), (8, "AS", 8)],
                    filter_conditions={}, metadata={"whole_table": True})
    process_all(pair)
    assert_completed(pair, event, 4, {"deleted": 6, "inserted": 4})
    assert sales(pair) == [(1, "EU", 1), (4, "US", 4), (7, None, 7), (8, "AS", 8)]


def test_replace_shrinking_below_the_ratio_fails_naming_both_counts(pair: LocalPair) -> None:
    seed_sales(pair, [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "EU", 40), (5, "US", 50)])
    event = replace(pair, [(1, "EU", 11)])  # 1 row for 4: under the default 0.5
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith(
        'REPLACE would replace 4 rows of {"region": "EU"} of dbo.sales with 1, fewer than '
        "replace_min_ratio=0.5 of them; nothing was changed"), row.error_message
    assert 'metadata {"allow_shrink": true}' in row.error_message
    assert sales(pair) == [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "EU", 40), (5, "US", 50)]


def test_replace_with_allow_shrink_may_shrink_its_slice(pair: LocalPair) -> None:
    seed_sales(pair, [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "EU", 40), (5, "US", 50)])
    event = replace(pair, [(1, "EU", 11)], metadata={"allow_shrink": True})
    process_all(pair)
    assert_completed(pair, event, 1, {"deleted": 4, "inserted": 1})
    assert sales(pair) == [(1, "EU", 11), (5, "US", 50)]


def test_replace_at_exactly_the_ratio_passes(pair: LocalPair) -> None:
    seed_sales(pair, [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "EU", 40)])
    event = replace(pair, [(1, "EU", 11), (2, "EU", 22)])  # 2 for 4: exactly 0.5
    process_all(pair)
    assert_completed(pair, event, 2, {"deleted": 4, "inserted": 2})
    assert sales(pair) == [(1, "EU", 11), (2, "EU", 22)]


def test_replace_honours_replace_min_ratio_from_the_profile(pair: LocalPair) -> None:
    seed_sales(pair, [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "EU", 40)])
    pair.reconfigure(replace_min_ratio=0.9)  # 3 rows for 4 passes the default 0.5, not 0.9
    strict = replace(pair, [(1, "EU", 11), (2, "EU", 22), (3, "EU", 33)])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, strict)
    assert "with 3, fewer than replace_min_ratio=0.9 of them" in row.error_message
    assert sales(pair) == [(1, "EU", 10), (2, "EU", 20), (3, "EU", 30), (4, "EU", 40)]
    pair.reconfigure(replace_min_ratio=0.25)  # 1 row for 4 fails the default 0.5, not 0.25
    lenient = replace(pair, [(1, "EU", 11)])
    process_all(pair)
    assert_completed(pair, lenient, 1, {"deleted": 4, "inserted": 1})
    assert sales(pair) == [(1, "EU", 11)]


def test_replace_of_an_empty_slice_has_nothing_to_shrink(pair: LocalPair) -> None:
    seed_sales(pair, [(5, "US", 50)])
    event = replace(pair, [(1, "EU", 11)])
    process_all(pair)
    assert_completed(pair, event, 1, {"deleted": 0, "inserted": 1})
    assert sales(pair) == [(1, "EU", 11), (5, "US", 50)]


def test_replace_of_an_empty_source_fails_with_no_data_to_insert(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    event = replace(pair, [], metadata={"allow_shrink": True})
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message == f"No data to insert: source table {pair.shown(SALES_SOURCE)} is empty"
    assert sales(pair) == SALES_ROWS


def test_replace_is_not_limited_by_max_delete_rows(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    pair.reconfigure(max_delete_rows=2)
    # The cap is in force: a DELETE of the same slice is refused...
    delete = submit(pair.lake, "delete", SALES, filter_conditions={"region": "EU"})
    process_all(pair)
    assert "max_delete_rows=2" in stored(pair, delete).error_message
    # ...while a REPLACE of it, deleting 3 rows, goes through.
    event = replace(pair, [(1, "EU", 11), (2, "EU", 22), (3, "EU", 33), (7, "EU", 77)])
    process_all(pair)
    assert_completed(pair, event, 4, {"deleted": 3, "inserted": 4})
    assert sales(pair) == [(1, "EU", 11), (2, "EU", 22), (3, "EU", 33), (4, "US", 40), (5, "US", 50),
                           (6, None, 60), (7, "EU", 77)]


def test_replace_with_keys_the_target_holds_outside_the_slice_fails(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    # 4 and 6 are rows of other slices (US, NULL): reloading EU with them would take them over.
    event = replace(pair, [(1, "EU", 11), (4, "EU", 44), (6, "EU", 66), (9, "EU", 99)])
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith(
        'REPLACE: 2 source row(s) have keys the target holds outside {"region": "EU"} of dbo.sales; '
        "nothing was changed"), row.error_message
    assert sales(pair) == SALES_ROWS


def test_replace_feeding_an_identity_column_without_identity_insert_fails_like_insert(pair: LocalPair) -> None:
    pair.create_target(ACCOUNTS, ACCOUNT_COLUMNS)
    pair.insert_target_rows(ACCOUNTS, ["username", "region"], [("ana", "EU"), ("bruno", "US")])
    pair.create_source(ACCOUNTS_SOURCE, {"id": "int", "username": "text", "region": "text"},
                       [(1, "ana", "EU")])
    event = submit(pair.lake, "replace", ACCOUNTS, source_table=ACCOUNTS_SOURCE, primary_keys=["id"],
                   filter_conditions={"region": "EU"})
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert row.error_message.startswith("Cannot insert explicit value for identity column id in dbo.accounts")
    assert pair.target_rows(ACCOUNTS, ["id", "username", "region"], "id") == [(1, "ana", "EU"), (2, "bruno", "US")]


def test_replace_with_identity_insert_keeps_the_source_ids(pair: LocalPair) -> None:
    pair.create_target(ACCOUNTS, ACCOUNT_COLUMNS)
    pair.insert_target_rows(ACCOUNTS, ["username", "region"], [("ana", "EU"), ("bruno", "US"), ("carla", "EU")])
    pair.create_source(ACCOUNTS_SOURCE, {"id": "int", "username": "text", "region": "text"},
                       [(1, "ana", "EU"), (30, "carla", "EU"), (40, "dora", "EU")])
    event = submit(pair.lake, "replace", ACCOUNTS, source_table=ACCOUNTS_SOURCE, primary_keys=["id"],
                   filter_conditions={"region": "EU"}, metadata={"identity_insert": True})
    process_all(pair)
    assert_completed(pair, event, 3, {"deleted": 2, "inserted": 3})
    assert pair.target_rows(ACCOUNTS, ["id", "username", "region"], "id") == [
        (1, "ana", "EU"), (2, "bruno", "US"), (30, "carla", "EU"), (40, "dora", "EU")]


def test_replace_without_the_identity_column_lets_the_target_number_rows(pair: LocalPair) -> None:
    pair.create_target(ACCOUNTS, ACCOUNT_COLUMNS)
    pair.insert_target_rows(ACCOUNTS, ["username", "region"], [("ana", "EU"), ("bruno", "US")])
    pair.create_source(ACCOUNTS_SOURCE, {"username": "text", "region": "text"}, [("ana", "EU"), ("carla", "EU")])
    event = submit(pair.lake, "replace", ACCOUNTS, source_table=ACCOUNTS_SOURCE, primary_keys=["username"],
                   filter_conditions={"region": "EU"})
    process_all(pair)
    assert_completed(pair, event, 2, {"deleted": 1, "inserted": 2})
    rows = pair.target_rows(ACCOUNTS, ["id", "username", "region"], "id")
    assert [r[1:] for r in rows] == [("bruno", "US"), ("ana", "EU"), ("carla", "EU")]
    assert rows[0][0] == 2 and rows[1][0] > 2 and rows[2][0] > rows[1][0]  # new ids, in source order


def test_replace_failing_on_its_insert_restores_the_deleted_slice(pair: LocalPair) -> None:
    table = "dbo.strict_sales"
    pair.create_target(table, [Col("id", "int", pk=True), Col("region", "text"), Col("qty", "int", not_null=True)])
    pair.insert_target_rows(table, ["id", "region", "qty"], [(1, "EU", 10), (2, "EU", 20), (3, "US", 30)])
    pair.create_source(SALES_SOURCE, SALES_SOURCE_COLUMNS, [(1, "EU", 11), (2, "EU", None)])
    event = submit(pair.lake, "replace", table, source_table=SALES_SOURCE, primary_keys=["id"],
                   filter_conditions={"region": "EU"})
    process_all(pair)
    row = assert_failed_and_nothing_written(pair, event)
    assert "qty" in row.error_message.lower() and "null" in row.error_message.lower()
    assert pair.target_rows(table, ["id", "region", "qty"], "id") == [(1, "EU", 10), (2, "EU", 20), (3, "US", 30)]


def test_replace_replayed_after_its_commit_is_not_applied_twice(pair: LocalPair) -> None:
    seed_sales(pair, SALES_ROWS)
    event = replace(pair, [(1, "EU", 11), (2, "EU", 22)])
    process_all(pair)
    assert_completed(pair, event, 2, {"deleted": 3, "inserted": 2})
    pair.set_event_fields(event.event_id, status="pending", processed_at=None)
    pair.insert_target_rows(SALES, ["id", "region", "qty"], [(3, "EU", 3)])
    process_all(pair)
    row = stored(pair, event)
    assert (row.status, row.rows_affected) == ("completed", 2)
    assert "already applied" in row.warning
    assert sales(pair) == [(1, "EU", 11), (2, "EU", 22), (3, "EU", 3), (4, "US", 40), (5, "US", 50),
                           (6, None, 60)]
    assert pair.ledger_ids() == [event.event_id]


# -- through local Spark ---------------------------------------------------------------------
@pytest.fixture
def spark_pair(bridge_home: Path) -> Iterator[MssqlSparkPair]:
    """The SQL Server target with every event that has a row staged by local Spark over JDBC."""
    if mssql_url() is None:
        pytest.skip("BRIDGE_TEST_MSSQL_URL is not set: the Spark path was not tested")
    if spark_unavailable():
        pytest.skip(f"the Spark staging path cannot run here: {spark_unavailable()}")
    yield MssqlSparkPair(bridge_home)


def test_upsert_and_replace_stage_through_spark(spark_pair: MssqlSparkPair) -> None:
    pair = spark_pair
    phases: dict[str, list[str]] = {}

    def on_phase(event_id: str, phase: str, rows: int | None) -> None:
        phases.setdefault(event_id, []).append(phase)

    seed_people(pair, [("ana", "Lima", 30), ("bruno", "Quito", 41), ("carla", None, 25)])
    merged = upsert(pair, [("ana", "Lima", 30), ("bruno", "quito", 41), ("carla", None, 25), ("dora", None, 9)],
                    metadata={"changed_only": True}, rows_expected=4)
    process_all(pair, on_phase=on_phase)
    assert phases[merged.event_id][0] == "spark"
    row = assert_completed(pair, merged, 2, {"inserted": 1, "updated": 1, "unchanged": 2})
    assert row.discrepancy == 2
    assert people(pair) == [("ana", "Lima", 30), ("bruno", "quito", 41), ("carla", None, 25), ("dora", None, 9)]

    seed_sales(pair, SALES_ROWS)
    outside = replace(pair, [(1, "EU", 11), (9, "US", 90)])
    process_all(pair, on_phase=on_phase)
    assert phases[outside.event_id][0] == "spark"
    row = assert_failed_and_nothing_written(pair, outside)
    assert row.error_message.startswith("REPLACE: 1 of 2 source rows fall outside the slice")
    assert row.error_message.endswith(". First: (id=9, region='US')")
    assert sales(pair) == SALES_ROWS
    reloaded = replace(pair, [(1, "EU", 11), (3, "EU", 33), (7, "EU", 70)])
    process_all(pair, on_phase=on_phase)
    assert phases[reloaded.event_id][0] == "spark"
    assert_completed(pair, reloaded, 3, {"deleted": 3, "inserted": 3})
    assert sales(pair) == [(1, "EU", 11), (3, "EU", 33), (4, "US", 40), (5, "US", 50), (6, None, 60),
                           (7, "EU", 70)]
