"""Event rows are untrusted input (issue 16): whatever a row holds reaches tables, piped lines,
logs, messages and JSON escaped, never as terminal control, a forged line or reordered text."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from bridge_cli import reporting
from bridge_cli.api import queue_view
from bridge_cli.events import Event
from bridge_cli.lakes import WorkerBeat
from bridge_cli.untrusted import printable
from tests.backends import LocalPair
from tests.test_cli import TERMINAL, run, show, utcnow

# What a hostile or careless job can write: the terminal-clearing and retitling escapes,
# a forged line, a tab that would shift piped fields, C1, DEL, bidi overrides and isolates.
HOSTILE_ID = "esc-2\x1b[2K\x1b[1Afake"
HOSTILE_TARGET = "dbo.t\u202e\x1b]0;PWNED\x07"
HOSTILE_ERROR = "boom\x1b[2J\r\nforged line\tcell\x85c1\x7fdel\u202eevil\u2066iso\u2069\u2028sep"
SHOWN_ID = "esc-2\\x1b[2K\\x1b[1Afake"
SHOWN_TARGET = "dbo.t\\u202e\\x1b]0;PWNED\\x07"
SHOWN_ERROR = "boom\\x1b[2J\\r\\nforged line\\tcell\\x85c1\\x7fdel\\u202eevil\\u2066iso\\u2069\\u2028sep"
# Raw characters that must never reach a screen, a pipe or a log (\n and \t only as bridge's own
# line and field separators).
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def assert_no_raw(text: str, where: str) -> None:
    found = RAW.search(text)
    assert found is None, f"{where}: raw {found.group()!r} in {text!r}"


def hostile_event(local: LocalPair, **fields: Any) -> None:
    values: dict[str, Any] = {
        "event_id": HOSTILE_ID, "operation": "INSERT", "source_table": "c.s.t",
        "target_table": HOSTILE_TARGET, "primary_keys": ["id"], "priority": 5, "status": "failed",
        "error_message": HOSTILE_ERROR, "created_at": utcnow(), "attempts": 1, **fields,
    }
    local.lake.insert_event(Event(**values))


def test_printable_escapes_control_and_bidi_characters_and_nothing_else() -> None:
    assert printable(HOSTILE_ERROR) == SHOWN_ERROR
    assert printable("\x00\x1f\x7f\x80\x9f\u202a\u202d\u2068") == "\\x00\\x1f\\x7f\\x80\\x9f\\u202a\\u202d\\u2068"
    kept = "naïve → 中文 [bold] C:\\temp \u200b"
    assert printable(kept) == kept
    assert printable(printable(HOSTILE_ERROR)) == SHOWN_ERROR


def test_status_tables_show_an_event_rows_escapes_visibly_instead_of_obeying_them(local: LocalPair) -> None:
    hostile_event(local)
    for args in (["status"], ["status", HOSTILE_ID]):
        result = run(*args, env=TERMINAL)
        assert result.exit_code == 0, show(result)
        assert_no_raw(result.output, " ".join(args))
        assert SHOWN_ID in result.stdout and SHOWN_TARGET in result.stdout, show(result)
    one = run("status", HOSTILE_ID, env=TERMINAL).stdout
    assert SHOWN_ERROR in one  # the single-event table shows the message whole
    listed = run("status", env=TERMINAL).stdout
    assert "boom\\x1b[2J\\r\\nforged line\\tcell" in listed


def test_piped_status_keeps_each_event_on_one_line_of_tab_separated_fields(local: LocalPair) -> None:
    hostile_event(local)
    result = run("status")
    assert result.exit_code == 0, show(result)
    assert_no_raw(result.output, "status | cat")
    lines = result.stdout.splitlines()
    assert len(lines) == 1, show(result)
    fields = lines[0].split("\t")
    assert len(fields) == 7, fields
    assert (fields[0], fields[3], fields[6]) == (SHOWN_ID, SHOWN_TARGET, SHOWN_ERROR)

    one = run("status", HOSTILE_ID)
    assert_no_raw(one.output, "status ID | cat")
    assert all(len(line.split("\t")) == 2 for line in one.stdout.splitlines()), one.stdout
    assert f"error_message\t{SHOWN_ERROR}" in one.stdout.splitlines()


def test_status_json_escapes_control_and_bidi_characters_and_reads_back_the_same(local: LocalPair) -> None:
    hostile_event(local)
    listed = run("status", "--json")
    one = run("status", HOSTILE_ID, "--json")
    for result in (listed, one):
        assert result.exit_code == 0, show(result)
        assert_no_raw(result.output, "status --json")
    data = json.loads(one.stdout)
    assert (data["event_id"], data["target_table"], data["error_message"]) == (
        HOSTILE_ID, HOSTILE_TARGET, HOSTILE_ERROR)
    assert json.loads(listed.stdout)[0]["error_message"] == HOSTILE_ERROR
    assert "\\u202e" in one.stdout and "\\u001b" in one.stdout


def hostile_worker(local: LocalPair) -> WorkerBeat:
    now = utcnow()
    beat = WorkerBeat(
        worker_id="vm:1\x1b[2J", host="vm\u202e", pid=1, version="0.1\x1b]0;PWNED\x07",
        started_at=now, last_seen=now, expires_at=now + timedelta(hours=1), event_id=HOSTILE_ID,
        phase="staging\r\nforged", rows=5, rows_per_second=2.0,
    )
    local.lake.heartbeat(beat)
    return beat


def test_workers_shows_a_workers_row_escaped_in_a_table_piped_and_as_json(local: LocalPair) -> None:
    beat = hostile_worker(local)
    table = run("workers", env=TERMINAL)
    assert table.exit_code == 0, show(table)
    assert_no_raw(table.output, "workers")
    assert "vm:1\\x1b[2J" in table.stdout and SHOWN_ID in table.stdout

    piped = run("workers")
    assert_no_raw(piped.output, "workers | cat")
    assert piped.stdout.splitlines()[0].split("\t")[:4] == ["vm:1\\x1b[2J", "alive", SHOWN_ID,
                                                            "staging\\r\\nforged"]
    as_json = run("workers", "--json")
    assert_no_raw(as_json.output, "workers --json")
    assert json.loads(as_json.stdout)[0]["version"] == beat.version


def test_top_shows_workers_and_events_in_flight_escaped(
    local: LocalPair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = hostile_worker(local)
    hostile_event(local, status="processing", error_message=None, worker_id=beat.worker_id)
    monkeypatch.setenv("COLUMNS", "200")
    reporting.stdout().print(reporting.top_renderable(queue_view(local.lake), 2.0, "lost \x1b[2J"))
    screen = capsys.readouterr().out
    assert_no_raw(screen, "top")
    for shown in (SHOWN_ID, SHOWN_TARGET, "vm:1\\x1b[2J", "lost \\x1b[2J"):
        assert shown in screen, screen


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) ")


def test_worker_log_lines_escape_what_they_quote_from_an_event_row(local: LocalPair) -> None:
    hostile_event(local, status="pending", error_message=None, attempts=0)
    result = run("worker", "--max-events", "1", "--poll-interval", "0.05")
    assert result.exit_code == 0, show(result)
    assert_no_raw(result.stderr, "worker log")
    lines = result.stderr.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), result.stderr
    claimed = next(line for line in lines if "claimed event" in line)
    assert f"event={SHOWN_ID} claimed event {SHOWN_ID} (INSERT {SHOWN_TARGET}, attempt 1)" in claimed
    assert any(f"event {SHOWN_ID} INSERT {SHOWN_TARGET} failed" in line for line in lines), result.stderr


def test_process_once_json_log_lines_are_strict_json_with_escapes(local: LocalPair) -> None:
    hostile_event(local, status="pending", error_message=None, attempts=0)
    result = run("process-once", "--log-format", "json", "--log-level", "info")
    assert result.exit_code == 0, show(result)
    assert_no_raw(result.output, "process-once")
    records = [json.loads(line) for line in result.stderr.splitlines()]
    claimed = next(r for r in records if r["message"].startswith("claimed event"))
    assert claimed["event_id"] == HOSTILE_ID and HOSTILE_TARGET in claimed["message"]
    fields = result.stdout.splitlines()[0].split("\t")  # the piped result row
    assert fields[:3] == [SHOWN_ID, "INSERT", SHOWN_TARGET]


def test_error_and_info_messages_escape_what_they_quote_from_an_event_row(local: LocalPair) -> None:
    hostile_event(local)
    waited = run("wait", HOSTILE_ID, "--json", env=TERMINAL)
    assert waited.exit_code == 1, show(waited)
    assert_no_raw(waited.stderr, "wait")
    assert waited.stderr.strip().splitlines() == [f"Error: event {SHOWN_ID} failed: {SHOWN_ERROR}"]

    again = run("process-once", "--event-id", HOSTILE_ID, env=TERMINAL)
    assert again.exit_code == 0, show(again)
    assert_no_raw(again.stderr, "process-once --event-id")
    assert f"event {SHOWN_ID} is failed: nothing to do" in again.stderr


# -- strict JSON only (issue 16, item 7) -----------------------------------------------------
def strict(text: str) -> Any:
    """json.loads that refuses what Python reads but JSON has not: NaN, Infinity, -Infinity."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the output: not JSON")

    return json.loads(text, parse_constant=refuse)


NOT_STRICT_JSON = ('{"a": NaN}', '{"a": -Infinity}', '{"a": 1e400}', "[" * 5000)


@pytest.mark.parametrize("stored", NOT_STRICT_JSON, ids=["nan", "-infinity", "1e400", "deep"])
def test_status_json_is_strict_json_and_shows_a_column_that_is_not_as_its_raw_string(
    local: LocalPair, stored: str
) -> None:
    hostile_event(local, metadata=stored, filter_conditions=stored)
    for args in (["status", "--json"], ["status", HOSTILE_ID, "--json"]):
        result = run(*args)
        assert result.exit_code == 0, show(result)
        data = strict(result.stdout)
        shown = data[0] if isinstance(data, list) else data
        assert (shown["metadata"], shown["filter_conditions"]) == (stored, stored)
    for env in ({}, TERMINAL):  # the other forms show it as it is stored too
        result = run("status", HOSTILE_ID, env=env)
        assert result.exit_code == 0, show(result)
        assert stored[:20] in result.stdout


def test_workers_json_is_strict_json_when_a_workers_row_holds_nan(local: LocalPair) -> None:
    now = utcnow()
    local.lake.heartbeat(WorkerBeat(
        worker_id="vm:1", host="vm", pid=1, version="0.1", started_at=now, last_seen=now,
        expires_at=now + timedelta(hours=1), event_id="insert-1", phase="staging", rows=5,
        rows_per_second=float("nan"),
    ))
    result = run("workers", "--json")
    assert result.exit_code == 0, show(result)
    assert strict(result.stdout)[0]["rows_per_second"] is None
