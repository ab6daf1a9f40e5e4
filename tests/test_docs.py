"""The README documents every command and option; the Makefile's help lists its targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import typer

from bridge_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMAND = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_readme_section(name: str) -> None:
    assert f"### `bridge {name}`" in README


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_mentioned_in_the_readme(name: str) -> None:
    command = COMMAND.commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        for flag in param.opts:
            if flag.startswith("--") and flag != "--help":
                assert re.search(re.escape(flag) + r"\b", README), f"{name}: {flag} undocumented"


def test_global_options_are_documented() -> None:
    for flag in ("--config", "--profile", "BRIDGE_CONFIG", "BRIDGE_PROFILE", "BRIDGE_HOME"):
        assert flag in README


def test_make_help_lists_the_targets_the_readme_names() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    for target in re.findall(r"(?m)(?:^|`)make ([a-z-]+)", README):
        assert target in listed, f"README names `make {target}` but `make help` does not list it"
