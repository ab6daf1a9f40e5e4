"""Seed a sample lake and target for `make demo`: the seed guide's MarketScopeAccess example.

    python -m bridge_cli.demo      # (re)creates the sample tables under $BRIDGE_HOME
"""

from __future__ import annotations

import sqlite3
import sys

from bridge_cli.config import Settings, load_settings
from bridge_cli.errors import BridgeError, not_writable
from bridge_cli.identifiers import TableName
from bridge_cli.lakes.duckdb import DuckDBLake
from bridge_cli.targets.sqlite import SQLiteTarget

NEW_USERS = [
    ("ana", True, False),
    ("bruno", True, False),
    ("carla", True, True),
    ("diego", True, False),
    ("elena", False, False),
]
CHANGED_USERS = [("bruno", True), ("diego", True)]


def seed_demo(settings: Settings) -> list[str]:
    lake = DuckDBLake(settings)
    target = SQLiteTarget(settings)
    with lake.connect("mi-catalog", create=True) as con:
        con.execute('CREATE SCHEMA IF NOT EXISTS "mi-schema"')
        con.execute(
            'CREATE OR REPLACE TABLE "mi-schema".datos_nuevos '
            "(username VARCHAR, is_user BOOLEAN, is_admin BOOLEAN)"
        )
        con.executemany('INSERT INTO "mi-schema".datos_nuevos VALUES (?, ?, ?)', NEW_USERS)
        con.execute(
            'CREATE OR REPLACE TABLE "mi-schema".datos_actualizados '
            "(username VARCHAR, is_admin BOOLEAN)"
        )
        con.executemany('INSERT INTO "mi-schema".datos_actualizados VALUES (?, ?)', CHANGED_USERS)
    path = target.schema_path("dbo")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise not_writable("target folder", path.parent, exc) from None
    connection = sqlite3.connect(path)
    try:
        connection.executescript(
            """
            DROP TABLE IF EXISTS MarketScopeAccess;
            CREATE TABLE MarketScopeAccess (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                username TEXT NOT NULL UNIQUE,
                is_user INTEGER,
                is_admin INTEGER
            );
            """
        )
    finally:
        connection.close()
    source = TableName(("mi-catalog", "mi-schema", "datos_nuevos"))
    return [
        f"lake: {source} ({len(NEW_USERS)} rows) and mi-catalog.mi-schema.datos_actualizados "
        f"({len(CHANGED_USERS)} rows) in {lake.catalog_path('mi-catalog')}",
        f"target: dbo.MarketScopeAccess (empty) in {path}",
    ]


def main() -> None:
    try:
        lines = seed_demo(load_settings())
    except BridgeError as exc:  # one line, as the `bridge` commands say it (exit 5: configuration)
        sys.stderr.write(f"Error: {exc}\n")
        raise SystemExit(5) from None
    for line in lines:
        sys.stdout.write(line + "\n")


if __name__ == "__main__":
    main()
