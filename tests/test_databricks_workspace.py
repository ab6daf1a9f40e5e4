"""Databricks tests' two modes (tests/databricks_env.py): the settings, where a test's tables go in
a workspace, the cleanup at the end, all offline; the cleanup for real in workspace mode (also
when that "workspace" is the stand-in); and what only Delta does, on a real workspace only."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.backends import DatabricksPair
from tests.databricks_env import ENV, WORKSPACE_ONLY, WORKSPACE_VARS, Cleanup, DatabricksEnv, parse
from tests.helpers import submit

WORKSPACE = {"BRIDGE_TEST_DATABRICKS_HOST": "https://adb-1.2.azuredatabricks.net/",
             "BRIDGE_TEST_DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/abc",
             "BRIDGE_TEST_DATABRICKS_TOKEN": "dapi-secret", "BRIDGE_TEST_DATABRICKS_CATALOG": "dev"}
STANDIN = {"DBX_STANDIN_HOST": "localhost", "DBX_STANDIN_PORT": "4443", "DBX_STANDIN_HTTP_PATH": "/sql/1.0/w/s",
           "DBX_STANDIN_TOKEN": "dapi-local", "DBX_STANDIN_CATALOGS": "main,c,mi-catalog",
           "DBX_STANDIN_COMPAT_DIR": "/repo/tests/standins/databricks"}


def workspace(**changes: str) -> DatabricksEnv:
    env = parse({**WORKSPACE, **changes})
    assert env is not None
    return dataclasses.replace(env, run="bridge_test_r")


# -- settings, offline -------------------------------------------------------------------------------
def test_databricks_settings_pick_the_mode() -> None:
    assert parse({}) is None
    standin = parse(STANDIN)
    assert standin is not None and (standin.mode, standin.standin, standin.port) == ("standin", True, 4443)
    assert standin.lake_options() == {"server_hostname": "localhost", "http_path": "/sql/1.0/w/s",
                                      "token": "dapi-local", "port": 4443}
    real = parse({**STANDIN, **WORKSPACE})  # a workspace wins over a running stand-in
    assert real is not None and (real.mode, real.standin, real.compat_dir) == ("workspace", False, None)
    assert (real.host, real.port, real.catalog) == ("adb-1.2.azuredatabricks.net", 443, "dev")
    assert "port" not in real.lake_options()
    itself = parse({**STANDIN, **WORKSPACE, "BRIDGE_TEST_DATABRICKS_HOST": "localhost:4443"})
    assert itself is not None and (itself.mode, itself.standin) == ("workspace", True)  # the shim stays


def test_databricks_workspace_settings_must_be_complete_and_valid() -> None:
    with pytest.raises(ValueError, match="set BRIDGE_TEST_DATABRICKS_CATALOG too"):
        parse({k: v for k, v in WORKSPACE.items() if k != "BRIDGE_TEST_DATABRICKS_CATALOG"})
    with pytest.raises(ValueError, match="not a catalog name"):
        parse({**WORKSPACE, "BRIDGE_TEST_DATABRICKS_CATALOG": "a.b"})
    with pytest.raises(Exception, match="catalog.schema.table"):
        parse({**WORKSPACE, "BRIDGE_TEST_DATABRICKS_EVENT_TABLE": "events"})


def test_databricks_subprocesses_get_the_shim_only_from_the_standin() -> None:
    standin, real = parse(STANDIN), workspace()
    assert standin is not None
    assert standin.subprocess_env({"PYTHONPATH": "/x"})["PYTHONPATH"] == "/repo/tests/standins/databricks/site:/x"
    assert "PYTHONPATH" not in real.subprocess_env({})


# -- where tables go, offline --------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "placed"), [
    ("mi-catalog.mi-schema.t", "dev.bridge_test_r__mi-catalog__mi-schema.t"),
    ("`mi-catalog`.`mi-schema`.datos", "`dev`.`bridge_test_r__mi-catalog__mi-schema`.datos"),
    ("`mi-catalog`.mi-schema.`datos`", "`dev`.bridge_test_r__mi-catalog__mi-schema.`datos`"),
    ("Seed.HR.secrets", "dev.bridge_test_r__seed__hr.secrets"),
    ("c.s.*", "dev.bridge_test_r__c__s.*"),  # allowed_sources patterns
    ("c.s.t' OR 1=1 --", "dev.bridge_test_r__c__s.t' OR 1=1 --"),  # still refused, by bridge
    ("dev.mine.t", "dev.mine.t"),  # already in the tester's catalog
    ("c.s", "c.s"), ("c.`s.t", "c.`s.t"), ("x' OR '1'='1", "x' OR '1'='1"),
])
def test_databricks_workspace_places_each_catalog_schema_in_a_schema_of_this_run(name: str, placed: str) -> None:
    env = workspace()
    assert env.source(name) == placed
    assert env.source(placed) == placed  # placing twice changes nothing


def test_databricks_standin_mode_uses_names_as_written() -> None:
    env = parse(STANDIN)
    assert env is not None
    assert env.source("`mi-catalog`.`mi-schema`.t") == "`mi-catalog`.`mi-schema`.t"
    assert env.event_table_name("ab12") == "`000-sql-databricks-bridge`.`events`.bridge_events_ab12"
    assert not env.cleanup.pending()


def test_databricks_workspace_event_tables_are_fresh_and_remembered() -> None:
    env = workspace()
    assert env.event_table_name("ab12") == "`dev`.`bridge_test_r__events`.bridge_events_ab12"
    configured = workspace(BRIDGE_TEST_DATABRICKS_EVENT_TABLE="dev.bridge.events")
    assert configured.event_table_name("ab12") == "`dev`.`bridge`.`events_ab12`"
    assert configured.cleanup.event_tables == {"`dev`.`bridge`.`events_ab12`"}


def test_databricks_cleanup_drops_everything_even_after_a_failure() -> None:
    env = workspace(BRIDGE_TEST_DATABRICKS_EVENT_TABLE="dev.bridge.events")
    env.event_table_name("ab12")
    env.source("c.s.t")
    sent: list[str] = []

    def execute(sql: str, fetch: bool = False) -> list[Any]:
        sent.append(sql)
        if "workers" in sql:
            raise RuntimeError("PERMISSION_DENIED\nstack")
        if "never_made" in sql:  # a schema a test only named
            raise RuntimeError("org.apache.iceberg.exceptions.NoSuchNamespaceException: Namespace does not exist")
        return [("bridge_test_r__c__s", "t", False)] if sql.startswith("SHOW TABLES") else []

    failures = env.cleanup.run(execute, iceberg=False)
    assert sent == ["DROP TABLE IF EXISTS `dev`.`bridge`.`events_ab12`",
                    "DROP TABLE IF EXISTS `dev`.`bridge`.`events_ab12_workers`",
                    "DROP TABLE IF EXISTS `dev`.`bridge`.`events_ab12_control`",
                    "DROP SCHEMA IF EXISTS `dev`.`bridge_test_r__c__s` CASCADE"]
    assert failures == ["DROP TABLE IF EXISTS `dev`.`bridge`.`events_ab12_workers`: PERMISSION_DENIED"]
    assert not env.cleanup.pending()
    env.source("c.s.t")
    env.source("c.never_made.t")
    sent.clear()
    assert env.cleanup.run(execute, iceberg=True) == []  # the stand-in's catalogs: no CASCADE
    assert sent == ["SHOW TABLES IN `dev`.`bridge_test_r__c__never_made`",
                    "DROP SCHEMA IF EXISTS `dev`.`bridge_test_r__c__never_made`",
                    "SHOW TABLES IN `dev`.`bridge_test_r__c__s`", "DROP TABLE IF EXISTS `dev`.`bridge_test_r__c__s`.`t`",
                    "DROP SCHEMA IF EXISTS `dev`.`bridge_test_r__c__s`"]


# -- workspace mode, live ---------------------------------------------------------------------------------
in_workspace_mode = pytest.mark.skipif(
    ENV is None or ENV.mode != "workspace", reason="workspace mode only: set " + ", ".join(WORKSPACE_VARS))


@in_workspace_mode
def test_databricks_workspace_cleanup_drops_the_schemas_it_made(bridge_home: Path) -> None:
    assert ENV is not None
    from tests.backends import databricks_lake

    env = dataclasses.replace(ENV, run=f"{ENV.run}_cleanup", cleanup=Cleanup())
    lake = databricks_lake(bridge_home)
    try:
        table = env.quoted_source("`mi-catalog`.`mi-schema`.kept")
        schema = table.rsplit(".", 1)[0]
        lake.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        lake.execute(f"CREATE TABLE {table} (id BIGINT) USING DELTA")
        lake.execute(f"INSERT INTO {table} VALUES (1)")

        def schemas() -> set[str]:
            rows = lake.execute(f"SHOW SCHEMAS IN `{env.catalog}`", fetch=True)
            return {str(r[0]).strip("`").lower() for r in rows}

        assert f"{env.run}__mi-catalog__mi-schema" in schemas()
        assert env.cleanup.run(lake.execute, iceberg=env.standin) == []
        assert not any(s.startswith(env.run) for s in schemas())
    finally:
        env.cleanup.run(lake.execute, iceberg=env.standin)
        lake.close()


# -- Delta only: a real workspace -----------------------------------------------------------------------------
delta_only = pytest.mark.skipif(ENV is None or ENV.standin, reason=WORKSPACE_ONLY)


@pytest.fixture
def dbx(bridge_home: Path) -> Any:
    pair = DatabricksPair(bridge_home)
    yield pair
    pair.close()


@delta_only
def test_databricks_event_table_is_delta_with_deletion_vectors(dbx: DatabricksPair) -> None:
    """What lets claims of different events run at once (row-level concurrency)."""
    [detail] = dbx.run(f"DESCRIBE DETAIL {dbx.lake._table}", fetch=True)  # type: ignore[attr-defined]
    assert detail.format == "delta"
    assert dict(detail.properties).get("delta.enableDeletionVectors") == "true"  # a map: pairs or a dict


@delta_only
def test_databricks_claims_of_different_events_at_once_do_not_conflict(dbx: DatabricksPair) -> None:
    """With deletion vectors, two UPDATEs of different rows both commit: no claim loses a race it
    was not in. With no conflict retries, a conflict would show as a missed claim."""
    from bridge_cli.lakes.databricks import DatabricksLake

    events = [submit(dbx.lake, "delete", f"dbo.t{i}", filter_conditions={"k": i}) for i in range(2)]
    settings = dataclasses.replace(dbx.settings, lake=dataclasses.replace(
        dbx.settings.lake, options={**dbx.settings.lake.options, "conflict_retries": 0}))
    lakes = [DatabricksLake(settings) for _ in events]
    barrier = threading.Barrier(len(events))
    won: list[bool] = [False] * len(events)

    def claim(i: int) -> None:
        barrier.wait()
        won[i] = lakes[i].update_event_if(events[i].event_id, {"status": "pending", "claim_token": None},
                                          {"status": "processing", "claim_token": f"token-{i}"})

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(events))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for lake in lakes:
            lake.close()
    assert won == [True, True]
