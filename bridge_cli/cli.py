"""The `bridge` command: parses options, calls the engine, hands results to reporting."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from bridge_cli import __version__, reporting
from bridge_cli.adapters import open_lake, open_target
from bridge_cli.api import (
    WaitTimeout,
    copies_message,
    current_pauses,
    event_progress,
    forget_gone_workers,
    get_event_rows,
    init_stores,
    list_workers,
    queue_view,
    recent_events,
    submit_event,
    wait_for_event,
)
from bridge_cli.config import Settings, load_settings
from bridge_cli.entry import release_early_signals
from bridge_cli.errors import (
    BridgeError,
    ConfigError,
    ConnectionFailure,
    EventNotFound,
    TransientError,
    ValidationError,
)
from bridge_cli.events import Event, Operation, Status, SubmitRequest

# Exit codes scripts branch on (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_NOT_FOUND = 4
EXIT_CONFIG = 5
EXIT_ABORTED = 130  # Ctrl-C, as shells report it

# Global options a user may also put after the command (`bridge status --profile prod`).
_GLOBAL_WITH_VALUE = frozenset({"--config", "--profile", "-p", "--log-format", "--log-level"})
_GLOBAL_FLAGS = frozenset({"--verbose", "-v"})


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found after the command to the front, where the group parses them."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS or (name in _GLOBAL_WITH_VALUE and "=" in arg):
            front.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


class _BridgeGroup(TyperGroup):
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader went away (`bridge status | head -1`): stop quietly with 0, as gh does.
            # stdout is pointed at /dev/null so that the final flush cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(EXIT_OK) from None


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: typer.Context) -> str | None:  # type: ignore[override]
        return None  # the metavar says what to type; "<str>" says nothing more


class _BridgeCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _PlainArgument


app = typer.Typer(
    cls=_BridgeGroup,
    name="bridge",
    help="Move data from Databricks into SQL Server through an event table.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


E = TypeVar("E", bound=Enum)


def choice(kind: type[E]) -> Callable[[Any], E]:
    """An Enum option's values in any case, refused in our words: "'bogus' is not one of pending,
    processing, completed, failed" (Typer's own message starts "Value error,")."""
    def parse(value: Any) -> E:
        if isinstance(value, kind):
            return value
        found = next((m for m in kind if str(m.value).lower() == str(value).lower()), None)
        if found is None:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(str(m.value) for m in kind)}")
        return found

    return parse


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@dataclass
class AppState:
    config: str | None
    profile: str | None
    verbose: bool
    log_format: str = "text"
    log_level: str | None = None

    def settings(self) -> Settings:
        return load_settings(self.config, self.profile)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bridge {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        # BRIDGE_CONFIG and BRIDGE_PROFILE are read by load_settings, which names where a bad
        # value came from.
        typer.Option("--config", metavar="FILE", help="Path to bridge.yaml (or BRIDGE_CONFIG)."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", "-p", metavar="NAME", help="Profile in bridge.yaml (or BRIDGE_PROFILE)."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="BRIDGE_LOG_FORMAT", metavar="text|json", parser=choice(LogFormat),
        help="Log lines as text or as JSON objects (one per line).",
    )] = LogFormat.text,
    log_level: Annotated[LogLevel | None, typer.Option(
        "--log-level", envvar="BRIDGE_LOG_LEVEL", metavar="LEVEL", parser=choice(LogLevel),
        help="debug, info, warning or error (default: info for the worker, warning otherwise).",
    )] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    if ctx.invoked_subcommand != "worker":  # only the worker turns an early SIGTERM into a clean stop
        release_early_signals()
    if ctx.invoked_subcommand is None:  # plain `bridge`: the help, and success
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_OK)
    level = log_level.value if log_level is not None else None
    ctx.obj = AppState(config, profile, verbose, log_format.value, level)
    reporting.setup_logging(verbose, quiet=True, log_format=log_format.value, log_level=level)


T = TypeVar("T")


def in_range(low: float, high: float | None = None) -> Callable[[Any], Any]:
    """An option's bounds, checked with our own words (Typer's own message reads like a model
    validator's)."""
    def check(value: Any) -> Any:
        if value is not None and (value < low or (high is not None and value > high)):
            wanted = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise typer.BadParameter(f"must be {wanted}, got {value:g}")
        return value

    return check


def _exit_code(exc: BridgeError) -> int:
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, EventNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ValidationError):
        return EXIT_USAGE
    if isinstance(exc, ConfigError | ConnectionFailure | TransientError):
        return EXIT_CONFIG
    return EXIT_FAILED  # RefusedError (e.g. requeue a completed event) and failed work


@contextmanager
def reported_errors() -> Iterator[None]:
    """Library exceptions become one clear message on stderr and an exit code."""
    try:
        yield
    except BridgeError as exc:
        reporting.error(str(exc))
        raise typer.Exit(_exit_code(exc)) from None


def _state(ctx: typer.Context) -> AppState:
    state = ctx.obj
    assert isinstance(state, AppState)
    return state


def _json_option(text: str | None, name: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc.msg}", param_hint=name) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=name)
    return value


class OperationChoice(str, Enum):
    insert = "insert"
    update = "update"
    delete = "delete"
    upsert = "upsert"
    replace_ = "replace"  # `replace` would shadow str.replace


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout for machines.")]

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, option: str) -> timedelta:
    """`30m`, `2h`, `7d` (also `s` and `w`) as a timedelta; a usage error naming the option else."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or int(found[1]) == 0:
        raise typer.BadParameter(
            f"expected a duration such as 30m, 2h or 7d (s, m, h, d, w), got {text!r}", param_hint=option
        )
    return timedelta(seconds=int(found[1]) * _UNIT_SECONDS[found[2]])


@app.command(cls=_BridgeCommand)
def init(
    ctx: typer.Context,
    upgrade: Annotated[
        bool, typer.Option("--upgrade", help="Add missing lifecycle columns to an existing table.")
    ] = False,
) -> None:
    """Create the event table and the target's ledger (safe to run twice)."""
    with reported_errors():
        settings = _state(ctx).settings()
        lines = init_stores(open_lake(settings), open_target(settings), upgrade=upgrade)
    reporting.print_lines(lines)


@app.command(cls=_BridgeCommand)
def submit(
    ctx: typer.Context,
    operation: Annotated[OperationChoice, typer.Argument(
        metavar="OPERATION",
        parser=choice(OperationChoice),
        help="insert, update, delete, upsert or replace (any case).",
    )],
    target: Annotated[str, typer.Option("--target", metavar="TABLE", help="SQL Server table, schema.table.")],
    source: Annotated[
        str | None, typer.Option("--source", metavar="TABLE", help="Databricks table, catalog.schema.table.")
    ] = None,
    pk: Annotated[
        list[str] | None, typer.Option(
            "--pk",
            metavar="COLUMN",
            help="Primary key column (repeat for several).",
        )
    ] = None,
    expected: Annotated[
        int | None, typer.Option(
            "--expected",
            metavar="ROWS",
            callback=in_range(0),
            help="Rows expected, for validation.",
        )
    ] = None,
    priority: Annotated[
        int, typer.Option(
            "--priority", metavar="1-10", callback=in_range(1, 10), help="Lower runs first (default 5)."
        )
    ] = 5,
    filter_json: Annotated[
        str | None,
        typer.Option("--filter", metavar="JSON", help=(
            'DELETE conditions, or the slice a REPLACE reloads, as JSON, e.g. {"username": "ana"}; '
            'REPLACE of the whole table: {} with --metadata \'{"whole_table": true}\'.'
        )),
    ] = None,
    metadata_json: Annotated[
        str | None, typer.Option("--metadata", metavar="JSON", help="Metadata as a JSON object.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the event id.")] = False,
    as_json: JsonFlag = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the event to finish.")] = False,
    timeout: Annotated[
        float | None, typer.Option(
            "--timeout", metavar="SECONDS", callback=in_range(0),
            help="Seconds to wait with --wait (default 300).",
        )
    ] = None,
    check: Annotated[bool, typer.Option(
        "--check",
        help="Check the source and target tables as the worker will before writing the event.",
    )] = False,
) -> None:
    """Validate and write a pending event; print its id."""
    if timeout is not None and not wait:
        raise typer.BadParameter("only applies with --wait", param_hint="--timeout")
    if quiet and as_json:
        raise typer.BadParameter("-q prints only the id; leave out one of -q and --json", param_hint="--json")
    op = Operation(operation.value.upper())
    if op in (Operation.DELETE, Operation.REPLACE) and filter_json is None:
        raise typer.BadParameter(
            f"{op.value} needs --filter" + (" ({} for the whole table)" if op is Operation.REPLACE else ""),
            param_hint="--filter",
        )
    if op is not Operation.DELETE and source is None:
        raise typer.BadParameter(f"{op.value} needs --source", param_hint="--source")
    if op is not Operation.DELETE and not pk:
        raise typer.BadParameter(f"{op.value} needs at least one --pk", param_hint="--pk")
    request = SubmitRequest(
        operation=op,
        target_table=target,
        source_table=source,
        primary_keys=tuple(pk or ()),
        rows_expected=expected,
        priority=priority,
        filter_conditions=_json_option(filter_json, "--filter"),
        metadata=_json_option(metadata_json, "--metadata"),
    )
    with reported_errors():
        settings = _state(ctx).settings()
        lake = open_lake(settings)
        event = submit_event(lake, request, settings, check_with=open_target(settings) if check else None)
    if quiet:
        typer.echo(event.event_id)
    elif as_json and not wait:
        reporting.print_json(reporting.event_fields(event))
    elif not as_json:
        typer.echo(event.event_id)
        reporting.info(f"submitted {op.value} event {event.event_id} (priority {event.priority})")
    if wait:
        seconds = 300 if timeout is None else timeout
        _wait_and_exit(lake, event.event_id, seconds, settings.poll_interval, as_json, strict=False,
                       show=not quiet)


def _wait_and_exit(
    lake: Any, event_id: str, timeout: float, interval: float, as_json: bool, strict: bool,
    show: bool = True,
) -> None:
    with reported_errors():
        try:
            event = wait_for_event(lake, event_id, timeout, interval, on_poll=reporting.WaitProgress())
        except WaitTimeout as exc:
            if as_json:
                reporting.print_json(reporting.event_fields(exc.event))
            raise
    if show:
        reporting.print_event(event, as_json)
    code = wait_exit_code(event, strict)
    if code != EXIT_OK:  # the reason, for a script's log, whatever was printed on stdout
        if event.status == Status.FAILED.value:
            reporting.error(f"event {event.event_id} failed: {event.error_message or 'no reason recorded'}")
        else:
            reason = event.warning or f"discrepancy {event.discrepancy}"
            reporting.error(f"event {event.event_id} completed, but --strict: {reason}")
    raise typer.Exit(code)


def wait_exit_code(event: Event, strict: bool) -> int:
    if event.status == Status.FAILED.value:
        return EXIT_FAILED
    if strict and ((event.discrepancy or 0) != 0 or event.warning):
        return EXIT_FAILED
    return EXIT_OK


@app.command(cls=_BridgeCommand)
def status(
    ctx: typer.Context,
    event_id: Annotated[str | None, typer.Argument(metavar="EVENT_ID", help="Show one event.")] = None,
    status_filter: Annotated[
        Status | None, typer.Option(
            "--status", metavar="STATUS", parser=choice(Status), help="Only events with this status."
        )
    ] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit",
        metavar="N",
        callback=in_range(1),
        help="How many recent events (default 20).",
    )] = None,
    target: Annotated[str | None, typer.Option(
        "--target", metavar="TABLE",
        help="Only events for this target table (any case; a bare name means dbo.).",
    )] = None,
    operation: Annotated[OperationChoice | None, typer.Option(
        "--operation", metavar="OP", parser=choice(OperationChoice),
        help="Only insert, update or delete events.",
    )] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="DURATION", help="Only events created this recently: 30m, 2h, 7d.",
    )] = None,
    worker_id: Annotated[str | None, typer.Option(
        "--worker", metavar="WORKER_ID", help="Only events this worker claimed last.",
    )] = None,
    summary: Annotated[bool, typer.Option("--summary", help="Only the counts by status.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show one event, or recent events (with counts by status on a terminal)."""
    narrowing = {
        "--status": status_filter is not None, "--limit": limit is not None, "--target": target is not None,
        "--operation": operation is not None, "--since": since is not None, "--worker": worker_id is not None,
    }
    listing = {**narrowing, "--summary": summary}
    if event_id is not None and any(listing.values()):
        given = next(name for name, used in listing.items() if used)
        raise typer.BadParameter("lists events: leave it out to show one event", param_hint=given)
    if summary and any(narrowing.values()):
        given = ", ".join(name for name, used in narrowing.items() if used)
        raise typer.BadParameter(f"counts every event: leave out {given}", param_hint="--summary")
    within = parse_duration(since, "--since") if since is not None else None
    with reported_errors():
        lake = open_lake(_state(ctx).settings())
        if event_id is not None:
            rows = get_event_rows(lake, event_id)
            if len(rows) > 1:  # an id names one event: show every row that holds it, and say so
                reporting.print_events(rows, as_json)
                reporting.error(copies_message(event_id, rows))
                return
            reporting.print_event(rows[0], as_json, event_progress(lake, rows[0]))
            return
        if summary:
            reporting.print_counts(lake.count_by_status(), as_json, current_pauses(lake))
            return
        events = recent_events(
            lake, status_filter.value if status_filter else None, limit or 20, target=target,
            operation=operation.value if operation else None, within=within, worker_id=worker_id,
        )
        reporting.print_events(events, as_json)
        if not as_json and reporting.to_terminal():
            reporting.print_counts(lake.count_by_status(), as_json=False)


@app.command(cls=_BridgeCommand)
def wait(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="The event to wait for.")],
    timeout: Annotated[float, typer.Option(
        "--timeout",
        metavar="SECONDS",
        callback=in_range(0),
        help="Seconds before exit 3.",
    )] = 300,
    interval: Annotated[float, typer.Option(
            "--interval", metavar="SECONDS", callback=in_range(1),
            help="Seconds between checks (at least 1: each is a query on the warehouse).",
        )] = 10,
    as_json: JsonFlag = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 also on a discrepancy or warning.")
    ] = False,
) -> None:
    """Wait for an event: exit 0 completed, 1 failed, 3 timed out, 4 no such event, 5 config."""
    with reported_errors():
        lake = open_lake(_state(ctx).settings())
    _wait_and_exit(lake, event_id, timeout, interval, as_json, strict)


@app.command(cls=_BridgeCommand)
def workers(
    ctx: typer.Context,
    forget_gone: Annotated[bool, typer.Option(
        "--forget-gone", help="Remove the rows of gone workers (their events are untouched: "
                              "`requeue --stale` is for those).",
    )] = False,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", metavar="DURATION",
        help="With --forget-gone: only workers gone for longer than this (30m, 12h, 7d).",
    )] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the workers: alive, or gone (no heartbeat in time), with their event, phase and rows."""
    if older_than is not None and not forget_gone:
        raise typer.BadParameter("--older-than goes with --forget-gone", param_hint="'--older-than'")
    age = parse_duration(older_than, "--older-than") if older_than is not None else timedelta(0)
    with reported_errors():
        lake = open_lake(_state(ctx).settings())
        if forget_gone:
            reporting.print_forgotten_workers(forget_gone_workers(lake, age), older_than, as_json)
            return
        states = list_workers(lake)
        pauses = current_pauses(lake)
    reporting.print_workers(states, as_json)
    if not as_json:
        reporting.print_pause_note(pauses)


@app.command(cls=_BridgeCommand)
def top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(
        "--interval", metavar="SECONDS", callback=in_range(0.5),
        help="Seconds between refreshes (each is 3 queries on the lake).",
    )] = 2.0,
) -> None:
    """A live view of the queue: counts by status, the workers, the events in hand; q quits."""
    if not reporting.to_terminal():
        raise typer.BadParameter(
            "needs a terminal; for scripts use `bridge workers --json` and `bridge status --json`"
        )
    from bridge_cli.keys import keys_from_stdin

    with reported_errors():
        lake = open_lake(_state(ctx).settings())
        view = queue_view(lake)  # a store that is not there says so before the screen opens
    try:
        with reporting.TopScreen(interval) as screen, keys_from_stdin() as keys:
            problem = None
            while True:
                screen.show(view, problem)
                if (keys.wait(interval) or "").lower() == "q":
                    break
                try:
                    view, problem = queue_view(lake), None
                except BridgeError as exc:  # shown on the screen; the next refresh tries again
                    problem = str(exc)
    except KeyboardInterrupt:
        pass  # Ctrl-C quits, as q does


# The other command groups register themselves on `app` (in this order: `bridge --help` lists
# commands as registered).
from bridge_cli import cli_run  # noqa: E402,F401,I001
from bridge_cli import cli_queue  # noqa: E402,F401,I001
from bridge_cli import cli_control  # noqa: E402,F401,I001


def main() -> None:
    # Any output encoding (PYTHONIOENCODING=latin-1, a C locale): what it cannot show becomes "?"
    # instead of a crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    app()

