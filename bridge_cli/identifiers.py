"""Parse, validate and quote table and column names.

Event rows are untrusted: a table name is split into parts (backticks optional), every part must
be a plain identifier, and the adapters quote parts themselves. Nothing a user wrote is ever pasted
into SQL unquoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge_cli.errors import ValidationError

# Letters, digits, underscore, '$' and hyphen: what Databricks catalogs such as
# `000-sql-databricks-bridge` and SQL Server schemas use. No dots, quotes, spaces or semicolons.
IDENTIFIER_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$\-]{0,127}")


@dataclass(frozen=True)
class TableName:
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)

    @property
    def table(self) -> str:
        return self.parts[-1]

    @property
    def schema(self) -> str:
        return self.parts[-2]

    @property
    def catalog(self) -> str:
        return self.parts[-3]


def split_name(text: str) -> list[str]:
    """Split `a`.`b`.c, [a].[b].c or a.b.c into parts; quotes may hold hyphens but not dots."""
    parts: list[str] = []
    i = 0
    text = text.strip()
    if not text:
        raise ValidationError("table name is empty")
    while True:
        if i < len(text) and text[i] in "`[":  # `a` as in Databricks, [a] as in SQL Server
            close = "`" if text[i] == "`" else "]"
            end = text.find(close, i + 1)
            if end < 0:
                what = "backtick" if close == "`" else "bracket"
                raise ValidationError(f"unbalanced {what} in table name {shown(text)}")
            parts.append(text[i + 1 : end])
            i = end + 1
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            parts.append(text[i:end])
            i = end
        if i == len(text):
            return parts
        if text[i] != ".":
            raise ValidationError(f"unexpected character {text[i]!r} in table name {shown(text)}")
        i += 1


def shown(text: str, limit: int = 80) -> str:
    """A user-given name in a message: quoted, escaped (repr), and cut to `limit` characters, so
    a hostile row's megabyte of text makes a one-line message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"


def check_identifier(part: str, what: str = "identifier") -> str:
    if not IDENTIFIER_PART.fullmatch(part):
        raise ValidationError(
            f"invalid {what} {shown(part)}: use letters, digits, '_', '$' or '-' (at most 128)"
        )
    return part


def parse_table_name(text: str, *, min_parts: int, max_parts: int, what: str) -> TableName:
    """Parse a user-given table name, e.g. parse_table_name(s, min_parts=3, max_parts=3)."""
    parts = split_name(text)
    if not min_parts <= len(parts) <= max_parts:
        shape = "catalog.schema.table" if max_parts == 3 else "schema.table"
        raise ValidationError(f"{what} {shown(text)} must be written as {shape}")
    for part in parts:
        if not IDENTIFIER_PART.fullmatch(part):
            raise ValidationError(
                f"invalid {what} {shown(text)}: part {shown(part)} may only use letters, digits, "
                "'_', '$' or '-' (at most 128)"
            )
    return TableName(tuple(parts))


def parse_source_table(text: str) -> TableName:
    return parse_table_name(text, min_parts=3, max_parts=3, what="source table")


def parse_target_table(text: str) -> TableName:
    """schema.table; a bare table name means dbo.table as on SQL Server."""
    name = parse_table_name(text, min_parts=1, max_parts=2, what="target table")
    if len(name.parts) == 1:
        return TableName(("dbo", name.parts[0]))
    return name


def quote_double(name: str) -> str:
    """ANSI quoting (DuckDB, SQLite): double any embedded quote."""
    return '"' + name.replace('"', '""') + '"'


def quote_bracket(name: str) -> str:
    """SQL Server quoting."""
    return "[" + name.replace("]", "]]") + "]"


def quote_backtick(name: str) -> str:
    """Databricks quoting."""
    return "`" + name.replace("`", "``") + "`"
