"""Help and usage a newcomer reads: placeholders that say what to type, our own messages,
operations in any case, plain `bridge`, and global options after the command."""

from __future__ import annotations

import pytest

from bridge_cli.cli import app
from tests.backends import LocalPair
from tests.test_cli import USERS_TARGET, event, run, show

COMMANDS = ["init", "submit", "status", "wait", "process-once", "worker", "requeue", "cancel", "prune"]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_placeholders_say_what_to_type(command: str) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.exit_code == 0, show(result)
    for machine_words in ("<str>", "<int", "<float", "list[str]", "range>"):
        assert machine_words not in result.stdout, f"{command}: {machine_words}"


def test_placeholders_name_the_thing() -> None:
    top = run("--help").stdout
    assert "--config FILE" in top and "-p, --profile NAME" in top
    submit = run("submit", "--help").stdout
    for shown in ("--pk COLUMN", "--target TABLE", "--source TABLE", "--expected ROWS",
                  "--filter JSON", "--timeout SECONDS", "OPERATION"):
        assert shown in submit, shown


def test_plain_bridge_prints_help_and_exits_0() -> None:
    result = run()
    assert result.exit_code == 0, show(result)
    assert "Usage: bridge" in result.stdout and "submit" in result.stdout


def test_operations_are_accepted_in_any_case_as_the_guide_writes_them(local: LocalPair) -> None:
    result = run("submit", "DELETE", "--target", USERS_TARGET, "--filter", '{"username": "a"}', "-q")
    assert result.exit_code == 0, show(result)
    assert event(result.stdout.strip())["operation"] == "DELETE"
    assert run("status", "--status", "PENDING").exit_code == 0


@pytest.mark.parametrize("args,message", [
    (["submit", "insert", "--target", "t", "--expected", "-1"], "must be at least 0, got -1"),
    (["submit", "insert", "--target", "t", "--priority", "11"], "must be between 1 and 10, got 11"),
    (["status", "--limit", "0"], "must be at least 1, got 0"),
    (["wait", "x", "--interval", "0"], "must be at least 1, got 0"),
])
def test_bad_values_are_refused_in_our_words(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, show(result)
    assert message in result.stderr
    assert "Input should" not in result.output


@pytest.mark.parametrize("args,env,named,choices", [
    (["status", "--status", "bogus"], {}, "'--status'", "pending, processing, completed, failed"),
    (["status", "--operation", "bogus"], {}, "'--operation'", "insert, update, delete"),
    (["submit", "bogus", "--target", "t"], {}, "'OPERATION'", "insert, update, delete"),
    (["--log-format", "bogus", "status"], {}, "'--log-format'", "text, json"),
    (["status"], {"BRIDGE_LOG_FORMAT": "bogus"}, "'--log-format'", "text, json"),
    (["status", "--log-level", "bogus"], {}, "'--log-level'", "debug, info, warning, error"),
], ids=["status", "operation", "submit", "log-format", "BRIDGE_LOG_FORMAT", "log-level"])
def test_a_value_that_is_not_one_of_the_choices_is_refused_in_our_words(
    args: list[str], env: dict[str, str], named: str, choices: str
) -> None:
    result = run(*args, env=env)
    assert result.exit_code == 2, show(result)
    assert f"Invalid value for {named}" in result.stderr, show(result)
    assert f"'bogus' is not one of {choices}" in result.stderr, show(result)
    assert "Value error" not in result.output


def test_global_options_are_accepted_after_the_command(local: LocalPair) -> None:
    for args in (["--profile", "prod", "status"], ["status", "--profile", "prod"],
                 ["status", "-p", "prod"], ["status", "--profile=prod"]):
        result = run(*args)
        assert result.exit_code == 5, show(result)
        assert "profile 'prod' asked for, but there is no bridge.yaml" in result.stderr
    assert run("status", "-v").exit_code == 0


def test_the_app_object_is_the_entry_points_app() -> None:
    assert app.info.name == "bridge"
