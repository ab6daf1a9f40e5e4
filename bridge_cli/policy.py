"""What an event may reach: the profile's `allowed_sources` and `allowed_targets`, and the tables
no event ever reaches, whatever those lists say (bridge's own tables and the servers' system tables).

Event rows are untrusted (INSERT on the event table is granted to every job that submits), and the
worker acts with its own credentials: so what a row can make it read or write is bounded here, by
the profile, never by the row. The same checks run in `bridge submit`, `submit --check`, the jobs
API and the worker.

Patterns are SQL Server names: parts separated by dots, each part bare (letters, digits, `_`, `$`,
`-`, and `*`, the only wildcard, matching any run of characters within the part) or quoted with
brackets or backticks (a quoted part is a literal name). A last part that is a bare `*` also covers
any parts that follow (`*` is every table, `c.*` every table of catalog `c`). A one-part target
pattern other than `*` names a table of `dbo`, as a bare target name does. Names compare without
regard to case, as SQL Server's default collation and Databricks do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge_cli.config import DEFAULT_EVENT_TABLE, DEFAULT_LEDGER_TABLE, Settings
from bridge_cli.errors import ConfigError, PermanentError, ValidationError
from bridge_cli.identifiers import TableName, parse_table_name, parse_target_table
from bridge_cli.lakes import workers_table_name

# A bare pattern part: an identifier's characters plus the wildcard.
_BARE_PART = re.compile(r"[A-Za-z0-9_$\-*]{1,128}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$\-]{0,127}")

# Schemas that belong to the server: never a target, whatever allowed_targets says.
SYSTEM_SCHEMAS = frozenset({"sys", "information_schema", "guest"})
# Tables named so are bridge's stages (SQL Server's `bridge_stage_<hex>`, SQLite's `bridge_stage`)
# or SQLite's own (`sqlite_sequence`, `sqlite_master`, ...): never a target.
PROTECTED_TABLE_PREFIXES = ("bridge_stage", "sqlite_")


@dataclass(frozen=True)
class NamePart:
    text: str  # lower-cased
    quoted: bool

    def matches(self, part: str) -> bool:
        if self.quoted or "*" not in self.text:
            return part.lower() == self.text
        regex = ".*".join(re.escape(piece) for piece in self.text.split("*"))
        return re.fullmatch(regex, part.lower(), flags=re.DOTALL) is not None


@dataclass(frozen=True)
class NamePattern:
    """One entry of `allowed_sources` or `allowed_targets`, parsed."""

    text: str
    parts: tuple[NamePart, ...]

    @property
    def _open_ended(self) -> bool:
        last = self.parts[-1]
        return not last.quoted and last.text == "*"

    def matches(self, name: TableName) -> bool:
        wanted = self.parts
        if len(wanted) > len(name.parts):
            return False
        if len(wanted) < len(name.parts):
            if not self._open_ended:
                return False
            wanted = wanted[:-1]
        return all(p.matches(n) for p, n in zip(wanted, name.parts, strict=False))


def split_pattern(text: str) -> list[NamePart]:
    """`[dbo].[users]`, `` `mi-catalog`.* ``, `dbo.user*` -> parts; ValidationError when malformed."""
    parts: list[NamePart] = []
    i, text = 0, text.strip()
    if not text:
        raise ValidationError("a pattern is empty")
    while True:
        if i < len(text) and text[i] in "[`":
            close = "]" if text[i] == "[" else "`"
            value, i = _quoted(text, i + 1, close)
            if not _IDENTIFIER.fullmatch(value):
                raise ValidationError(
                    f"pattern {text!r}: quoted part {value!r} is not a valid name (letters, digits, "
                    "'_', '$' or '-')"
                )
            parts.append(NamePart(value.lower(), quoted=True))
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            value = text[i:end]
            if not _BARE_PART.fullmatch(value):
                raise ValidationError(
                    f"pattern {text!r}: part {value!r} may only use letters, digits, '_', '$', '-' "
                    "and the wildcard '*' (quote a name with [brackets] or `backticks`)"
                )
            parts.append(NamePart(value.lower(), quoted=False))
            i = end
        if i == len(text):
            return parts
        if text[i] != ".":
            raise ValidationError(f"pattern {text!r}: unexpected {text[i]!r} after a quoted part")
        i += 1
        if i == len(text):
            raise ValidationError(f"pattern {text!r} ends with a dot")


def _quoted(text: str, start: int, close: str) -> tuple[str, int]:
    """The quoted part starting at `start` (after the opening quote), with a doubled closing
    quote standing for itself; and the index after the closing quote."""
    out: list[str] = []
    i = start
    while i < len(text):
        if text[i] == close:
            if i + 1 < len(text) and text[i + 1] == close:
                out.append(close)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise ValidationError(f"pattern {text!r}: unclosed {'[' if close == ']' else '`'}")


def parse_pattern(text: str, *, max_parts: int) -> NamePattern:
    """A source pattern (`max_parts=3`: catalog.schema.table) or a target one (2: schema.table)."""
    parts = split_pattern(text)
    if len(parts) > max_parts:
        shape = "catalog.schema.table" if max_parts == 3 else "schema.table"
        raise ValidationError(f"pattern {text!r} has more parts than {shape}")
    if len(parts) < max_parts:
        last = parts[-1]
        if max_parts == 2 and len(parts) == 1 and not (not last.quoted and last.text == "*"):
            parts = [NamePart("dbo", quoted=True), last]  # a bare table name is dbo's
        elif last.quoted or last.text != "*":
            shape = "catalog.schema.table" if max_parts == 3 else "schema.table"
            raise ValidationError(
                f"pattern {text!r} must name {shape}, or end with '.*' to cover every table below"
            )
    return NamePattern(text.strip(), tuple(parts))


def parse_patterns(items: Sequence[str], *, max_parts: int) -> tuple[NamePattern, ...]:
    return tuple(parse_pattern(item, max_parts=max_parts) for item in items)


@dataclass(frozen=True)
class TablePolicy:
    """Which sources an event may read and which targets it may write."""

    allowed_sources: tuple[NamePattern, ...]
    allowed_targets: tuple[NamePattern, ...]
    ledger_table: TableName  # schema.table on the target
    event_table: TableName  # catalog.schema.table in the lake
    workers_table: TableName

    def check_target(self, target: TableName) -> None:
        """PermanentError when `target` is one of bridge's or the server's own tables, or is not
        in allowed_targets."""
        reason = self._protected_target(target)
        if reason:
            raise PermanentError(f"target table {target} is refused: {reason}")
        if not any(p.matches(target) for p in self.allowed_targets):
            shown = ", ".join(p.text for p in self.allowed_targets)
            raise PermanentError(
                f"target table {target} is not allowed by this profile (allowed_targets: {shown})"
            )

    def check_source(self, source: TableName) -> None:
        reason = self._protected_source(source)
        if reason:
            raise PermanentError(f"source table {source} is refused: {reason}")
        if not any(p.matches(source) for p in self.allowed_sources):
            shown = ", ".join(p.text for p in self.allowed_sources)
            raise PermanentError(
                f"source table {source} is not allowed by this profile (allowed_sources: {shown})"
            )

    def _protected_target(self, target: TableName) -> str | None:
        schema, table = target.schema.lower(), target.table.lower()
        if _same(target, self.ledger_table):
            return "it is bridge's ledger (the record of applied events)"
        for own, what in ((self.event_table, "event"), (self.workers_table, "workers")):
            if (schema, table) == (own.schema.lower(), own.table.lower()):
                return f"it has the name of bridge's {what} table"
        if schema in SYSTEM_SCHEMAS:
            return f"schema {target.schema} belongs to the server"
        if table.startswith(PROTECTED_TABLE_PREFIXES[0]):
            return "bridge_stage* tables are bridge's staging tables"
        if table.startswith(PROTECTED_TABLE_PREFIXES[1]):
            return "sqlite_* tables belong to SQLite"
        return None

    def _protected_source(self, source: TableName) -> str | None:
        if _same(source, self.event_table):
            return "it is bridge's event table"
        if _same(source, self.workers_table):
            return "it is bridge's workers table"
        return None


def _same(a: TableName, b: TableName) -> bool:
    return tuple(p.lower() for p in a.parts) == tuple(p.lower() for p in b.parts)


def ledger_name(text: str) -> TableName:
    """The ledger table as the targets read it: schema.table, a bare name meaning dbo's."""
    return parse_target_table(text)


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
        ledger_table=ledger_name(str(settings.target.get("ledger_table") or DEFAULT_LEDGER_TABLE)),
        event_table=event_table,
        workers_table=workers_table_name(event_table),
    )
