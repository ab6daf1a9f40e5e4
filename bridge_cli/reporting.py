"""Everything bridge shows: rich tables for people, JSON for machines, logs and progress on stderr.

The only module that imports rich. NO_COLOR is honoured by rich itself. Event rows are untrusted:
every string a console renders, every piped line and every log line goes through
untrusted.printable, and JSON through untrusted.json_text (see _SafeConsole, _print_rows,
OneLineFormatter and print_json: the boundaries, not the fields).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Literal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bridge_cli.api import (
    CancelResult,
    PauseResult,
    PruneResult,
    QueueView,
    RequeueResult,
    ResumeResult,
    WorkerState,
)
from bridge_cli.cancel import describe_pauses
from bridge_cli.config import SettingSource
from bridge_cli.doctor import CheckResult
from bridge_cli.events import Event, split_counts
from bridge_cli.lakes import Pause
from bridge_cli.outcomes import EventResult
from bridge_cli.untrusted import json_text, printable, strict_json

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "pending": "yellow",
    "processing": "cyan",
    "lost": "magenta",
}


def _color_system() -> str | None:
    # rich's own NO_COLOR support drops colours but keeps bold and italic: drop every style
    return None if os.environ.get("NO_COLOR") else "auto"


class _SafeConsole(Console):
    """A console whose every string (a cell, a title, a message, markup or not) has its control
    and bidi characters escaped before rich lays it out: an event row cannot move the cursor,
    clear or retitle the terminal, or add a line. Markup of our own has none of them."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)


def stdout() -> Console:
    return _SafeConsole(soft_wrap=False, color_system=_color_system())  # type: ignore[arg-type]


def stderr() -> Console:
    return _SafeConsole(stderr=True, color_system=_color_system())  # type: ignore[arg-type]


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class OneLineFormatter(logging.Formatter):
    """One record per line, never wrapped or padded, in a file or journald as on a terminal:
    `2026-11-28T09:30:00.123Z INFO bridge worker=host:42 event=insert-1a2b message`, or a JSON
    object with the same fields. A traceback stays on the record's line (newlines as \\n), and so
    does a message quoting an event row: control and bidi characters are escaped (\\x1b)."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.json = style == "json"

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        fields: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "worker_id": getattr(record, "worker_id", None),
            "event_id": getattr(record, "event_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self.json:
            return json_text({k: v for k, v in fields.items() if v is not None})
        parts = [fields["time"], fields["level"], fields["logger"]]
        if fields["worker_id"]:
            parts.append(f"worker={fields['worker_id']}")
        if fields["event_id"]:
            parts.append(f"event={fields['event_id']}")
        parts.append(fields["message"] + (f" | {fields['error']}" if "error" in fields else ""))
        return printable(" ".join(parts))


# The stderr console a progress line is live on, if any: log records go above that line.
_live_progress: Console | None = None


class _StderrHandler(logging.StreamHandler):
    """One line per record on stderr. While a progress line is live on the terminal, the record
    is printed by rich above it: written past rich, it was glued to the end of the progress line,
    and stayed on the screen when the progress line was cleared (after Ctrl-C, say)."""

    def emit(self, record: logging.LogRecord) -> None:
        console = _live_progress
        if console is None:
            super().emit(record)
            return
        try:
            console.print(self.format(record), markup=False, highlight=False, emoji=False,
                          soft_wrap=True)
        except Exception:
            self.handleError(record)


def setup_logging(
    verbose: bool, quiet: bool, log_format: str = "text", log_level: str | None = None
) -> None:
    """Logs go to stderr; `quiet` (one-shot commands) shows only warnings. `-v` means debug;
    `log_level` wins over both."""
    from bridge_cli.logcontext import ContextFilter

    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(log_format))
    handler.addFilter(ContextFilter())
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    if log_level is not None:
        level = getattr(logging, log_level.upper())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Third-party chatter (the connector's retry warnings, urllib3) only when asked for debug:
    # bridge reports the outcome itself, once, with its cause.
    for noisy in ("databricks", "urllib3", "pyarrow"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a Z; stored timestamps without a zone are UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _json_field(text: Any) -> Any:
    """filter_conditions and metadata are stored as JSON text: shown as the objects they hold.
    Text that is not strict JSON (written by hand: `{"a": NaN}`, 1e400, nested past what the
    parser takes, or not JSON at all) is shown as the string it is, never re-encoded."""
    if not isinstance(text, str):
        return text
    try:
        return strict_json(text)
    except ValueError:
        return text


def event_fields(event: Event) -> dict[str, Any]:
    """An event as people and machines see it: the claim token is the workers' business, a DELETE's
    empty source (as the guide writes it) is no source, and JSON columns are objects."""
    data = event.to_dict()
    data.pop("claim_token", None)
    data["source_table"] = data["source_table"] or None
    for key in ("filter_conditions", "metadata", "details"):
        data[key] = _json_field(data[key])
    return data


def print_json(data: Any) -> None:
    sys.stdout.write(json_text(data, default=_json_default, indent=2) + "\n")


def error(message: str) -> None:
    # soft_wrap: one line however long, so logs and grep see the whole message
    stderr().print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    stderr().print(message, highlight=False, markup=False, soft_wrap=True)


def _status(value: str | None) -> str:
    style = _STATUS_STYLE.get(value or "", "")
    if style:
        return f"[{style}]{value}[/]"
    # e.g. 'PENDING' written by a job: no worker will ever claim it, so it is marked
    return f"[bold red]{escape(repr(value))} (unknown)[/]"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _cell(value: Any) -> str:
    """A value from an event row (untrusted), shown verbatim: rich markup is escaped."""
    return escape(_text(value))


def _state(value: Any) -> str:
    return "[green]alive[/]" if value == "alive" else f"[red]{escape(_text(value))}[/]"


# Columns whose cells are styled by their value (the value itself shown as it is).
_STYLED: dict[str, Callable[[Any], str]] = {"status": _status, "state": _state}


def _fitted_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int,
                  drop_first: Sequence[str] = (), flexible: str = "message",
                  right: Sequence[str] = ()) -> Table:
    """A table with one line per row that fits `width`. Ids are copied and grepped, so no cell
    is ever wrapped or cut short; a long message (the `flexible` column) ends in "…" (`bridge
    status ID` and --json show it whole), and on a narrow terminal the columns in `drop_first`
    are left out, in that order. Widths are those of the text as shown (escapes included)."""
    texts = [[printable(_text(v)) for v in row] for row in rows]
    widths = {h: max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)}
    if flexible in widths:
        widths[flexible] = min(widths[flexible], 12)  # what it needs at least
    shown = list(headers)
    for name in drop_first:
        if sum(widths[h] + 3 for h in shown) + 1 <= width:
            break
        shown.remove(name)
    # What the message may take: rich would shrink every column alike to fit a long one.
    room = width - 1 - sum(widths[h] + 3 for h in shown if h != flexible) - 3
    table = Table(title=title, title_justify="left")
    for name in shown:
        justify: Literal["left", "right"] = "right" if name in right else "left"
        if name == flexible:
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=max(room, 12),
                             justify=justify)
        else:
            table.add_column(name, no_wrap=True, min_width=widths[name], justify=justify)
    for row, text in zip(rows, texts, strict=True):
        cells = []
        for name in shown:
            i = headers.index(name)
            if name in _STYLED:
                cells.append(_STYLED[name](row[i]))
            else:
                cells.append(escape(_short(text[i], max(room, 12)) if name == flexible else text[i]))
        table.add_row(*cells)
    return table


def _print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 drop_first: Sequence[str] = (), flexible: str = "message") -> None:
    console = stdout()
    console.print(_fitted_table(title, headers, rows, console.width, drop_first, flexible))


def _one_line(value: Any) -> str:
    """A field of a piped line: whole, on the line, never a tab (control characters escaped)."""
    if isinstance(value, datetime):
        return iso_utc(value)
    return printable(_text(value))


def _print_rows(rows: Iterable[Sequence[Any]]) -> None:
    """Piped output: one record per line, tab-separated, no header and no drawing (as gh does)."""
    for row in rows:
        sys.stdout.write("\t".join(_one_line(v) for v in row) + "\n")


def to_terminal() -> bool:
    return stdout().is_terminal


def _short(message: str | None, limit: int = 60) -> str:
    """Lists show the start of a message (`bridge status ID` shows it whole)."""
    text = " ".join((message or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_fields(state: WorkerState | None) -> dict[str, Any] | None:
    """A processing event's progress, from its worker's last heartbeat."""
    if state is None:
        return None
    beat = state.beat
    return {"worker_id": beat.worker_id, "alive": state.alive, "phase": beat.phase, "rows": beat.rows,
            "rows_per_second": beat.rows_per_second, "last_seen": beat.last_seen}


def print_event(event: Event, as_json: bool, progress: WorkerState | None = None) -> None:
    fields = event_fields(event)
    if event.status == "processing":  # what its worker is doing: null before its first heartbeat
        fields["progress"] = progress_fields(progress)
    if as_json:
        print_json(fields)
        return
    flat = {k: v for k, v in fields.items() if k != "progress"}
    for key, value in (fields.get("progress") or {}).items():
        flat[f"progress.{key}"] = value
    fields = flat
    if not to_terminal():
        _print_rows((key, json_text(v) if isinstance(v, dict | list) else v) for key, v in fields.items())
        return
    table = Table(show_header=False, title=f"event {_cell(event.event_id)}", title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in fields.items():
        if isinstance(value, dict):
            value = json_text(value)
        shown = _status(value) if key == "status" else _cell(value)
        table.add_row(key, shown)
    stdout().print(table)


def _rows_cell(event: Event) -> str:
    rows = "" if event.rows_affected is None else str(event.rows_affected)
    return rows if event.rows_expected is None else f"{rows}/{event.rows_expected}"


def print_events(events: Sequence[Event], as_json: bool) -> None:
    if as_json:
        print_json([event_fields(e) for e in events])
        return
    if not to_terminal():
        _print_rows(
            (e.event_id, e.operation, e.status, e.target_table, _rows_cell(e), e.created_at,
             e.error_message or e.warning)
            for e in events
        )
        return
    _print_table(
        "bridge events",
        ("event_id", "operation", "status", "target", "rows", "created (UTC)", "message"),
        [(e.event_id, e.operation, e.status, e.target_table, _rows_cell(e), e.created_at,
          e.error_message or e.warning) for e in events],
        drop_first=("created (UTC)", "rows", "operation", "message", "target"),
    )


def print_counts(counts: dict[str, int], as_json: bool, pauses: Sequence[Pause] | None = None) -> None:
    known, unknown = split_counts(counts)
    paused = {"paused": [asdict(p) for p in pauses]} if pauses else {}
    if as_json:
        print_json({**known, **({"unknown": unknown} if unknown else {}), **paused})
    elif not to_terminal():
        _print_rows([*known.items(), *((f"unknown:{k}", v) for k, v in unknown.items())])
        _print_rows((f"paused:{p.target}", p.paused_by, p.paused_at, p.reason) for p in pauses or ())
    else:
        stdout().print(f"counts by status: {_counts_summary(counts)}")
        print_pause_note(pauses)


def print_pause_note(pauses: Sequence[Pause] | None) -> None:
    """One line saying what is paused (nothing when nothing is): stdout on a terminal, else stderr."""
    if pauses:
        line = f"paused (workers claim none of their events): {describe_pauses(pauses)}"
        if to_terminal():
            stdout().print(f"[bold yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)
        else:
            info(line)


def print_pause(result: PauseResult, as_json: bool) -> None:
    if as_json:
        print_json({**asdict(result.pause), "replaced": [asdict(p) for p in result.replaced]})
        return
    sys.stdout.write(printable(f"paused {describe_pauses([result.pause])}") + "\n")
    info("workers claim none of their events from their next poll; an event in hand finishes "
         "(`bridge resume` undoes it)")


def print_resume(result: ResumeResult, as_json: bool) -> None:
    if as_json:
        print_json({"resumed": [asdict(p) for p in result.resumed],
                    "still_paused_by": [asdict(p) for p in result.still_paused_by]})
        return
    for pause in result.resumed:
        sys.stdout.write(printable(f"resumed {describe_pauses([pause])}") + "\n")
    if not result.resumed:
        info("nothing was paused" + (f" with the pattern {result.target}" if result.target else ""))


def _counts_summary(counts: dict[str, int]) -> str:
    known, unknown = split_counts(counts)
    summary = ", ".join(f"{_status(k)}: {v}" for k, v in known.items()) or "no events"
    if unknown:
        odd = ", ".join(f"{escape(repr(k))}: {v}" for k, v in unknown.items())
        summary += (
            f"; [bold red]unknown statuses, never processed:[/] {odd} "
            "(set status to 'pending' to have them processed)"
        )
    return summary


def worker_fields(state: WorkerState) -> dict[str, Any]:
    return {"state": "alive" if state.alive else "gone", **asdict(state.beat)}


def _worker_row(state: WorkerState) -> tuple[Any, ...]:
    beat = state.beat
    rate = None if beat.rows_per_second is None else f"{beat.rows_per_second:,.0f}"
    rows = None if beat.rows is None else f"{beat.rows:,}"
    return (beat.worker_id, "alive" if state.alive else "gone", beat.event_id or "idle", beat.phase,
            rows, rate, beat.last_seen, beat.version)


_WORKER_HEADERS = ("worker", "state", "event", "phase", "rows", "rows/s", "last seen (UTC)", "version")
# Left out first on a narrow terminal: the worker id and its state stay whole to the last (in top,
# the event and its rows are in the "in flight" table too).
_WORKER_DROP = ("version", "last seen (UTC)", "rows/s", "phase", "rows", "event")


def workers_table(states: Sequence[WorkerState], width: int) -> Table:
    return _fitted_table("workers", _WORKER_HEADERS, [_worker_row(s) for s in states], width,
                         drop_first=_WORKER_DROP, flexible="version", right=("rows", "rows/s"))


def print_workers(states: Sequence[WorkerState], as_json: bool) -> None:
    if as_json:
        print_json([worker_fields(s) for s in states])
        return
    if not states:
        info("no workers have sent a heartbeat (none running, or none since `bridge init`)")
        return
    if not to_terminal():
        _print_rows(_worker_row(s) for s in states)
        return
    stdout().print(workers_table(states, stdout().width))


def print_forgotten_workers(states: Sequence[WorkerState], older_than: str | None, as_json: bool) -> None:
    if as_json:
        print_json({"forgotten": [worker_fields(s) for s in states]})
        return
    age = f" for longer than {older_than}" if older_than else ""
    if not states:
        info(f"no worker gone{age}: nothing to forget")
        return
    held = [s.beat.event_id for s in states if s.beat.event_id]
    print_lines([f"forgot {len(states)} gone worker(s): {', '.join(s.beat.worker_id for s in states)}"
         + (f"; the events they held ({', '.join(held)}) are untouched: `bridge requeue --stale` "
            "requeues those still processing" if held else "")])


class TopScreen:
    """`bridge top`: counts by status, the workers and the events in hand, redrawn in place on the
    terminal's alternate screen (left as it was on exit)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.live = Live(console=stdout(), screen=True, auto_refresh=False, transient=True)

    def __enter__(self) -> TopScreen:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def show(self, view: QueueView | None, problem: str | None = None) -> None:
        self.live.update(top_renderable(view, self.interval, problem, self.live.console.width),
                         refresh=True)


_FLIGHT_HEADERS = ("event_id", "operation", "target", "worker", "phase", "rows", "rows/s")
# The event id and its worker stay whole to the last.
_FLIGHT_DROP = ("operation", "rows/s", "phase", "target", "rows")


def top_renderable(view: QueueView | None, interval: float, problem: str | None = None,
                   width: int | None = None) -> RenderableType:
    """What `bridge top` draws, fitted to `width` (the terminal's): on a narrow one the tables
    leave columns out, as `bridge workers` does, rather than cut ids short."""
    width = stdout().width if width is None else width
    parts: list[RenderableType] = []
    when = f"{view.taken_at:%Y-%m-%d %H:%M:%S} UTC" if view is not None else "-"
    parts.append(f"[bold]bridge top[/]  {when}  every {interval:g}s  [dim]q or Ctrl-C quits[/]")
    if problem:
        parts.append(f"[bold red]refresh failed:[/] {escape(problem)} (retrying)")
    if view is not None:
        parts.append(f"counts by status: {_counts_summary(view.counts)}")
        if view.pauses:
            parts.append(f"[bold yellow]paused:[/] {escape(describe_pauses(view.pauses))}")
        if view.workers:
            parts.append(workers_table(view.workers, width))
        else:
            parts.append("workers: none has sent a heartbeat")
        flight: list[tuple[Any, ...]] = []
        for event, state in view.in_flight:
            beat = state.beat if state is not None else None
            rows = ""
            if beat is not None and beat.rows is not None:
                rows = f"{beat.rows:,}"
                if event.rows_expected:
                    rows += f" ({min(100, beat.rows * 100 // event.rows_expected)}%)"
            rate = "" if beat is None or beat.rows_per_second is None else f"{beat.rows_per_second:,.0f}"
            flight.append((event.event_id, event.operation, event.target_table, event.worker_id,
                           beat.phase if beat is not None else "", rows, rate))
        parts.append(
            _fitted_table("in flight", _FLIGHT_HEADERS, flight, width, drop_first=_FLIGHT_DROP,
                          flexible="target", right=("rows", "rows/s"))
            if flight else "in flight: no event is being processed"
        )
    return Group(*parts)


def result_fields(result: EventResult) -> dict[str, Any]:
    """A processed event under the same field names `status --json` uses."""
    return asdict(result)


def print_results(results: Sequence[EventResult], as_json: bool) -> None:
    if as_json:
        print_json([result_fields(r) for r in results])
        return
    if not results:
        info("no pending events")
        return
    if not to_terminal():
        _print_rows(
            (r.event_id, r.operation, r.target_table, r.status, r.rows_affected, r.discrepancy,
             f"{r.seconds:.2f}", r.error_message or r.warning)
            for r in results
        )
        return
    _print_table(
        "processed events",
        ("event_id", "operation", "target", "status", "rows", "discrepancy", "seconds", "message"),
        [(r.event_id, r.operation, r.target_table, r.status, r.rows_affected, r.discrepancy,
          f"{r.seconds:.2f}", r.error_message or r.warning) for r in results],
        drop_first=("seconds", "discrepancy", "operation", "rows", "message", "target"),
    )


def print_requeue(results: Iterable[RequeueResult], as_json: bool) -> None:
    results = list(results)
    if as_json:
        print_json([asdict(r) for r in results])
        return
    if not results:
        info("nothing to requeue")
        return
    if not to_terminal():
        _print_rows((r.event_id, r.previous_status, r.reason) for r in results)
        return
    _print_table(
        "requeue", ("event_id", "was", "result"),
        [(r.event_id, r.previous_status, r.reason) for r in results],
        drop_first=("was",), flexible="result",
    )


def print_cancel(results: Sequence[CancelResult], as_json: bool) -> None:
    if as_json:
        print_json([asdict(r) for r in results])
        return
    if not to_terminal():
        _print_rows((r.event_id, r.previous_status, r.reason) for r in results)
        return
    _print_table(
        "cancel", ("event_id", "was", "result"),
        [(r.event_id, r.previous_status, r.reason) for r in results],
        drop_first=("was",), flexible="result",
    )


def print_prune(result: PruneResult, as_json: bool) -> None:
    if as_json:
        print_json({
            "dry_run": result.dry_run, "statuses": list(result.statuses), "before": result.before,
            "events_deleted": len(result.event_ids), "ledger_rows_deleted": result.ledger_rows,
            "event_ids": result.event_ids,
        })
        return
    if not to_terminal():  # a dry run's counts are named for what they are, as the table says
        verb = "would_delete" if result.dry_run else "deleted"
        _print_rows([(f"events_{verb}", len(result.event_ids)), (f"ledger_rows_{verb}", result.ledger_rows)])
        return
    verb = "would delete" if result.dry_run else "deleted"
    stdout().print(
        f"{verb} {len(result.event_ids)} {' and '.join(result.statuses)} event(s) finished before "
        f"{iso_utc(result.before)}, and {result.ledger_rows} ledger row(s)",
        highlight=False, markup=False,
    )


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(printable(line) + "\n")


class _ShownAfter(Progress):
    """A progress display that stays blank until its task has run `after` seconds, so quick
    events print nothing."""

    def __init__(self, *columns: Any, after: float, **options: Any) -> None:
        super().__init__(*columns, **options)
        self.after = after

    def get_renderables(self) -> Iterable[Any]:
        if any((t.elapsed or 0.0) >= self.after for t in self.tasks):
            yield from super().get_renderables()


class CopyProgress:
    """What the event in hand is doing, on stderr, for events that take more than a few seconds,
    on a terminal: rows read (with a percentage when rows_expected is known), then the write, or a
    spinner for a DELETE. Each event's timer starts at 0."""

    def __init__(self, after_seconds: float = 2.0, get_time: Callable[[], float] | None = None) -> None:
        self.console = stderr()
        self.enabled = self.console.is_terminal
        self.after = after_seconds
        self.get_time = get_time or time.monotonic
        self._progress: _ShownAfter | None = None
        self._task: Any = None
        self._event: str | None = None
        self._expected: int | None = None
        self._timer: threading.Timer | None = None

    def phase(self, event_id: str, phase: str, rows: int | None) -> None:
        """`reading` (rows: rows_expected, if known), `spark` (a Spark run stages the rows),
        `writing` (rows: staged) or `deleting`."""
        if not self.enabled:
            return
        if event_id != self._event:
            self._start(event_id)
        if phase == "reading":
            self._expected = rows if rows else None
            self._show(f"{event_id}: reading", 0)
        elif phase == "writing":
            self._expected = None
            self._show(f"{event_id}: {rows or 0:,} rows read, writing", None)
        elif phase == "spark":
            self._expected = None
            self._show(f"{event_id}: staging on Spark", None)
        else:
            self._expected = None
            self._show(f"{event_id}: deleting", None)

    def __call__(self, event_id: str, rows: int) -> None:
        """Rows read so far."""
        if not self.enabled:
            return
        if event_id != self._event:
            self._start(event_id)
        self._show(f"{event_id}: {rows:,} rows read", rows)

    def _start(self, event_id: str) -> None:
        if self._progress is None:
            self._progress = _ShownAfter(
                SpinnerColumn(), TextColumn("{task.description}", markup=False),
                TextColumn("{task.fields[percent]}"),
                TimeElapsedColumn(), console=self.console, transient=True, get_time=self.get_time,
                after=self.after,
            )
            # The display (and its cursor codes) starts only once an event has run `after` seconds.
            self._timer = threading.Timer(self.after, self._start_display)
            self._timer.daemon = True
            self._timer.start()
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("", percent="")
        self._event = event_id
        self._expected = None

    def _show(self, description: str, rows: int | None) -> None:
        assert self._progress is not None
        percent = ""
        if rows is not None and self._expected:
            percent = f"{min(100, rows * 100 // self._expected)}%"
        # rich's progress columns make Text themselves, past _SafeConsole: escaped here
        self._progress.update(self._task, description=printable(description), percent=percent)

    def _start_display(self) -> None:
        global _live_progress
        assert self._progress is not None
        _live_progress = self.console  # first: a record logged from now on goes above the line
        self._progress.start()

    def close(self) -> None:
        """Stops the display and clears its line; also when the run ends in an exception (Ctrl-C:
        process-once's `finally`), after the log lines written meanwhile, which stay above it."""
        global _live_progress
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
        if self._progress is not None:
            if self._progress.live.is_started:
                self._progress.stop()
            self._progress = None
        if _live_progress is self.console:
            _live_progress = None


class WaitProgress:
    """`bridge wait` progress, shown only on a terminal."""

    def __init__(self) -> None:
        self.console = stderr()

    def __call__(self, event: Event, elapsed: float) -> None:
        if self.console.is_terminal:
            self.console.print(
                f"[{elapsed:.0f}s] waiting for {event.event_id}: {event.status}", highlight=False,
                markup=False,
            )


def print_settings(profile: str, config_file: str | None, sources: Sequence[SettingSource], as_json: bool) -> None:
    """`bridge config show`: each value and where it came from (secrets arrive masked)."""
    where = config_file or "<embedded default>"
    if as_json:
        print_json({"profile": profile, "config_file": config_file, "settings": [asdict(s) for s in sources]})
        return
    rows = [(s.key, s.value, s.source) for s in sources]
    if not to_terminal():
        _print_rows(rows)
        return
    # Values and origins are read whole (a path, a host): folded, never cut short.
    table = Table(title=f"profile {escape(profile)} ({escape(where)})", title_justify="left")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", overflow="fold")
    for key, value, source in rows:
        table.add_row(escape(key), _cell(value), escape(source))
    stdout().print(table)


def print_checks(results: Sequence[CheckResult], as_json: bool) -> None:
    """`bridge doctor`: one row per check, in order: ok, warning, failed or skipped, and what to do."""
    if as_json:
        print_json([asdict(r) for r in results])
        return
    rows = [(r.name, r.status, f"{r.seconds:.1f}s", f"{r.detail}; {r.fix}" if r.fix else r.detail)
            for r in results]
    if not to_terminal():
        _print_rows(rows)
        return
    style = {"ok": "green", "warning": "bold yellow", "failed": "bold red", "skipped": "yellow"}
    table = Table(title="bridge doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("what to do / found", overflow="fold")
    for name, status, seconds, message in rows:
        table.add_row(escape(name), f"[{style[status]}]{status}[/]", seconds, escape(message))
    stdout().print(table)
