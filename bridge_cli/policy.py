"""What an event may reach: the profile's `allowed_sources` and `allowed_targets`, and the tables
no event ever reaches, whatever those lists say (bridge's own tables and the servers' system tables).

Event rows are untrusted (INSERT on the event table is granted to every job that submits), and the
worker acts with its own credentials: so what a row can make it read or write is bounded here, by
the profile, never by the row. The same checks run in `bridge submit`, `submit --check`, the jobs
API and the worker.

Patterns are SQL Server names (bridge_cli/patterns.py parses and matches them; bridge_cli/config.py
has checked every one when the profile loaded).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge_cli.config import DEFAULT_EVENT_TABLE, DEFAULT_LEDGER_TABLE, Settings
from bridge_cli.errors import ConfigError, PermanentError, ValidationError
from bridge_cli.identifiers import TableName, parse_table_name, parse_target_table
from bridge_cli.lakes import control_table_name, workers_table_name
from bridge_cli.patterns import NamePattern, parse_patterns

# Schemas that belong to the server: never a target, whatever allowed_targets says.
SYSTEM_SCHEMAS = frozenset({"sys", "information_schema", "guest"})
# Tables named so are bridge's stages (SQL Server's `bridge_stage_<hex>`, SQLite's `bridge_stage`)
# or SQLite's own (`sqlite_sequence`, `sqlite_master`, ...): never a target. (prefix, why)
PROTECTED_TABLE_PREFIXES = (
    ("bridge_stage", "bridge_stage* tables are bridge's staging tables"),
    ("sqlite_", "sqlite_* tables belong to SQLite"),
)


@dataclass(frozen=True)
class TablePolicy:
    """Which sources an event may read and which targets it may write."""

    allowed_sources: tuple[NamePattern, ...]
    allowed_targets: tuple[NamePattern, ...]
    ledger_table: TableName  # schema.table on the target
    event_table: TableName  # catalog.schema.table in the lake
    workers_table: TableName
    control_table: TableName

    def check_target(self, target: TableName) -> None:
        """PermanentError when `target` is one of bridge's or the server's own tables, or is not
        in allowed_targets."""
        _check("target", target, self._protected_target(target), self.allowed_targets)

    def check_source(self, source: TableName) -> None:
        """PermanentError when `source` is bridge's event, workers or control table, or is not in
        allowed_sources."""
        _check("source", source, self._protected_source(source), self.allowed_sources)

    def _protected_target(self, target: TableName) -> str | None:
        schema, table = target.schema.lower(), target.table.lower()
        if _same(target, self.ledger_table):
            return "it is bridge's ledger (the record of applied events)"
        own_tables = ((self.event_table, "event"), (self.workers_table, "workers"), (self.control_table, "control"))
        for own, what in own_tables:
            if (schema, table) == (own.schema.lower(), own.table.lower()):
                return f"it has the name of bridge's {what} table"
        if schema in SYSTEM_SCHEMAS:
            return f"schema {target.schema} belongs to the server"
        return next((why for prefix, why in PROTECTED_TABLE_PREFIXES if table.startswith(prefix)), None)

    def _protected_source(self, source: TableName) -> str | None:
        if _same(source, self.event_table):
            return "it is bridge's event table"
        if _same(source, self.workers_table):
            return "it is bridge's workers table"
        if _same(source, self.control_table):
            return "it is bridge's control table (pauses and cancel requests)"
        return None


def _check(what: str, name: TableName, protected: str | None, allowed: tuple[NamePattern, ...]) -> None:
    if protected:
        raise PermanentError(f"{what} table {name} is refused: {protected}")
    if not any(p.matches(name) for p in allowed):
        shown = ", ".join(p.text for p in allowed)
        raise PermanentError(
            f"{what} table {name} is not allowed by this profile (allowed_{what}s: {shown})"
        )


def _same(a: TableName, b: TableName) -> bool:
    return tuple(p.lower() for p in a.parts) == tuple(p.lower() for p in b.parts)


def table_policy(settings: Settings) -> TablePolicy:
    """The profile's policy; ConfigError naming the setting when a pattern is malformed."""
    lists = {}
    for key, parts in (("allowed_sources", 3), ("allowed_targets", 2)):
        try:
            lists[key] = parse_patterns(getattr(settings, key), max_parts=parts)
        except ValidationError as exc:
            raise ConfigError(f"{settings.config_file or '<embedded default>'}: profiles."
                              f"{settings.profile}.{key}: {exc}") from None
    event_table = parse_table_name(
        str(settings.lake.get("event_table") or DEFAULT_EVENT_TABLE), min_parts=3, max_parts=3,
        what="event_table",
    )
    return TablePolicy(
        allowed_sources=lists["allowed_sources"],
        allowed_targets=lists["allowed_targets"],
        # as the targets read it: schema.table, a bare name meaning dbo's
        ledger_table=parse_target_table(str(settings.target.get("ledger_table") or DEFAULT_LEDGER_TABLE)),
        event_table=event_table,
        workers_table=workers_table_name(event_table),
        control_table=control_table_name(event_table),
    )
