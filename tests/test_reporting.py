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
