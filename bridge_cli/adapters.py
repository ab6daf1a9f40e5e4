"""Pick the lake and target adapters a profile names; drivers are imported only when used."""

from __future__ import annotations

from bridge_cli.config import Settings
from bridge_cli.errors import ConfigError
from bridge_cli.lakes import Lake
from bridge_cli.targets import Target


def open_lake(settings: Settings, patient: bool = False) -> Lake:
    """`patient` (a worker) rides out a warehouse outage for the lake's `retry_seconds`; anything
    else (a person or a script waiting) gives up within `connect_timeout`."""
    kind = settings.lake.kind
    if kind == "duckdb":
        from bridge_cli.lakes.duckdb import DuckDBLake

        return DuckDBLake(settings)
    if kind == "databricks":
        from bridge_cli.lakes.databricks import DatabricksLake

        return DatabricksLake(settings, patient=patient)
    raise ConfigError(f"{settings.lake.source}: lake kind {kind!r} is not available yet")


def open_target(settings: Settings) -> Target:
    kind = settings.target.kind
    if kind == "sqlite":
        from bridge_cli.targets.sqlite import SQLiteTarget

        return SQLiteTarget(settings)
    if kind == "sqlserver":
        from bridge_cli.targets.sqlserver import SQLServerTarget

        return SQLServerTarget(settings)
    raise ConfigError(f"{settings.target.source}: target kind {kind!r} is not available yet")
