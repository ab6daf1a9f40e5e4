"""Write the shell completion scripts in completions/ (`make completions`).

The scripts call `bridge` back with _BRIDGE_COMPLETE set, so they complete whatever commands and
options the installed app has; tests/test_completions.py checks that the files are current.
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer.completion import get_completion_script

PROG = "bridge"
COMPLETE_VAR = "_BRIDGE_COMPLETE"
FILES = {"bash": "bridge.bash", "zsh": "_bridge", "fish": "bridge.fish"}


def completion_scripts() -> dict[str, str]:
    return {
        name: get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)
        + "\n"
        for shell, name in FILES.items()
    }


def write_completions(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in completion_scripts().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_completions(Path(sys.argv[1] if len(sys.argv) > 1 else "completions")):
        sys.stdout.write(f"wrote {path}\n")
