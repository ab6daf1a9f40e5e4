"""`bridge requeue`, `cancel`, `prune`, `doctor` and `config show`: operating the queue and the profile."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge_cli import reporting
from bridge_cli.adapters import open_lake, open_target
from bridge_cli.api import (
    CancelTimeout,
    cancel_events,
    prune_events,
    requeue_events,
    require_cancelled,
    require_requeued,
)
from bridge_cli.cli import (
    EXIT_CONFIG,
    EXIT_TIMEOUT,
    JsonFlag,
    _BridgeCommand,
    _state,
    app,
    in_range,
    parse_duration,
    reported_errors,
)
from bridge_cli.config import describe_settings
from bridge_cli.doctor import all_passed, run_checks
from bridge_cli.errors import (
    EventNotFound,
)


@app.command(cls=_BridgeCommand)
def requeue(
    ctx: typer.Context,
    event_ids: Annotated[list[str] | None, typer.Argument(
        metavar="EVENT_ID",
        help="Events to requeue.",
    )] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Requeue every failed event.")] = False,
    stale: Annotated[
        bool, typer.Option("--stale", help="Requeue processing events whose lease expired.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be requeued.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Move failed or stale events back to pending (never a completed one)."""
    if not event_ids and not failed and not stale:
        raise typer.BadParameter("give EVENT_ID(s), --failed or --stale")
    with reported_errors():
        lake = open_lake(_state(ctx).settings())
        results = requeue_events(
            lake, list(event_ids or []), failed=failed, stale=stale, dry_run=dry_run
        )
        reporting.print_requeue(results, as_json)
        if any(r.previous_status is None for r in results):
            missing = [r.event_id for r in results if r.previous_status is None]
            raise EventNotFound(f"no event with id {', '.join(map(repr, missing))}")
        require_requeued(results)


@app.command(cls=_BridgeCommand)
def cancel(
    ctx: typer.Context,
    event_ids: Annotated[list[str], typer.Argument(metavar="EVENT_ID", help="Pending or processing events to cancel.")],
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="SECONDS", callback=in_range(0),
        help="Seconds to wait for a processing event's worker to stop it (default 60; exit 3 after).",
    )] = None,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="Only ask a processing event's worker to stop; do not wait.",
    )] = False,
    as_json: JsonFlag = False,
) -> None:
    """Fail events "cancelled by USER@HOST at TIME": pending at once, processing by its worker (nothing applied)."""
    if no_wait and timeout is not None:
        raise typer.BadParameter("does nothing with --no-wait", param_hint="--timeout")
    with reported_errors():
        lake = open_lake(_state(ctx).settings())
        results = cancel_events(lake, event_ids, wait=None if no_wait else (60.0 if timeout is None else timeout))
        reporting.print_cancel(results, as_json)
        try:
            require_cancelled(results)
        except CancelTimeout as exc:
            reporting.error(str(exc))
            raise typer.Exit(EXIT_TIMEOUT) from None


@app.command(cls=_BridgeCommand)
def prune(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option(
        "--older-than", metavar="DURATION", help="Events that finished longer ago than this: 30d, 12h.",
    )],
    failed: Annotated[bool, typer.Option("--failed", help="Failed events too, not only completed ones.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete finished events older than a duration, with their ledger rows (never unfinished ones)."""
    age = parse_duration(older_than, "--older-than")
    with reported_errors():
        settings = _state(ctx).settings()
        result = prune_events(open_lake(settings), open_target(settings), age, failed=failed, dry_run=dry_run)
    reporting.print_prune(result, as_json)


@app.command(cls=_BridgeCommand)
def doctor(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check the config, lake, event table, target, ledger, staging and queue: exit 0 none failed, 5 not."""
    state = _state(ctx)
    results = run_checks(state.config, state.profile)
    reporting.print_checks(results, as_json)
    if not all_passed(results):
        raise typer.Exit(EXIT_CONFIG)


config_app = typer.Typer(
    name="config", help="Show the resolved configuration.", no_args_is_help=True, rich_markup_mode=None,
)
app.add_typer(config_app)


@config_app.command("show", cls=_BridgeCommand)
def config_show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Print every setting and adapter option of the profile, and where each value came from."""
    state = _state(ctx)
    with reported_errors():
        settings, sources = describe_settings(state.config, state.profile)
    where = str(settings.config_file) if settings.config_file else None
    reporting.print_settings(settings.profile, where, sources, as_json)
