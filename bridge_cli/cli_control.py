"""`bridge pause` and `bridge resume`: stop and restart the claiming of events, for every target or
those matching a pattern (a SQL Server maintenance window), on every worker within one poll."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge_cli import reporting
from bridge_cli.adapters import open_lake
from bridge_cli.api import pause_targets, resume_targets
from bridge_cli.cancel import describe_pauses
from bridge_cli.cli import EXIT_FAILED, JsonFlag, _BridgeCommand, _state, app, reported_errors

TargetPattern = Annotated[str | None, typer.Option(
    "--target", metavar="PATTERN",
    help="Only targets matching this pattern, as in allowed_targets (dbo.*, dbo.stg_*, users).",
)]


@app.command(cls=_BridgeCommand)
def pause(
    ctx: typer.Context,
    target: TargetPattern = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", metavar="TEXT", help="Why, shown wherever the pause is (status, workers, doctor).",
    )] = None,
    as_json: JsonFlag = False,
) -> None:
    """Workers stop claiming events (all, or --target's) within one poll; events in hand finish."""
    with reported_errors():
        result = pause_targets(open_lake(_state(ctx).settings()), target, reason)
    reporting.print_pause(result, as_json)


@app.command(cls=_BridgeCommand)
def resume(
    ctx: typer.Context,
    target: TargetPattern = None,
    as_json: JsonFlag = False,
) -> None:
    """Undo `bridge pause`: every pause, or --target's; exit 1 when that target stays paused by another."""
    with reported_errors():
        result = resume_targets(open_lake(_state(ctx).settings()), target)
    reporting.print_resume(result, as_json)
    if result.still_paused_by:
        reporting.error(f"{result.target} is still paused by {describe_pauses(result.still_paused_by)}")
        raise typer.Exit(EXIT_FAILED)
