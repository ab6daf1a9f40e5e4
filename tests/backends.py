"""Adapter pairs for the contract suite: each knows how to make source and target tables.

Only the embedded pair (DuckDB lake, SQLite target) runs everywhere; the SQL Server and
Databricks pairs join when their servers are reachable.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge_cli.config import Settings, load_settings
from bridge_cli.engine import Engine
from bridge_cli.identifiers import parse_source_table, parse_target_table, quote_double
from bridge_cli.lakes.duckdb import DuckDBLake
from bridge_cli.targets.sqlite import SQLiteTarget


@dataclass(frozen=True)
class Col:
    """A target column in portable terms: type is int, text, bool, decimal or timestamp."""

    name: str
    type: str = "text"
    pk: bool = False
    identity: bool = False
    unique: bool = False
    not_null: bool = False


_DUCKDB_TYPES = {"int": "BIGINT", "text": "VARCHAR", "bool": "BOOLEAN",
                 "decimal": "DECIMAL(18,4)", "timestamp": "TIMESTAMP"}
_SQLITE_TYPES = {"int": "INTEGER", "text": "TEXT", "bool": "INTEGER",
                 "decimal": "NUMERIC", "timestamp": "TEXT"}


class LocalPair:
    """The embedded default: DuckDB files as the lake, SQLite files as the target."""

    name = "duckdb-sqlite"

    def __init__(self, home: Path, **overrides: Any) -> None:
        self.home = home
        base = load_settings(env={"BRIDGE_HOME": str(home)})
        defaults = {"retry_backoff": 0.0, "lock_timeout": 5.0, "lease_seconds": 30.0}
        self.settings: Settings = dataclasses.replace(base, **{**defaults, **overrides})
        self.lake = DuckDBLake(self.settings)
        self.target = SQLiteTarget(self.settings)
        self.lake.init_event_table(upgrade=False)
        self.target.init_ledger()

    def engine(self, **kwargs: Any) -> Engine:
        return Engine(self.settings, self.lake, self.target, **kwargs)

    def reconfigure(self, **overrides: Any) -> None:
        self.settings = dataclasses.replace(self.settings, **overrides)
        self.lake = DuckDBLake(self.settings)
        self.target = SQLiteTarget(self.settings)

    # -- lake --------------------------------------------------------------------------------
    def create_source(
        self, name: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]
    ) -> None:
        table = parse_source_table(name)
        body = ", ".join(f"{quote_double(c)} {_DUCKDB_TYPES[t]}" for c, t in columns.items())
        qualified = f"{quote_double(table.schema)}.{quote_double(table.table)}"
        with self.lake.connect(table.catalog, create=True) as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_double(table.schema)}")
            con.execute(f"CREATE OR REPLACE TABLE {qualified} ({body})")
            if rows:
                marks = ", ".join("?" for _ in columns)
                con.executemany(f"INSERT INTO {qualified} VALUES ({marks})", [list(r) for r in rows])

    def lake_sql(self, catalog: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lake.connect(catalog, create=True) as con:
            return con.execute(sql, list(params)).fetchall()

    def event_sql(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL against the event table's catalog; {events} stands for the table."""
        events = f'"{self.lake.event_table.schema}"."{self.lake.event_table.table}"'
        return self.lake_sql(self.lake.event_table.catalog, sql.replace("{events}", events), params)

    def source(self, name: str) -> str:
        """Where the lake keeps a test's catalog.schema.table: the name itself here."""
        return name

    def shown(self, name: str) -> str:
        """source(name) as bridge's messages write it."""
        return str(parse_source_table(self.source(name)))

    def insert_raw_event(self, values: dict[str, Any]) -> None:
        """Insert an event row the way a Databricks job's own SQL does: only these columns."""
        columns = ", ".join(quote_double(c) for c in values)
        marks = ", ".join("?" for _ in values)
        self.event_sql(f"INSERT INTO {{events}} ({columns}) VALUES ({marks})", list(values.values()))

    def set_event_fields(self, event_id: str | None, **fields: Any) -> None:
        """Change stored event columns behind the engine's back (event_id None: every row)."""
        sets = ", ".join(f"{quote_double(c)} = ?" for c in fields)
        where, params = ("WHERE event_id = ?", [event_id]) if event_id else ("", [])
        self.event_sql(f"UPDATE {{events}} SET {sets} {where}", [*fields.values(), *params])

    def drop_workers_table(self) -> None:
        """As an install from before the workers table."""
        self.event_sql(f"DROP TABLE {self.lake._workers}")

    def recreate_seed_event_table(self) -> None:
        """Replace the event table by one with only the seed guide's columns."""
        from bridge_cli.events import SEED_COLUMNS
        from bridge_cli.lakes.duckdb import _COLUMN_TYPES

        self.event_sql("DROP TABLE {events}")
        body = ", ".join(f"{quote_double(c)} {_COLUMN_TYPES[c]}" for c in SEED_COLUMNS)
        self.event_sql(f"CREATE TABLE {{events}} ({body})")

    # -- target ------------------------------------------------------------------------------
    def create_target(self, name: str, columns: Sequence[Col]) -> None:
        table = parse_target_table(name)
        parts = []
        for c in columns:
            if c.identity:
                parts.append(f"{quote_double(c.name)} INTEGER PRIMARY KEY AUTOINCREMENT")
                continue
            text = f"{quote_double(c.name)} {_SQLITE_TYPES[c.type]}"
            if c.pk:
                text += " PRIMARY KEY"
            if c.unique:
                text += " UNIQUE"
            if c.not_null:
                text += " NOT NULL"
            parts.append(text)
        path = self.target.schema_path(table.schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {quote_double(table.table)}")
            connection.execute(f"CREATE TABLE {quote_double(table.table)} ({', '.join(parts)})")
        connection.close()

    def target_rows(self, name: str, columns: Sequence[str], order_by: str) -> list[tuple[Any, ...]]:
        table = parse_target_table(name)
        select = ", ".join(quote_double(c) for c in columns)
        connection = sqlite3.connect(self.target.schema_path(table.schema))
        try:
            return connection.execute(
                f"SELECT {select} FROM {quote_double(table.table)} ORDER BY {quote_double(order_by)}"
            ).fetchall()
        finally:
            connection.close()

    def target_sql(self, schema: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.target.schema_path(schema))
        try:
            rows = connection.execute(sql, list(params)).fetchall()
            connection.commit()
            return rows
        finally:
            connection.close()

    def insert_target_rows(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = parse_target_table(name)
        marks = ", ".join("?" for _ in columns)
        names = ", ".join(quote_double(c) for c in columns)
        for row in rows:
            self.target_sql(table.schema, f"INSERT INTO {quote_double(table.table)} ({names}) VALUES ({marks})", row)

    def delete_target_rows(self, name: str, column: str, value: Any) -> None:
        table = parse_target_table(name)
        self.target_sql(
            table.schema, f"DELETE FROM {quote_double(table.table)} WHERE {quote_double(column)} = ?", [value]
        )

    @contextmanager
    def lock_target(self, name: str) -> Iterator[None]:
        """Another session holds an exclusive lock on the target table meanwhile."""
        table = parse_target_table(name)
        blocker = sqlite3.connect(self.target.schema_path(table.schema), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    def ledger_ids(self) -> list[str]:
        rows = self.target_sql(
            self.target.ledger.schema,
            f"SELECT event_id FROM {quote_double(self.target.ledger.table)} ORDER BY event_id",
        )
        return [r[0] for r in rows]


PAIRS = [LocalPair]


_MSSQL_TYPES = {"int": "BIGINT", "text": "NVARCHAR(200)", "bool": "BIT",
                "decimal": "DECIMAL(18,4)", "timestamp": "DATETIME2(6)"}


def mssql_url() -> dict[str, Any] | None:
    """BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:port/db[?option=value&...] as connection settings;
    query options (e.g. encrypt=optional, trust_server_certificate=true) are target options."""
    import os
    from urllib.parse import parse_qsl, unquote, urlparse

    url = os.environ.get("BRIDGE_TEST_MSSQL_URL")
    if not url:
        return None
    parts = urlparse(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 1433,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or "master",
        **dict(parse_qsl(parts.query)),
    }


def forced_write_method() -> dict[str, str]:
    """BRIDGE_TEST_MSSQL_WRITE_METHOD=bulk: every SQL Server pair loads through that method (the CI
    workflow forces bulk copy on a real SQL Server; Babelfish refuses it)."""
    import os

    method = os.environ.get("BRIDGE_TEST_MSSQL_WRITE_METHOD")
    return {"write_method": method} if method else {}


def mssql_python_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mssql_python") is not None


# Which driver a profile that names none must get in this process. Unset: mssql-python. The run that
# makes mssql-python unloadable (`make test-sqlserver-auto`, LD_LIBRARY_PATH=UNLOADABLE_ODBC) sets
# it to pymssql; conftest's bridge_home keeps it.
EXPECT_DRIVER_ENV = "BRIDGE_TEST_EXPECT_DRIVER"
UNLOADABLE_ODBC = Path(__file__).parent / "fixtures" / "unloadable-odbc"


def expected_auto_driver() -> str:
    import os

    value = os.environ.get(EXPECT_DRIVER_ENV, "").strip() or "mssql-python"
    if value not in ("mssql-python", "pymssql"):
        raise ValueError(f"{EXPECT_DRIVER_ENV}={value!r}: expected mssql-python or pymssql")
    return value


def auto_pair_unavailable() -> str | None:
    """Why the no-driver pair cannot run its expected mode here, or None."""
    if expected_auto_driver() == "mssql-python" and not mssql_python_available():
        return (f"mssql-python is not installed, so `driver: auto` can only fall back "
                f"({EXPECT_DRIVER_ENV}=pymssql runs the no-driver pair on its fallback)")
    return None


def _bits_as_ints(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """mssql-python reads BIT as bool where pymssql reads 1 / 0: compare values, not Python types."""
    return [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows]


class MssqlPair(LocalPair):
    """DuckDB lake, real SQL Server (or a TDS-compatible server) as the target."""

    name = "duckdb-sqlserver"
    driver = "pymssql"  # what connects
    names_driver = True  # the profile says `driver: <driver>`; False: it names none (auto)

    def __init__(self, home: Path, **overrides: Any) -> None:
        import uuid

        from bridge_cli.config import AdapterConfig
        from bridge_cli.targets.sqlserver import SQLServerTarget

        connection = mssql_url()
        assert connection is not None
        options = {**connection, "ledger_table": f"bridge.applied_{uuid.uuid4().hex[:8]}",
                   "login_timeout": 10, **({"driver": self.driver} if self.names_driver else {}),
                   **forced_write_method(), **overrides.pop("target_options", {})}
        self.home = home
        base = load_settings(env={"BRIDGE_HOME": str(home)})
        defaults = {"retry_backoff": 0.0, "lock_timeout": 5.0, "lease_seconds": 30.0}
        self.settings = dataclasses.replace(
            base, target=AdapterConfig("sqlserver", options), **{**defaults, **overrides}
        )
        self._target_class = SQLServerTarget
        self.lake = DuckDBLake(self.settings)
        self.target = SQLServerTarget(self.settings)  # type: ignore[assignment]
        self.lake.init_event_table(upgrade=False)
        self.target.init_ledger()

    def reconfigure(self, **overrides: Any) -> None:
        self.settings = dataclasses.replace(self.settings, **overrides)
        self.lake = DuckDBLake(self.settings)
        self.target = self._target_class(self.settings)

    def _run(self, sql: str, params: Sequence[Any] = (), fetch: bool = False) -> list[tuple[Any, ...]]:
        connection = self.target.connect()  # type: ignore[attr-defined]
        try:
            cursor = connection.cursor()
            if params:
                cursor.execute(self.target.driver.sql(sql), tuple(params))  # type: ignore[attr-defined]
            else:
                cursor.execute(sql)
            return [tuple(r) for r in cursor.fetchall()] if fetch else []
        finally:
            connection.close()

    def create_target(self, name: str, columns: Sequence[Col]) -> None:
        from bridge_cli.targets.sqlserver.tsql import q, table_sql

        table = parse_target_table(name)
        parts = []
        for c in columns:
            if c.identity:
                parts.append(f"{q(c.name)} INT IDENTITY(1,1) PRIMARY KEY")
                continue
            text = f"{q(c.name)} {_MSSQL_TYPES[c.type]}"
            text += " PRIMARY KEY" if c.pk else ""
            text += " UNIQUE" if c.unique else ""
            text += " NOT NULL" if c.not_null or c.pk else " NULL"
            parts.append(text)
        self._run(f"IF SCHEMA_ID(N'{table.schema}') IS NULL EXEC(N'CREATE SCHEMA {q(table.schema)}')")
        self._run(f"IF OBJECT_ID(N'{table_sql(table)}', N'U') IS NOT NULL DROP TABLE {table_sql(table)}")
        self._run(f"CREATE TABLE {table_sql(table)} ({', '.join(parts)})")

    def target_rows(self, name: str, columns: Sequence[str], order_by: str) -> list[tuple[Any, ...]]:
        from bridge_cli.targets.sqlserver.tsql import q, table_sql

        select = ", ".join(q(c) for c in columns)
        return self._run(
            f"SELECT {select} FROM {table_sql(parse_target_table(name))} ORDER BY {q(order_by)}", fetch=True
        )

    def insert_target_rows(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        from bridge_cli.targets.sqlserver.tsql import q, table_sql

        names = ", ".join(q(c) for c in columns)
        marks = ", ".join("%s" for _ in columns)
        for row in rows:
            self._run(f"INSERT INTO {table_sql(parse_target_table(name))} ({names}) VALUES ({marks})", row)

    def delete_target_rows(self, name: str, column: str, value: Any) -> None:
        from bridge_cli.targets.sqlserver.tsql import q, table_sql

        self._run(f"DELETE FROM {table_sql(parse_target_table(name))} WHERE {q(column)} = %s", [value])

    @contextmanager
    def lock_target(self, name: str) -> Iterator[None]:
        from bridge_cli.targets.sqlserver.tsql import table_sql

        connection = self.target.connect()  # type: ignore[attr-defined]
        cursor = connection.cursor()
        cursor.execute("BEGIN TRANSACTION")
        # A schema change holds the strongest table lock on SQL Server (Sch-M) and on
        # Babelfish (PostgreSQL's ACCESS EXCLUSIVE), where table hints such as TABLOCKX are ignored.
        cursor.execute(f"ALTER TABLE {table_sql(parse_target_table(name))} ADD [bridge_test_lock] INT NULL")
        try:
            yield
        finally:
            cursor.execute("ROLLBACK TRANSACTION")
            connection.close()

    def ledger_ids(self) -> list[str]:
        from bridge_cli.targets.sqlserver.tsql import table_sql

        rows = self._run(f"SELECT event_id FROM {table_sql(self.target.ledger)} ORDER BY event_id", fetch=True)
        return [r[0] for r in rows]




class MssqlPythonPair(MssqlPair):
    """The same server through Microsoft's driver (mssql-python)."""

    name = "duckdb-sqlserver-mssql-python"
    driver = "mssql-python"

    def target_rows(self, name: str, columns: Sequence[str], order_by: str) -> list[tuple[Any, ...]]:
        return _bits_as_ints(super().target_rows(name, columns, order_by))


class MssqlAutoPair(MssqlPair):
    """The same server through a profile that names no driver: `driver: auto` picks mssql-python,
    or pymssql where mssql-python cannot load. Building it fails unless auto picked the driver this
    run expects (expected_auto_driver), so a run in the wrong mode cannot pass unnoticed."""

    name = "duckdb-sqlserver-auto"
    names_driver = False

    def __init__(self, home: Path, **overrides: Any) -> None:
        self.driver = expected_auto_driver()
        super().__init__(home, **overrides)
        choice = self.target.spec.choice  # type: ignore[attr-defined]
        got = None if choice is None else (choice.requested, choice.driver, choice.fell_back)
        want = ("auto", self.driver, self.driver == "pymssql")
        if got != want:
            mode = (f"mssql-python made unloadable ({EXPECT_DRIVER_ENV}=pymssql), so auto should fall back "
                    "to pymssql" if want[2] else
                    f"mssql-python loadable ({EXPECT_DRIVER_ENV} unset), so auto should pick mssql-python")
            picked = choice.describe() if choice is not None else "no choice recorded"
            raise AssertionError(f"a profile that names no driver: this run expects {mode}; it got {picked}")

    def target_rows(self, name: str, columns: Sequence[str], order_by: str) -> list[tuple[Any, ...]]:
        return _bits_as_ints(super().target_rows(name, columns, order_by))


def spark_unavailable() -> str | None:
    """Why the local Spark staging path cannot run here, or None: it needs pyspark, Java and a
    JDBC driver jar (BRIDGE_TEST_JDBC_JAR, default Debian's jTDS)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None:
        return "Java is not installed (the local Spark path needs a JVM)"
    if not Path(spark_jar()).is_file():
        return f"no JDBC driver jar at {spark_jar()} (apt-get install libjtds-java, or set BRIDGE_TEST_JDBC_JAR)"
    return None


def spark_jar() -> str:
    import os

    return os.environ.get("BRIDGE_TEST_JDBC_JAR") or "/usr/share/java/jtds-1.3.1.jar"


def local_spark(partitions: int = 2, **options: Any) -> Any:
    """A profile's `spark:` section for the local Spark path with the test JDBC jar."""
    from bridge_cli.config import AdapterConfig

    return AdapterConfig("local", {"jars": [spark_jar()], "partitions": partitions, "poll_seconds": 1, **options},
                         source="test: spark")


class MssqlSparkPair(MssqlPair):
    """The same server, every INSERT and UPDATE with a row staged by local Spark over JDBC
    (spark_min_rows: 1); DELETEs and empty sources stay on the worker's own path."""

    name = "duckdb-sqlserver-spark"

    def __init__(self, home: Path, **overrides: Any) -> None:
        super().__init__(home, **{"spark": local_spark(), "spark_min_rows": 1, **overrides})


PAIRS.append(MssqlPair)
PAIRS.append(MssqlPythonPair)
PAIRS.append(MssqlAutoPair)
PAIRS.append(MssqlSparkPair)


_SPARK_TYPES = {"int": "BIGINT", "text": "STRING", "bool": "BOOLEAN",
                "decimal": "DECIMAL(18,4)", "timestamp": "TIMESTAMP"}


def databricks_lake(home: Path, **options: Any) -> Any:
    """A DatabricksLake on the warehouse the tests were given (tests/databricks_env.py)."""
    from bridge_cli.config import AdapterConfig
    from bridge_cli.lakes.databricks import DatabricksLake
    from tests.databricks_env import ENV

    assert ENV is not None
    base = load_settings(env={"BRIDGE_HOME": str(home)})
    return DatabricksLake(dataclasses.replace(base, lake=AdapterConfig("databricks", {**ENV.lake_options(), **options})))


class DatabricksPair(LocalPair):
    """A SQL warehouse (the stand-in or a workspace, through the real connector) as the lake,
    SQLite as the target. Each pair gets its own event table, dropped when the test ends; the
    catalog.schema.table names a test gives are put where the warehouse has room for them
    (`source`)."""

    name = "databricks-sqlite"

    def __init__(self, home: Path, **overrides: Any) -> None:
        import uuid

        from bridge_cli.config import AdapterConfig
        from bridge_cli.lakes.databricks import DatabricksLake
        from tests.databricks_env import ENV

        assert ENV is not None
        self.env = ENV
        options = {**ENV.lake_options(), "event_table": ENV.event_table_name(uuid.uuid4().hex[:10])}
        self.home = home
        base = load_settings(env={"BRIDGE_HOME": str(home)})
        defaults = {"retry_backoff": 0.0, "lock_timeout": 5.0, "lease_seconds": 60.0}
        self.settings = dataclasses.replace(
            base, lake=AdapterConfig("databricks", options), **self._placed({**defaults, **overrides})
        )
        self._lake_class = DatabricksLake
        self.lake = DatabricksLake(self.settings)  # type: ignore[assignment]
        self.target = SQLiteTarget(self.settings)
        self.lake.init_event_table(upgrade=False)
        self.target.init_ledger()

    def source(self, name: str) -> str:
        return self.env.source(name)

    def _placed(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """allowed_sources patterns name sources too."""
        if "allowed_sources" in overrides:
            overrides["allowed_sources"] = tuple(self.source(p) for p in overrides["allowed_sources"])
        return overrides

    def reconfigure(self, **overrides: Any) -> None:
        self.settings = dataclasses.replace(self.settings, **self._placed(overrides))
        self.lake = self._lake_class(self.settings)
        self.target = SQLiteTarget(self.settings)

    def close(self) -> None:
        self.lake.execute(f"DROP TABLE IF EXISTS {self.lake._table}")  # type: ignore[attr-defined]
        self.lake.execute(f"DROP TABLE IF EXISTS {self.lake._workers}")  # type: ignore[attr-defined]
        self.lake.execute(f"DROP TABLE IF EXISTS {self.lake._control}")  # type: ignore[attr-defined]
        self.lake.close()  # type: ignore[attr-defined]

    def run(self, sql: str, params: dict[str, Any] | None = None, fetch: bool = False) -> list[Any]:
        return self.lake.execute(sql, params, fetch=fetch)  # type: ignore[attr-defined]

    def drop_workers_table(self) -> None:
        self.run(f"DROP TABLE IF EXISTS {self.lake._workers}")  # type: ignore[attr-defined]

    def create_source(self, name: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> None:
        from bridge_cli.identifiers import quote_backtick

        qualified = self.source_table(name)
        body = ", ".join(f"{quote_backtick(c)} {_SPARK_TYPES[t]}" for c, t in columns.items())
        self.run(f"CREATE OR REPLACE TABLE {qualified} ({body}) USING DELTA")
        if rows:
            params: dict[str, Any] = {}
            tuples = []
            for i, row in enumerate(rows):
                marks = []
                for j, value in enumerate(row):
                    params[f"r{i}_{j}"] = value
                    marks.append(f":r{i}_{j}")
                tuples.append("(" + ", ".join(marks) + ")")
            self.run(f"INSERT INTO {qualified} VALUES {', '.join(tuples)}", params)

    def source_table(self, name: str) -> str:
        """source(name), backticked for SQL, its schema made if missing."""
        from bridge_cli.identifiers import quote_backtick

        table = parse_source_table(self.source(name))
        self.run(f"CREATE SCHEMA IF NOT EXISTS {quote_backtick(table.catalog)}.{quote_backtick(table.schema)}")
        return ".".join(quote_backtick(p) for p in table.parts)

    def insert_raw_event(self, values: dict[str, Any]) -> None:
        """Only the given columns, as a Databricks job's own SQL does; the stand-in (Iceberg)
        refuses a partial column list, so there every column is named, NULL where not given."""
        from bridge_cli.events import ALL_COLUMNS
        from bridge_cli.identifiers import quote_backtick

        if isinstance(values.get("source_table"), str):
            values = {**values, "source_table": self.source(values["source_table"])}
        existing = self._columns()
        present = [c for c in ALL_COLUMNS if c in existing and (self.env.standin or c in values)]
        columns = ", ".join(quote_backtick(c) for c in present)
        marks = ", ".join(f":{c}" for c in present)
        self.run(f"INSERT INTO {self.lake._table} ({columns}) VALUES ({marks})",  # type: ignore[attr-defined]
                 {c: values.get(c) for c in present})

    def _columns(self) -> set[str]:
        return self.lake._existing_columns() or set()  # type: ignore[attr-defined]

    def set_event_fields(self, event_id: str | None, **fields: Any) -> None:
        from bridge_cli.identifiers import quote_backtick

        sets = ", ".join(f"{quote_backtick(c)} = :{c}" for c in fields)
        where = "WHERE event_id = :event_id" if event_id else ""
        self.run(f"UPDATE {self.lake._table} SET {sets} {where}",  # type: ignore[attr-defined]
                 {**fields, "event_id": event_id} if event_id else dict(fields))

    def recreate_seed_event_table(self) -> None:
        from bridge_cli.events import SEED_COLUMNS
        from bridge_cli.identifiers import quote_backtick
        from bridge_cli.lakes.databricks import COLUMN_TYPES

        table = self.lake._table  # type: ignore[attr-defined]
        self.run(f"DROP TABLE IF EXISTS {table}")
        body = ", ".join(f"{quote_backtick(c)} {COLUMN_TYPES[c]}" for c in SEED_COLUMNS)
        self.run(f"CREATE TABLE {table} ({body}) USING DELTA")


PAIRS.append(DatabricksPair)
