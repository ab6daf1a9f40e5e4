"""Check a validated event against the real source and target before any row moves."""

from __future__ import annotations

from bridge_cli.config import Settings
from bridge_cli.errors import PermanentError
from bridge_cli.events import FilterValue, Job, Operation
from bridge_cli.lakes import Lake, SourceColumn
from bridge_cli.policy import table_policy
from bridge_cli.targets import ApplyPlan, Target, TargetColumn, TargetTable


def check_reach(job: Job, settings: Settings) -> None:
    """The event's tables against the profile's policy (allowed_sources, allowed_targets, and the
    tables no event reaches): PermanentError saying which and why."""
    policy = table_policy(settings)
    policy.check_target(job.target)
    if job.source is not None:
        policy.check_source(job.source)


def plan_with_stores(
    job: Job, lake: Lake, target: Target, settings: Settings
) -> tuple[ApplyPlan, list[SourceColumn] | None]:
    """Every check the worker makes before a row moves (allowed source and target, both tables,
    key and source columns, identity rules), against the real stores: the worker's own messages
    for `bridge submit --check` as for the worker."""
    check_reach(job, settings)
    table = target.describe_table(job.target)
    if table is None:
        raise PermanentError(f"target table {job.target} does not exist in the target database")
    if job.operation is Operation.DELETE:
        return plan_job(job, table, None, settings.max_delete_rows), None
    assert job.source is not None
    source_columns = lake.source_columns(job.source)
    plan = plan_job(job, table, source_columns, settings.max_delete_rows,
                    replace_min_ratio=settings.replace_min_ratio)
    return plan, source_columns


def plan_job(
    job: Job,
    target: TargetTable,
    source_columns: list[SourceColumn] | None,
    max_delete_rows: int,
    replace_min_ratio: float = 0.5,
) -> ApplyPlan:
    keys = tuple(_target_column(target, k, "primary key") for k in job.primary_keys)
    filters: list[tuple[TargetColumn, FilterValue | tuple[FilterValue, ...]]] = []
    for name, value in job.filters.items():
        column = _target_column(target, name, "filter_conditions column")
        filters.append((column, tuple(value) if isinstance(value, list) else value))
    if job.operation is Operation.DELETE:
        return ApplyPlan(
            event_id=job.event_id,
            operation=job.operation,
            table=target,
            columns=(),
            keys=keys,
            filters=tuple(filters),
            max_delete_rows=max_delete_rows,
        )
    assert source_columns is not None and job.source is not None
    source_names = {c.name.lower() for c in source_columns}
    missing_keys = [k for k in job.primary_keys if k.lower() not in source_names]
    if missing_keys:
        raise PermanentError(
            f"primary key column(s) {', '.join(missing_keys)} not in source table {job.source}"
        )
    unknown = [c.name for c in source_columns if target.column(c.name) is None]
    if unknown:
        raise PermanentError(
            f"source column(s) {', '.join(unknown)} of {job.source} do not exist in target "
            f"table {target.name}: drop them from the source or add them to the target"
        )
    columns = tuple(_target_column(target, c.name, "column") for c in source_columns)
    fed_identity = [c.name for c in columns if c.is_identity]
    if fed_identity and not job.identity_insert:
        raise PermanentError(
            f"Cannot insert explicit value for identity column {', '.join(fed_identity)} in "
            f"{target.name}: exclude it from the source table (or use a view without it), "
            'or set metadata {"identity_insert": true} to keep the source values'
        )
    replacing = job.operation is Operation.REPLACE
    if replacing:
        # Each source row is checked against the slice, so the slice's columns come from the source.
        outside = [c.name for c, _ in filters if c.name.lower() not in source_names]
        if outside:
            raise PermanentError(
                f"REPLACE filter_conditions column(s) {', '.join(outside)} not in source table "
                f"{job.source}: each source row must show it belongs to the slice being reloaded"
            )
    key_names = {k.name.lower() for k in keys}
    updated_identity = [c for c in fed_identity if c.lower() not in key_names]
    if job.operation is Operation.UPSERT and updated_identity:
        raise PermanentError(
            f"UPSERT cannot set identity column {', '.join(updated_identity)} of existing rows in "
            f"{target.name}: make it one of primary_keys, or leave it out of the source"
        )
    plan = ApplyPlan(
        event_id=job.event_id,
        operation=job.operation,
        table=target,
        columns=columns,
        keys=keys,
        filters=tuple(filters) if replacing else (),
        identity_insert=job.identity_insert and bool(fed_identity),
        max_delete_rows=max_delete_rows,
        changed_only=job.operation is Operation.UPSERT and job.changed_only,
        min_ratio=0.0 if job.allow_shrink else replace_min_ratio,
    )
    if job.operation is Operation.UPDATE and not plan.set_columns:
        raise PermanentError(
            f"UPDATE has nothing to set: source {job.source} has only the key columns"
        )
    return plan


def _target_column(target: TargetTable, name: str, what: str) -> TargetColumn:
    column = target.column(name)
    if column is None:
        raise PermanentError(f"{what} {name!r} is not a column of target table {target.name}")
    return column
