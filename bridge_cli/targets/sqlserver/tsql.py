"""T-SQL text for the SQL Server target: pure functions, unit-tested without a server.

Values are always pymssql parameters (%s). pymssql finds placeholders with a regex over the whole
statement, so an identifier holding '%' could be mistaken for one: such names are refused.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bridge_cli.errors import PermanentError
from bridge_cli.events import Operation
from bridge_cli.identifiers import TableName
from bridge_cli.targets import LEDGER_DETAILS, ApplyPlan, TargetColumn
from bridge_cli.targets.common import where_clause
from bridge_cli.targets.sync import MAX_EXAMPLES, SyncSQL, slice_statements

STAGE = "#bridge_stage"  # session-private: the staging table of every path on the session's connection
STAGE_PREFIX = "bridge_stage_"  # shared staging tables (a bulk load on its own connection) in the ledger schema
ROW = "__bridge_row"    # staging order, so "first row per key" means first in the source; sent explicitly
RANK = "__bridge_rank"
MAX_ROWS_PER_VALUES = 1000  # SQL Server's limit for one VALUES list
_COLLATION = re.compile(r"[A-Za-z0-9_]+")


def q(name: str) -> str:
    if "%" in name:
        raise PermanentError(f"column or table name {name!r} contains '%', which bridge cannot send safely")
    return "[" + name.replace("]", "]]") + "]"


def table_sql(name: TableName) -> str:
    return ".".join(q(p) for p in name.parts)


def column_type_sql(
    type_name: str, max_length: int, precision: int, scale: int, collation: str | None
) -> str:
    """A column's declared type from sys.columns, for a staging table shaped like the target."""
    kind = type_name.lower()
    if kind in ("nvarchar", "nchar"):
        text = f"{kind}(max)" if max_length == -1 else f"{kind}({max(1, max_length // 2)})"
    elif kind in ("varchar", "char", "varbinary", "binary"):
        text = f"{kind}(max)" if max_length == -1 else f"{kind}({max(1, max_length)})"
    elif kind in ("decimal", "numeric"):
        text = f"{kind}({precision},{scale})"
    elif kind in ("datetime2", "datetimeoffset", "time"):
        text = f"{kind}({scale})"
    else:
        text = kind
    if collation and _COLLATION.fullmatch(collation):
        text += f" COLLATE {collation}"
    return text


def create_stage_sql(
    plan: ApplyPlan, stage: str = STAGE, server_numbers: bool = False, staged: Mapping[str, str] | None = None,
) -> str:
    """The order column comes first. Loads that map by position send it with the rows; a load of
    ordered single-row executions (parameter arrays) lets the server number them (IDENTITY).
    `staged` types some columns otherwise in the stage (cast back by `apply_sql`'s `casts`)."""
    staged = staged or {}
    columns = ", ".join(f"{q(c.name)} {staged.get(c.name, c.type)} NULL" for c in plan.columns)
    order = "BIGINT IDENTITY(1,1) NOT NULL" if server_numbers else "BIGINT NOT NULL"
    return f"CREATE TABLE {stage} ({q(ROW)} {order}, {columns})"


def text_staged_types(plan: ApplyPlan) -> dict[str, str]:
    """Columns a JDBC load stages as text: a compatible server (Babelfish) converts no text
    parameter to DATETIMEOFFSET implicitly, though SQL Server does; the apply's explicit CAST is
    the same conversion on both."""
    return {c.name: "nvarchar(40)" for c in plan.columns if c.type.split("(")[0].lower() == "datetimeoffset"}


def drop_stage_sql(stage: str = STAGE) -> str:
    if stage == STAGE:
        return f"IF OBJECT_ID(N'tempdb..{STAGE}') IS NOT NULL DROP TABLE {STAGE}"
    return f"IF OBJECT_ID(N'{stage}', N'U') IS NOT NULL DROP TABLE {stage}"


def shared_stage_name(schema: str, token: str) -> str:
    """A uniquely named permanent staging table, for loads that run on another connection."""
    if not re.fullmatch(r"[0-9a-f]{8,32}", token):
        raise ValueError("stage token must be hex")
    return f"{q(schema)}.{q(STAGE_PREFIX + token)}"


def event_stage_token(event_id: str) -> str:
    """A stage token that starts with the event's own mark: a later attempt of the same event
    finds the stages an earlier one left (a worker killed while Spark loaded its stage)."""
    return event_stage_mark(event_id) + uuid.uuid4().hex[:16]


def event_stage_mark(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()[:16]


def event_stages_sql() -> str:
    """The shared stages of one event's earlier attempts, by name prefix (a parameter)."""
    return (
        "SELECT s.name, t.name FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id "
        "WHERE s.name = %s AND t.name LIKE %s"
    )


def stale_stages_sql() -> str:
    """Shared staging tables a crashed worker left behind: older than the given number of hours."""
    return (
        "SELECT s.name, t.name FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id "
        f"WHERE t.name LIKE N'{STAGE_PREFIX}%%' AND t.create_date < DATEADD(hour, -%s, SYSDATETIME())"
    )


def insert_values_sql(
    columns: Sequence[TargetColumn], rows: int, stage: str = STAGE, cast_types: frozenset[str] = frozenset(),
    numbered: bool = True,
) -> str:
    """Multi-row VALUES into the stage, each row led by its order number unless the server numbers
    them; columns whose base type is in `cast_types` are sent as text and cast explicitly (some
    servers will not convert a text parameter implicitly)."""
    marks = (["%s"] if numbered else []) + [
        f"CAST(%s AS {c.type})" if c.type.split("(")[0].lower() in cast_types else "%s" for c in columns
    ]
    row = "(" + ", ".join(marks) + ")"
    names = ", ".join([q(ROW)] * numbered + [q(c.name) for c in columns])
    return f"INSERT INTO {stage} ({names}) VALUES " + ", ".join(row for _ in range(rows))


def _stage_columns(plan: ApplyPlan, casts: Mapping[str, str]) -> str:
    """The stage's order column and the plan's columns, those staged as another type cast back."""
    return ", ".join([q(ROW)] + [
        f"CAST({q(c.name)} AS {c.type}) AS {q(c.name)}" if c.name in casts else q(c.name) for c in plan.columns
    ])


def _first_per_key(plan: ApplyPlan, stage: str, casts: Mapping[str, str]) -> str:
    keys = ", ".join(q(k.name) for k in plan.keys)
    return (
        f"(SELECT {_stage_columns(plan, casts)}, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {q(ROW)}) "
        f"AS {q(RANK)} FROM {stage}) AS s"
    )


def _staged(plan: ApplyPlan, stage: str, casts: Mapping[str, str]) -> str:
    """The stage as it is, for statements that run after its keys were found unique."""
    return f"(SELECT {_stage_columns(plan, casts)} FROM {stage}) AS s"


def _key_match(plan: ApplyPlan) -> str:
    return " AND ".join(f"d.{q(k.name)} = s.{q(k.name)}" for k in plan.keys)


def apply_sql(plan: ApplyPlan, stage: str = STAGE, casts: Mapping[str, str] | None = None) -> tuple[str, list[Any]]:
    """The one set-based statement of an event, with its parameters; `casts` names the stage
    columns staged as another type (`create_stage_sql`'s `staged`), cast back to the target's."""
    casts = casts or {}
    target = table_sql(plan.table.name)
    if plan.operation is Operation.INSERT:
        columns = ", ".join(q(c.name) for c in plan.columns)
        selected = ", ".join(f"s.{q(c.name)}" for c in plan.columns)
        # UPDLOCK+HOLDLOCK: a concurrent writer cannot slip the same key in between check and insert.
        return (
            f"INSERT INTO {target} ({columns}) SELECT {selected} FROM {_first_per_key(plan, stage, casts)} "
            f"WHERE s.{q(RANK)} = 1 AND NOT EXISTS "
            f"(SELECT 1 FROM {target} AS d WITH (UPDLOCK, HOLDLOCK) WHERE {_key_match(plan)})",
            [],
        )
    if plan.operation is Operation.UPDATE:
        sets = ", ".join(f"d.{q(c.name)} = s.{q(c.name)}" for c in plan.set_columns)
        return (
            f"UPDATE d SET {sets} FROM {target} AS d INNER JOIN {_first_per_key(plan, stage, casts)} "
            f"ON s.{q(RANK)} = 1 AND {_key_match(plan)}",
            [],
        )
    where, params = where_clause(plan.filters, q, "%s")
    # One row over the cap is enough to know the event is too big; the caller rolls back.
    return f"DELETE TOP (%s) FROM {target} WHERE {where}", [plan.max_delete_rows + 1, *params]


# Base types whose `=` is not "the same value": strings compare under their collation (case,
# accents, trailing spaces, characters it ignores), binaries ignore trailing zero bytes,
# DATETIMEOFFSET compares instants and not offsets. changed_only compares these exactly.
_TEXT = frozenset({"char", "varchar", "nchar", "nvarchar", "text", "ntext"})
_UNICODE = frozenset({"nchar", "nvarchar", "ntext"})
_AS_BYTES = frozenset({"binary", "varbinary", "image", "xml"})
# Code point against code point: no case, accent or width folding, no ignorable characters.
BINARY_COLLATION = "Latin1_General_BIN2"


def _same_value(column: TargetColumn) -> str:
    """T-SQL that is true when d's and s's values of `column` (both not NULL) are the same."""
    d, s = f"d.{q(column.name)}", f"s.{q(column.name)}"
    kind = column.type.split("(")[0].strip().lower()
    if kind in _TEXT:
        return _same_text(d, s, kind)
    if kind in _AS_BYTES:
        d, s = f"CAST({d} AS VARBINARY(MAX))", f"CAST({s} AS VARBINARY(MAX))"
        return f"{d} = {s} AND DATALENGTH({d}) = DATALENGTH({s})"
    if kind == "datetimeoffset":
        return f"{d} = {s} AND DATEPART(TZOFFSET, {d}) = DATEPART(TZOFFSET, {s})"
    return f"{d} = {s}"


def _same_text(d: str, s: str, kind: str) -> str:
    """Strings: the same characters under a binary collation, and the same length in bytes (`=`
    pads trailing spaces under every collation, binary ones too).

    Not their bytes alone: Babelfish casts NVARCHAR to VARBINARY through code page 1252, so '東京'
    and '東亰' both became '??' and compared the same. For VARCHAR the bytes stay as well: on SQL
    Server a COLLATE into another code page (a Japanese or _UTF8 column) could translate the text
    lossily, while its stored bytes are exact. Every test is true for equal values on both servers,
    and together they are exact on each."""
    if kind in ("text", "ntext"):  # these take no `=`
        d_text, s_text = f"CAST({d} AS NVARCHAR(MAX))", f"CAST({s} AS NVARCHAR(MAX))"
    else:
        d_text, s_text = d, s
    same = [
        f"{d_text} COLLATE {BINARY_COLLATION} = {s_text} COLLATE {BINARY_COLLATION}",
        f"DATALENGTH({d}) = DATALENGTH({s})",
    ]
    if kind not in _UNICODE:
        same.insert(0, f"CAST({d} AS VARBINARY(MAX)) = CAST({s} AS VARBINARY(MAX))")
    return " AND ".join(same)


def differs_sql(columns: Sequence[TargetColumn]) -> str:
    """True when any of `columns` really differs between d and s, NULL-safe: NULL against NULL is
    the same, NULL against a value differs."""
    tests = [
        f"CASE WHEN d.{q(c.name)} IS NULL AND s.{q(c.name)} IS NULL THEN 0 "
        f"WHEN d.{q(c.name)} IS NULL OR s.{q(c.name)} IS NULL THEN 1 "
        f"WHEN {_same_value(c)} THEN 0 ELSE 1 END = 1"
        for c in columns
    ]
    return "(" + " OR ".join(tests) + ")"


def sync_sql(plan: ApplyPlan, stage: str = STAGE, casts: Mapping[str, str] | None = None) -> SyncSQL:
    """UPSERT and REPLACE as set-based statements, never MERGE (its concurrency bugs, and servers
    such as Babelfish lack it). UPSERT's statements read the target WITH (UPDLOCK, HOLDLOCK): the
    key ranges they look at stay locked to the commit, so no concurrent writer inserts a key
    between the UPDATE and the INSERT of the missing ones. Inserts go in source order (ORDER BY the
    staging order), so an IDENTITY column numbers new rows as the source lists them, as on SQLite,
    whatever order a parallel load (Spark) left in the stage.

    Every statement but the duplicate checks reads the stage as it is, without INSERT's and
    UPDATE's first-row-per-key ranking: `apply_sync` refuses duplicate keys before any of them
    runs, so each key has one row, and the ranking cost a sort of the whole stage per statement
    (a third or more of an UPSERT's apply at 100,000 rows on Babelfish, bench/bench_sync.py)."""
    casts = casts or {}
    target = table_sql(plan.table.name)
    keys = ", ".join(q(k.name) for k in plan.keys)
    source = _staged(plan, stage, casts)
    locked = f"{target} AS d WITH (UPDLOCK, HOLDLOCK)"
    columns = ", ".join(q(c.name) for c in plan.columns)
    selected = ", ".join(f"s.{q(c.name)}" for c in plan.columns)
    update = None
    if plan.set_columns:
        sets = ", ".join(f"d.{q(c.name)} = s.{q(c.name)}" for c in plan.set_columns)
        update = f"UPDATE d SET {sets} FROM {locked} INNER JOIN {source} ON {_key_match(plan)}"
        if plan.changed_only:
            update += f" WHERE {differs_sql(plan.set_columns)}"
    outside, outside_example, delete_slice = slice_statements(
        plan, target, source, q, "%s", f"s.{q(ROW)}", lambda columns, rest: f"SELECT TOP 1 {columns} {rest}"
    )
    return SyncSQL(
        stage_count=f"SELECT COUNT_BIG(*) FROM {stage}",
        duplicates=(
            f"SELECT COUNT_BIG(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT_BIG(*) AS n FROM {stage} "
            f"GROUP BY {keys} HAVING COUNT_BIG(*) > 1) AS dup"
        ),
        duplicate_examples=(
            f"SELECT TOP {MAX_EXAMPLES} {keys} FROM {stage} GROUP BY {keys} HAVING COUNT_BIG(*) > 1 "
            f"ORDER BY MIN({q(ROW)})"
        ),
        matched=(
            f"SELECT COUNT_BIG(*) FROM {source} WHERE EXISTS (SELECT 1 FROM {locked} WHERE {_key_match(plan)})"
        ),
        update=update,
        insert_missing=(
            f"INSERT INTO {target} ({columns}) SELECT {selected} FROM {source} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {locked} WHERE {_key_match(plan)}) ORDER BY s.{q(ROW)}"
        ),
        outside=outside,
        outside_example=outside_example,
        delete_slice=delete_slice,
        insert_all=f"INSERT INTO {target} ({columns}) SELECT {selected} FROM {source} ORDER BY s.{q(ROW)}",
    )


def identity_insert_sql(plan: ApplyPlan, on: bool) -> str:
    return f"SET IDENTITY_INSERT {table_sql(plan.table.name)} {'ON' if on else 'OFF'}"


def describe_sql() -> str:
    return (
        "SELECT c.name, TYPE_NAME(c.system_type_id), c.max_length, c.precision, c.scale, "
        "c.is_nullable, CAST(COLUMNPROPERTY(c.object_id, c.name, 'IsIdentity') AS INT), "
        "CAST(c.is_identity AS INT), c.collation_name "
        "FROM sys.columns AS c WHERE c.object_id = OBJECT_ID(%s, N'U') ORDER BY c.column_id"
    )


LEDGER_IDS_PER_STATEMENT = 500  # ids bound in one statement (SQL Server allows 2100 parameters)


def ledger_rows_sql(ledger: TableName, ids: int, count_only: bool) -> str:
    """DELETE (or count) the ledger rows of `ids` event ids, each a parameter."""
    marks = ", ".join("%s" for _ in range(ids))
    verb = "SELECT COUNT(*) FROM" if count_only else "DELETE FROM"
    return f"{verb} {table_sql(ledger)} WHERE event_id IN ({marks})"


def ledger_ddl(ledger: TableName) -> list[str]:
    schema = ledger.schema
    # Identifiers were validated (letters, digits, _ $ -), so they can sit in the EXEC string.
    return [
        f"IF SCHEMA_ID(N'{schema}') IS NULL EXEC(N'CREATE SCHEMA {q(schema)}')",
        f"IF OBJECT_ID(N'{table_sql(ledger)}', N'U') IS NULL CREATE TABLE {table_sql(ledger)} ("
        "event_id NVARCHAR(200) NOT NULL PRIMARY KEY, operation NVARCHAR(10) NOT NULL, "
        "target_table NVARCHAR(400) NOT NULL, rows_affected BIGINT NOT NULL, "
        f"applied_at DATETIME2(3) NOT NULL, {LEDGER_DETAILS_COLUMN})",
    ]


LEDGER_DETAILS_COLUMN = f"{LEDGER_DETAILS} NVARCHAR(400) NULL"  # an UPSERT's or REPLACE's counts, JSON


def add_ledger_details_sql(ledger: TableName) -> str:
    """The details column, for a ledger created before it."""
    return f"ALTER TABLE {table_sql(ledger)} ADD {LEDGER_DETAILS_COLUMN}"
