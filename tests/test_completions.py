"""completions/ is generated from the app, and completion works in a real shell."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge_cli.completions import completion_scripts

ROOT = Path(__file__).resolve().parent.parent


def test_completion_scripts_are_current() -> None:
    for name, text in completion_scripts().items():
        path = ROOT / "completions" / name
        assert path.is_file(), f"{path} missing: run `make completions`"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `make completions`"


def _bridge_dir() -> str:
    # The venv's own entry point: Linux's iproute2 also ships a `bridge` command on PATH.
    return str(Path(sys.executable).parent)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("line,expected", [
    ("bridge su", "submit"),
    ("bridge process", "process-once"),
    ("bridge submit --pri", "--priority"),
    ("bridge status --status ", "completed"),
    ("bridge submit ups", "upsert"),
    ("bridge submit rep", "replace"),
    ("bridge status --operation ", "replace"),
])
def test_bash_completion_completes_commands_and_options(line: str, expected: str) -> None:
    words = line.split(" ")
    script = (
        f"source {ROOT / 'completions' / 'bridge.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_bridge_completion bridge\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": _bridge_dir() + os.pathsep + os.environ.get("PATH", "")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout.split()
    assert expected in out
