"""UPSERT and REPLACE: the steps every target runs from its stage, inside the event's transaction.

Each target writes the SQL (`SyncSQL`, in its own dialect) and runs it (`StatementRunner`, its
connection and error sorting); the order of the steps, the guards and their messages live here, so
that SQLite and SQL Server cannot drift apart. Every guard runs before the first row of the target
changes, or after a change the transaction then rolls back: a failed event leaves the target as
it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge_cli.errors import PermanentError
from bridge_cli.events import Operation
from bridge_cli.identifiers import shown
from bridge_cli.targets import ApplyCounts, ApplyPlan, TargetColumn
from bridge_cli.targets.common import where_clause

Statement = tuple[str, list[Any]]
MAX_EXAMPLES = 5


class StatementRunner(Protocol):
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The statement's single row."""
        ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a data change; the rows it changed."""
        ...


@dataclass(frozen=True)
class SyncSQL:
    """One plan's statements against its stage (`s`) and target (`d`), in a target's dialect."""

    stage_count: str  # -> (rows,)
    duplicates: str  # -> (keys that appear more than once, rows holding them)
    duplicate_examples: str  # -> up to MAX_EXAMPLES rows of such key values, first seen first
    matched: str  # -> (stage rows whose key the target has,); takes the key-range locks
    update: str | None  # UPSERT: the key-matched rows' non-key columns (only changed ones with changed_only)
    insert_missing: str  # UPSERT: the stage rows whose key the target lacks
    outside: Statement | None  # REPLACE with a slice: -> (stage rows outside it,)
    outside_example: Statement | None  # -> the first such row: its keys, then the slice's columns
    delete_slice: Statement  # REPLACE: the target rows of the slice
    insert_all: str  # REPLACE: every stage row


def slice_statements(
    plan: ApplyPlan, target: str, source: str, quote: Callable[[str], str], mark: str, order: str,
    first_row: Callable[[str, str], str],
) -> tuple[Statement | None, Statement | None, Statement]:
    """REPLACE's statements about its slice, in a target's dialect: the stage rows outside it (a
    count, then the first of them: keys and slice columns), None for the whole table; and the
    DELETE of the slice. `first_row(columns, rest)` is the dialect's "SELECT the first row"."""
    if not plan.filters:
        return None, None, (f"DELETE FROM {target}", [])
    inside, params = where_clause(plan.filters, lambda name: f"s.{quote(name)}", mark)
    not_inside = f"FROM {source} WHERE CASE WHEN {inside} THEN 0 ELSE 1 END = 1"
    shown = ", ".join(f"s.{quote(c.name)}" for c in (*plan.keys, *(f for f, _ in plan.filters)))
    where, where_params = where_clause(plan.filters, quote, mark)
    return (
        (f"SELECT COUNT(*) {not_inside}", params),
        (first_row(shown, f"{not_inside} ORDER BY {order}"), params),
        (f"DELETE FROM {target} WHERE {where}", where_params),
    )


def apply_sync(run: StatementRunner, sql: SyncSQL, plan: ApplyPlan) -> ApplyCounts:
    if plan.operation is Operation.UPSERT:
        return _upsert(run, sql, plan)
    if plan.operation is Operation.REPLACE:
        return _replace(run, sql, plan)
    raise ValueError(f"not a sync operation: {plan.operation.value}")


def _upsert(run: StatementRunner, sql: SyncSQL, plan: ApplyPlan) -> ApplyCounts:
    _refuse_duplicate_keys(run, sql, plan)
    # Counted first (and locked, on SQL Server) only when the UPDATE will not touch every match.
    matched = int(run.one(sql.matched)[0]) if plan.changed_only or sql.update is None else None
    updated = run.change(sql.update) if sql.update is not None else 0
    inserted = run.change(sql.insert_missing)
    unchanged = 0 if matched is None else matched - updated
    return ApplyCounts(
        inserted + updated, {"inserted": inserted, "updated": updated, "unchanged": unchanged}
    )


def _replace(run: StatementRunner, sql: SyncSQL, plan: ApplyPlan) -> ApplyCounts:
    _refuse_duplicate_keys(run, sql, plan)
    (staged,) = run.one(sql.stage_count)
    staged = int(staged)
    if sql.outside is not None and sql.outside_example is not None:
        (outside,) = run.one(*sql.outside)
        if outside:
            rows = run.all(*sql.outside_example)
            raise outside_slice_error(plan, int(outside), staged, rows[0] if rows else None)
    deleted = run.change(*sql.delete_slice)
    if deleted and staged < plan.min_ratio * deleted:
        raise PermanentError(
            f"REPLACE would replace {deleted:,} rows of {_slice_name(plan)} with {staged:,}, fewer "
            f"than replace_min_ratio={plan.min_ratio:g} of them; nothing was changed. If the slice "
            'really shrank, set metadata {"allow_shrink": true}'
        )
    # A key the target still has after the slice went is a row of another slice: inserting it
    # would fail on a unique key, or duplicate it where there is none.
    (kept,) = run.one(sql.matched)
    if kept:
        raise PermanentError(
            f"REPLACE: {int(kept):,} source row(s) have keys the target holds outside "
            f"{_slice_name(plan)}; nothing was changed: reload their own slice, or widen "
            "filter_conditions"
        )
    inserted = run.change(sql.insert_all)
    return ApplyCounts(inserted, {"deleted": deleted, "inserted": inserted})


def _refuse_duplicate_keys(run: StatementRunner, sql: SyncSQL, plan: ApplyPlan) -> None:
    """A key twice in the source is a job's bug: no rule for which row wins would be right."""
    keys, rows = run.one(sql.duplicates)
    if not keys:
        return
    examples = run.all(sql.duplicate_examples)
    shown_keys = "; ".join(key_text(plan.keys, row) for row in examples)
    raise PermanentError(
        f"{plan.operation.value} source has {int(keys):,} duplicate key(s) ({int(rows):,} rows); "
        f"keys must be unique and nothing was written. First: {shown_keys}"
    )


def outside_slice_error(
    plan: ApplyPlan, outside: int, staged: int, example: tuple[Any, ...] | None
) -> PermanentError:
    message = (
        f"REPLACE: {outside:,} of {staged:,} source rows fall outside the slice "
        f"{_slice_name(plan)}; nothing was changed (a reload of their own slice would bring them "
        "twice)"
    )
    if example is not None:
        columns = (*plan.keys, *(column for column, _ in plan.filters))
        message += f". First: {key_text(columns, example)}"
    return PermanentError(message)


def _slice_name(plan: ApplyPlan) -> str:
    if not plan.filters:
        return f"the whole table {plan.table.name}"
    conditions = {column.name: list(v) if isinstance(v, tuple) else v for column, v in plan.filters}
    return f"{json.dumps(conditions, ensure_ascii=False, default=str)[:200]} of {plan.table.name}"


def key_text(columns: Sequence[TargetColumn], row: Sequence[Any]) -> str:
    """`username='ana'`, `(region='EU', id=7)`: key values from a row, escaped and cut short."""
    parts = [f"{column.name}={_value_text(value)}" for column, value in zip(columns, row, strict=False)]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _value_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value[:32]).hex()
    if isinstance(value, str):
        return shown(value, 40)
    return shown(str(value), 40).strip("'\"")
