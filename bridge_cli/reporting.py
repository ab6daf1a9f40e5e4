"""Everything bridge shows: rich tables for people, JSON for machines, logs and progress on stderr.

The only module that imports rich. NO_COLOR is honoured by rich itself.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge_cli.api import RequeueResult
from bridge_cli.engine import EventResult
from bridge_cli.events import Event

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


def stdout() -> Console:
    return Console(soft_wrap=False, color_system=_color_system())  # type: ignore[arg-type]


def stderr() -> Console:
    return Console(stderr=True, color_system=_color_system())  # type: ignore[arg-type]


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Logs go to stderr; `quiet` (one-shot commands) shows only warnings unless verbose."""
    handler = RichHandler(console=stderr(), show_path=False, rich_tracebacks=False)
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[handler],
        force=True,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_json_default, ensure_ascii=False, indent=2) + "\n")


def error(message: str) -> None:
    # soft_wrap: one line however long, so logs and grep see the whole message
    stderr().print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    stderr().print(message, highlight=False, markup=False, soft_wrap=True)


def _status(value: str | None) -> str:
    style = _STATUS_STYLE.get(value or "", "")
    return f"[{style}]{value}[/]" if style else escape(str(value))


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


def _add_column(table: Table, name: str) -> None:
    table.add_column(name, overflow="fold")


def _short(message: str | None, limit: int = 60) -> str:
    """Lists show the start of a message (`bridge status ID` shows it whole)."""
    text = " ".join((message or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_event(event: Event, as_json: bool) -> None:
    if as_json:
        print_json(event.to_dict())
        return
    table = Table(show_header=False, title=f"event {_cell(event.event_id)}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in event.to_dict().items():
        if key == "claim_token":
            continue
        shown = _status(value) if key == "status" else _cell(value)
        table.add_row(key, shown)
    stdout().print(table)


def print_events(events: Sequence[Event], counts: dict[str, int], as_json: bool) -> None:
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    table = Table(title="bridge events", title_justify="left")
    for name in ("event_id", "operation", "status", "target", "rows", "created (UTC)", "message"):
        _add_column(table, name)
    for e in events:
        message = e.error_message or e.warning or ""
        rows = "" if e.rows_affected is None else str(e.rows_affected)
        if e.rows_expected is not None:
            rows = f"{rows}/{e.rows_expected}"
        table.add_row(
            _cell(e.event_id), _cell(e.operation), _status(e.status), _cell(e.target_table), rows,
            _text(e.created_at), escape(_short(message)),
        )
    console = stdout()
    console.print(table)
    summary = ", ".join(f"{_status(k)}: {v}" for k, v in sorted(counts.items())) or "no events"
    console.print(f"counts by status: {summary}")


def print_results(results: Sequence[EventResult], as_json: bool) -> None:
    if as_json:
        print_json([asdict(r) for r in results])
        return
    console = stdout()
    if not results:
        console.print("no pending events")
        return
    table = Table(title="processed events", title_justify="left")
    for name in ("event_id", "operation", "target", "status", "rows", "discrepancy", "seconds", "message"):
        _add_column(table, name)
    for r in results:
        table.add_row(
            _cell(r.event_id), _cell(r.operation), _cell(r.target_table), _status(r.status),
            _text(r.rows_affected), _text(r.discrepancy), f"{r.seconds:.2f}",
            _cell(r.error_message or r.warning),
        )
    console.print(table)


def print_requeue(results: Iterable[RequeueResult], as_json: bool) -> None:
    results = list(results)
    if as_json:
        print_json([asdict(r) for r in results])
        return
    console = stdout()
    if not results:
        console.print("nothing to requeue")
        return
    table = Table(title="requeue", title_justify="left")
    for name in ("event_id", "was", "result"):
        _add_column(table, name)
    for r in results:
        style = "green" if r.requeued else ("yellow" if r.reason == "would requeue" else "red")
        table.add_row(_cell(r.event_id), _cell(r.previous_status), f"[{style}]{_cell(r.reason)}[/]")
    console.print(table)


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")


def log_result(result: EventResult) -> None:
    """One log line per processed event, for the worker's log."""
    logger = logging.getLogger("bridge")
    detail = result.error_message or result.warning or ""
    logger.info(
        "%s %s %s -> %s rows=%s %s", result.event_id, result.operation, result.target_table,
        result.status, result.rows_affected, detail,
    )


class CopyProgress:
    """A progress line on stderr for copies that take more than a few seconds, on a terminal."""

    def __init__(self, after_seconds: float = 2.0) -> None:
        self.console = stderr()
        self.enabled = self.console.is_terminal
        self.after = after_seconds
        self._progress: Progress | None = None
        self._task: Any = None
        self._started: dict[str, float] = {}

    def __call__(self, event_id: str, rows: int) -> None:
        if not self.enabled:
            return
        started = self._started.setdefault(event_id, time.monotonic())
        if self._progress is None:
            if time.monotonic() - started < self.after:
                return
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=self.console, transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("")
        self._progress.update(self._task, description=f"{event_id}: {rows:,} rows read")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class WaitProgress:
    """`bridge wait` progress, shown only on a terminal."""

    def __init__(self) -> None:
        self.console = stderr()

    def __call__(self, event: Event, elapsed: float) -> None:
        if self.console.is_terminal:
            self.console.print(
                f"[{elapsed:.0f}s] waiting for {event.event_id}: {event.status}", highlight=False
            )
