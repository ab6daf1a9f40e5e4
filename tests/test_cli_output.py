"""Output people copy and grep and scripts parse: ids that never wrap, plain rows when piped,
closed pipes, any output encoding, JSON shapes, and a terminal left clean after Ctrl-C."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.backends import LocalPair
from tests.test_cli import TERMINAL, USERS_TARGET, event, run, show, submit
from tests.test_cli_process import BRIDGE, cli_env
from tests.test_output_escaping import LOG_LINE
from tests.test_worker_process import SLOW, big_event
from tests.test_workers import Terminal


def failing_event(local: LocalPair, message: str) -> str:
    event_id = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    local.set_event_fields(event_id, status="failed", error_message=message)
    return event_id


def test_ids_never_wrap_and_long_messages_take_one_line_on_a_narrow_terminal(local: LocalPair) -> None:
    ids = [submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}') for _ in range(2)]
    failing = failing_event(local, "boom " * 1000)
    ids.append(failing)
    for columns in ("60", "100"):
        result = run("status", env={**TERMINAL, "COLUMNS": columns})
        assert result.exit_code == 0, show(result)
        for event_id in ids:
            assert event_id in result.stdout, f"{event_id} split at COLUMNS={columns}"
        line = next(x for x in result.stdout.splitlines() if failing in x)
        assert line.rstrip(" │").endswith("…")
        assert all(len(x) <= int(columns) for x in result.stdout.splitlines())


def test_piped_output_is_one_plain_tab_separated_line_per_event(local: LocalPair) -> None:
    first = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    failing = failing_event(local, "line one\nline two " + "x" * 5000)
    result = run("status")  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, show(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert not any(c in result.stdout for c in "│┃━─")
    by_id = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert set(by_id) == {first, failing}
    fields = by_id[failing]
    assert fields[1:4] == ["DELETE", "failed", USERS_TARGET]
    # whole, and its newline shown as \n (escaped, not joined: see test_cli_untrusted.py)
    assert fields[-1].startswith("line one\\nline two xxx") and len(fields[-1]) > 5000

    one = run("status", failing)
    assert "status\tfailed" in one.stdout.splitlines()
    assert "claim_token" not in one.stdout


def test_process_once_piped_prints_one_line_per_event_even_for_a_long_error(local: LocalPair) -> None:
    event_id = submit("insert", "--source", "c.s.missing", "--target", USERS_TARGET, "--pk", "username")
    result = run("process-once")
    assert result.exit_code == 0, show(result)
    assert len(result.stdout.splitlines()) == 1
    assert result.stdout.startswith(f"{event_id}\tINSERT\t{USERS_TARGET}\tfailed\t")


def test_a_closed_pipe_ends_the_command_quietly_with_exit_0(local: LocalPair, tmp_path: Path) -> None:
    for _ in range(3):
        submit("delete", "--target", USERS_TARGET, "--filter", '{"username": "a"}')
    command = " ".join([*BRIDGE, "status", "--limit", "100"])
    # `true` reads nothing and exits: every write bridge makes meets a pipe with no reader.
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f"{command} | true"], env=cli_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_an_output_encoding_that_cannot_show_a_character_does_not_crash(local: LocalPair) -> None:
    failing_event(local, "naïve → 中文 " + "long " * 300)
    for extra in ({}, TERMINAL):
        env = cli_env(PYTHONIOENCODING="latin-1", **extra)
        for args in (["status", "--status", "failed"], ["status", "--json"]):
            done = subprocess.run([*BRIDGE, *args], env=env, capture_output=True, timeout=120,
                                  check=False)
            assert done.returncode == 0, done.stderr.decode("latin-1")
            assert b"Traceback" not in done.stderr
            assert "naïve".encode("latin-1") in done.stdout


def test_json_shapes(local: LocalPair) -> None:
    deleted = submit("delete", "--target", USERS_TARGET, "--filter", '{"username": ["ana", "bo"]}',
                     "--metadata", '{"job": "precios", "nota": "año"}')
    data = event(deleted)
    assert data["filter_conditions"] == {"username": ["ana", "bo"]}
    assert data["metadata"] == {"job": "precios", "nota": "año"}
    assert data["source_table"] is None
    assert data["created_at"].endswith("Z") and "T" in data["created_at"]
    assert "claim_token" not in data
    raw = run("status", deleted, "--json").stdout
    assert '"año"' in raw  # readable, not \u00f1

    summary = run("status", "--summary", "--json")
    assert summary.exit_code == 0, show(summary)
    assert json.loads(summary.stdout) == {"pending": 1}
    listed = json.loads(run("status", "--json").stdout)
    assert isinstance(listed, list) and listed[0]["event_id"] == deleted

    processed = run("process-once", "--json")
    assert processed.exit_code == 0, show(processed)
    result = json.loads(processed.stdout)[0]
    shared = {"event_id", "operation", "target_table", "status", "rows_affected", "discrepancy",
              "warning", "error_message", "attempts"}
    assert shared <= set(result) and shared <= set(event(deleted))
    assert result["status"] == event(deleted)["status"]


class Screen:
    """What a terminal shows after the bytes it was sent: the little of VT100 that rich's live
    display and a tty use (carriage return, newline, cursor up, erase line; colours ignored)."""

    TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|\x1b.|(.)", re.S)

    def __init__(self, output: str) -> None:
        self.lines: list[list[str]] = [[]]
        row = col = 0
        for found in self.TOKEN.finditer(output):
            params, command, char = found.group(1), found.group(2), found.group(3)
            count = int(params) if params and params.isdigit() else 1
            if command == "A":
                row = max(0, row - count)
            elif command == "B":
                row += count
            elif command == "G":
                col = count - 1
            elif command == "K":
                line = self._line(row)
                del line[0 if params == "2" else col:]
            elif char == "\r":
                col = 0
            elif char == "\n":
                row += 1
            elif char is not None and char >= " ":
                line = self._line(row)
                line.extend(" " * (col + 1 - len(line)))
                line[col] = char
                col += 1

    def _line(self, row: int) -> list[str]:
        while len(self.lines) <= row:
            self.lines.append([])
        return self.lines[row]

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]


def test_ctrl_c_on_process_once_leaves_no_progress_line_on_the_terminal(local: LocalPair) -> None:
    event_id = big_event(local, 3_000_000)
    screen = Terminal("process-once", env=cli_env(**SLOW))
    try:
        screen.wait_for(f"{event_id}: ", "rows read", seconds=60)  # shown after 2 s
        screen.type("\x03")  # Ctrl-C, as the terminal sends it
        assert screen.proc.wait(timeout=60) == 130, screen.read()
        screen.read()
    finally:
        screen.close()
    shown = Screen(screen.output).text()
    assert not any("rows read" in line for line in shown), "\n".join(shown)
    released = [line for line in shown if "interrupted; rolled back and released" in line]
    assert len(released) == 1 and LOG_LINE.match(released[0]), "\n".join(shown)
