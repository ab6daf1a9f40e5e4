"""What people see: the copy progress line and wait progress appear on a terminal only."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bridge_cli import reporting
from bridge_cli.events import Event


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
