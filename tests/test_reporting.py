"""What people see: the copy progress line and wait progress appear on a terminal only; top fits
a narrow terminal."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from bridge_cli import reporting
from bridge_cli.api import queue_view
from bridge_cli.events import Event
from bridge_cli.lakes import WorkerBeat
from tests.backends import LocalPair
from tests.helpers import submit


def terminal(monkeypatch: pytest.MonkeyPatch, is_terminal: bool) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(reporting, "stderr",
                        lambda: Console(file=buffer, force_terminal=is_terminal, width=100))
    return buffer


def test_copy_progress_shows_rows_read_on_a_terminal_after_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = terminal(monkeypatch, True)
    progress = reporting.CopyProgress(after_seconds=0)
    progress("insert-abc", 5000)
    progress("insert-abc", 250000)
    progress.close()
    assert "insert-abc: 250,000 rows read" in buffer.getvalue()


def test_copy_progress_stays_quiet_for_short_copies_and_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = terminal(monkeypatch, True)
    quick = reporting.CopyProgress(after_seconds=60)
    quick("insert-abc", 5000)
    quick.close()
    assert buffer.getvalue() == ""
    piped = terminal(monkeypatch, False)
    progress = reporting.CopyProgress(after_seconds=0)
    progress("insert-abc", 5000)
    progress.close()
    assert piped.getvalue() == ""


def test_wait_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    event = Event("update-1", status="processing")
    buffer = terminal(monkeypatch, True)
    reporting.WaitProgress()(event, 12.4)
    assert "[12s] waiting for update-1: processing" in buffer.getvalue()
    piped = terminal(monkeypatch, False)
    reporting.WaitProgress()(event, 12.4)
    assert piped.getvalue() == ""


class Clock:
    """The progress display's time, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shown(progress: reporting.CopyProgress) -> str:
    """What the progress display shows right now, as text."""
    assert progress._progress is not None
    out = io.StringIO()
    console = Console(file=out, width=120)
    for renderable in progress._progress.get_renderables():
        console.print(renderable)
    return out.getvalue()


def test_each_events_timer_starts_at_0(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal(monkeypatch, True)
    clock = Clock()
    progress = reporting.CopyProgress(after_seconds=0, get_time=clock)
    progress("insert-first", 1000)
    clock.now = 95.0
    assert "0:01:35" in shown(progress)
    progress.phase("insert-second", "reading", None)
    text = shown(progress)
    assert "insert-second: reading" in text and "0:00:00" in text and "insert-first" not in text
    progress.close()


def test_progress_shows_a_percentage_then_the_write_and_a_spinner_for_a_delete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal(monkeypatch, True)
    clock = Clock()
    progress = reporting.CopyProgress(after_seconds=2, get_time=clock)
    progress.phase("insert-a", "reading", 1000)
    progress("insert-a", 250)
    assert shown(progress).strip() == ""  # a quick event shows nothing
    clock.now = 3.0
    assert "insert-a: 250 rows read 25%" in shown(progress)
    progress.phase("insert-a", "writing", 1000)
    assert "insert-a: 1,000 rows read, writing" in shown(progress)
    progress.phase("delete-b", "deleting", None)
    clock.now = 6.0
    text = shown(progress)
    assert "delete-b: deleting" in text and "%" not in text
    progress.close()


@pytest.mark.parametrize("columns", [40, 50, 60])
def test_top_on_a_narrow_terminal_leaves_columns_out_instead_of_cutting_the_worker_id(
    local: LocalPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: int
) -> None:
    worker_id = "vm:20092"
    event = submit(local.lake, "insert", "dbo.big", source_table="c.s.big", primary_keys=("id",),
                   rows_expected=1000)
    local.set_event_fields(event.event_id, status="processing", worker_id=worker_id)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    local.lake.heartbeat(WorkerBeat(
        worker_id=worker_id, host="vm", pid=20092, version="0.1.0", started_at=now, last_seen=now,
        expires_at=now + timedelta(hours=1), event_id=event.event_id, phase="staging", rows=500,
        rows_per_second=1234.0,
    ))
    monkeypatch.setenv("COLUMNS", str(columns))  # the width rich gives the terminal's console
    reporting.stdout().print(reporting.top_renderable(queue_view(local.lake), 2.0))
    screen = capsys.readouterr().out
    assert screen.count(worker_id) == 2, screen  # whole, in the workers and in-flight tables
    assert event.event_id in screen, screen
    assert "…" not in screen, screen
    assert all(len(line) <= columns for line in screen.splitlines()), screen
