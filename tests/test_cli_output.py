"""Output people copy and grep and scripts parse: ids that never wrap, plain rows when piped,
closed pipes, any output encoding, and JSON shapes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.backends import LocalPair
from tests.test_cli import TERMINAL, USERS_TARGET, event, run, show, submit
from tests.test_cli_process import BRIDGE, cli_env


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
