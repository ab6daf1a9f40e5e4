"""Where the Databricks tests run: the local stand-in, or a real workspace. Tests ask this module,
never the environment, which warehouse they have and where their tables go.

- Stand-in mode: `make test-databricks` exports DBX_STANDIN_* (tests/standins/databricks). A
  test's catalog.schema.table is used as written: the stand-in has the catalogs the tests name
  (DBX_STANDIN_CATALOGS in the Makefile; Spark reads any other first part as a nested namespace
  of its default catalog), and event tables go to `000-sql-databricks-bridge`.
- Workspace mode: BRIDGE_TEST_DATABRICKS_HOST, _HTTP_PATH, _TOKEN and _CATALOG are set. A tester
  can create schemas in that one catalog, not catalogs, so each catalog.schema a test names
  becomes a schema of that catalog named after this run, `bridge_test_<time>_<hex>__<catalog>__<schema>`,
  and event tables go to `<catalog>`.`bridge_test_..__events` (or beside
  BRIDGE_TEST_DATABRICKS_EVENT_TABLE). Every schema and table made that way is dropped when the
  test session ends, failed tests or not (conftest.py).

The stand-in's quirks (its connector shim, Iceberg instead of Delta) follow the server, not the
mode: `standin` is true in stand-in mode and in workspace mode pointed at the stand-in itself
(same host and port), which is how the workspace mode is exercised without a workspace.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge_cli.identifiers import IDENTIFIER_PART, TableName, parse_table_name, quote_backtick

WORKSPACE_VARS = ("BRIDGE_TEST_DATABRICKS_HOST", "BRIDGE_TEST_DATABRICKS_HTTP_PATH",
                  "BRIDGE_TEST_DATABRICKS_TOKEN", "BRIDGE_TEST_DATABRICKS_CATALOG")
EVENT_TABLE_VAR = "BRIDGE_TEST_DATABRICKS_EVENT_TABLE"
STANDIN_EVENT_SCHEMA = ("000-sql-databricks-bridge", "events")  # bridge's default event table's place
NO_WAREHOUSE = ("no Databricks warehouse: `make test-databricks` starts the local stand-in; a real workspace "
                "needs " + ", ".join(WORKSPACE_VARS))
WORKSPACE_ONLY = ("Delta only, so it runs on a real Databricks workspace (the stand-in's tables are Iceberg): "
                  "set " + ", ".join(WORKSPACE_VARS))


def run_id() -> str:
    """This test session's name: sortable by time, so leftovers of a killed run are easy to spot."""
    return f"bridge_test_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(2)}"


@dataclass
class Cleanup:
    """What workspace mode made, to drop at the end of the session."""

    schemas: set[tuple[str, str]] = field(default_factory=set)  # (catalog, schema)
    event_tables: set[str] = field(default_factory=set)  # event tables outside those schemas

    def pending(self) -> bool:
        return bool(self.schemas or self.event_tables)

    def run(self, execute: Callable[..., list[Any]], iceberg: bool) -> list[str]:
        """Drop the event tables (with the workers and control tables bridge puts beside them),
        then the schemas with whatever they still hold; every statement is tried even after one
        fails. `execute(sql, fetch=False)` runs one statement. Returns the failures, one line each."""
        from bridge_cli.lakes import control_table_name, workers_table_name

        failures = []

        def attempt(statement: str, fetch: bool = False) -> list[Any]:
            try:
                return execute(statement, fetch=fetch)
            except Exception as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                # A schema a test only named (a missing source) was never made: nothing to drop.
                if not any(marker in text for marker in ("SCHEMA_NOT_FOUND", "NoSuchNamespaceException")):
                    failures.append(f"{statement}: {text}")
                return []

        for name in sorted(self.event_tables):
            table = parse_table_name(name, min_parts=3, max_parts=3, what="event table")
            for each in (table, workers_table_name(table), control_table_name(table)):
                attempt(f"DROP TABLE IF EXISTS {quoted(each)}")
        for catalog, schema in sorted(self.schemas):
            where = f"{quote_backtick(catalog)}.{quote_backtick(schema)}"
            if not iceberg:
                attempt(f"DROP SCHEMA IF EXISTS {where} CASCADE")
                continue
            # The stand-in's Iceberg catalogs refuse CASCADE: its tables first, then the schema.
            for row in attempt(f"SHOW TABLES IN {where}", fetch=True):
                attempt(f"DROP TABLE IF EXISTS {where}.{quote_backtick(str(row[1]))}")
            attempt(f"DROP SCHEMA IF EXISTS {where}")
        self.schemas.clear()
        self.event_tables.clear()
        return failures


def quoted(table: TableName) -> str:
    return ".".join(quote_backtick(p) for p in table.parts)


@dataclass(frozen=True)
class DatabricksEnv:
    mode: str  # "standin" or "workspace"
    host: str
    port: int
    http_path: str
    token: str
    standin: bool  # the server is the stand-in: Iceberg tables, the shim installed
    compat_dir: str | None  # the shim's folder (DBX_STANDIN_COMPAT_DIR) when standin
    catalog: str | None = None  # workspace mode: the tester's catalog
    event_table: str | None = None  # workspace mode: BRIDGE_TEST_DATABRICKS_EVENT_TABLE
    run: str = field(default_factory=run_id)
    cleanup: Cleanup = field(default_factory=Cleanup, compare=False)

    def lake_options(self) -> dict[str, Any]:
        """The `lake:` options of a profile that reaches this warehouse."""
        options: dict[str, Any] = {"server_hostname": self.host, "http_path": self.http_path, "token": self.token}
        if self.port != 443:
            options["port"] = self.port
        return options

    def source(self, name: str) -> str:
        """Where a test's `catalog.schema.table` (or `catalog.schema.*` pattern) lives in this mode,
        written with the same backticks, since bare and backticked names are both under test. Text
        that is not such a name (a test of refused names) and names already in the tester's
        catalog are returned as they are."""
        pieces = _split(name)
        if pieces is None:
            return name
        (catalog, catalog_quoted), (schema, schema_quoted), rest = pieces
        if self.mode == "standin":
            # The stand-in has the catalogs the tests name (DBX_STANDIN_CATALOGS); any other first
            # part is read by Spark as a nested namespace of its default catalog.
            return name
        assert self.catalog is not None
        if catalog.lower() == self.catalog.lower():
            return name
        mapped = f"{self.run}__{catalog}__{schema}".lower()  # Unity Catalog keeps names in lower case
        self.cleanup.schemas.add((self.catalog, mapped))
        new_catalog = quote_backtick(self.catalog) if catalog_quoted else self.catalog
        return f"{new_catalog}.{quote_backtick(mapped) if schema_quoted else mapped}.{rest}"

    def quoted_source(self, name: str) -> str:
        """source(name) with every part backticked, for SQL a test writes itself."""
        return quoted(parse_table_name(self.source(name), min_parts=3, max_parts=3, what="source table"))

    def event_table_name(self, suffix: str) -> str:
        """A fresh event table of its own for one test (bridge puts its workers and control tables
        beside it)."""
        if self.mode == "standin":
            catalog, schema = STANDIN_EVENT_SCHEMA
            return f"{quote_backtick(catalog)}.{quote_backtick(schema)}.bridge_events_{suffix}"
        if self.event_table:
            base = parse_table_name(self.event_table, min_parts=3, max_parts=3, what=EVENT_TABLE_VAR)
            name = quoted(TableName((*base.parts[:2], f"{base.table}_{suffix}")))
            self.cleanup.event_tables.add(name)
            return name
        assert self.catalog is not None
        schema = f"{self.run}__events"
        self.cleanup.schemas.add((self.catalog, schema))
        return f"{quote_backtick(self.catalog)}.{quote_backtick(schema)}.bridge_events_{suffix}"

    def subprocess_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The environment for a Python process that connects: the shim comes with it on the stand-in."""
        out = dict(env)
        if self.standin and self.compat_dir:
            out["DBX_STANDIN_COMPAT_DIR"] = self.compat_dir
            out["PYTHONPATH"] = os.pathsep.join(p for p in (f"{self.compat_dir}/site", env.get("PYTHONPATH")) if p)
        return out

    def describe(self) -> str:
        where = f"{self.host}:{self.port}{self.http_path}"
        if self.mode == "standin":
            return f"the stand-in at {where}"
        on = " (the stand-in itself)" if self.standin else ""
        return f"workspace {where}{on}, catalog {self.catalog}, schemas {self.run}__*"


def _split(name: str) -> tuple[tuple[str, bool], tuple[str, bool], str] | None:
    """`a`.b.rest -> (("a", True), ("b", False), "rest"): the first two parts with whether each
    was backticked, the rest as written; None unless both are plain identifiers."""
    parts: list[tuple[str, bool]] = []
    i = 0
    for _ in range(2):
        if name.startswith("`", i):
            end = name.find("`", i + 1)
            part, quoted_part, i = name[i + 1:end], True, end + 1
        else:
            end = name.find(".", i)
            part, quoted_part, i = name[i:end], False, end
        if end < 0 or not name.startswith(".", i) or not IDENTIFIER_PART.fullmatch(part):
            return None
        parts.append((part, quoted_part))
        i += 1
    return parts[0], parts[1], name[i:]


def _host_and_port(text: str) -> tuple[str, int]:
    """`adb-1.azuredatabricks.net`, `https://adb-1.azuredatabricks.net/` (as copied from a
    browser) or `localhost:8443`."""
    host = text.strip().removeprefix("https://").split("/", 1)[0]
    if ":" in host:
        host, port = host.rsplit(":", 1)
        return host, int(port)
    return host, 443


def parse(environ: Mapping[str, str]) -> DatabricksEnv | None:
    """The Databricks warehouse these variables name, or None. Some but not all workspace
    variables set is an error: a typo must not quietly test nothing."""
    given = [v for v in WORKSPACE_VARS if environ.get(v)]
    standin_dir = environ.get("DBX_STANDIN_COMPAT_DIR") if environ.get("DBX_STANDIN_HOST") else None
    standin_at = (environ.get("DBX_STANDIN_HOST", ""), int(environ.get("DBX_STANDIN_PORT") or 443))
    if given:
        missing = [v for v in WORKSPACE_VARS if v not in given]
        if missing:
            raise ValueError(f"set {', '.join(missing)} too (or unset {', '.join(given)}) to test a Databricks workspace")
        host, port = _host_and_port(environ[WORKSPACE_VARS[0]])
        catalog = environ[WORKSPACE_VARS[3]]
        if not IDENTIFIER_PART.fullmatch(catalog):
            raise ValueError(f"{WORKSPACE_VARS[3]}={catalog!r} is not a catalog name")
        event_table = environ.get(EVENT_TABLE_VAR) or None
        if event_table:
            parse_table_name(event_table, min_parts=3, max_parts=3, what=EVENT_TABLE_VAR)
        is_standin = standin_dir is not None and (host, port) == standin_at
        return DatabricksEnv("workspace", host, port, environ[WORKSPACE_VARS[1]], environ[WORKSPACE_VARS[2]],
                             is_standin, standin_dir if is_standin else None, catalog=catalog, event_table=event_table)
    if standin_dir is None:
        return None
    return DatabricksEnv("standin", standin_at[0], standin_at[1], environ["DBX_STANDIN_HTTP_PATH"],
                         environ["DBX_STANDIN_TOKEN"], True, standin_dir)


# Read once: the bridge_home fixture empties BRIDGE_* settings inside tests, and the run's name
# must not change in the middle of a session.
ENV = parse(os.environ)
