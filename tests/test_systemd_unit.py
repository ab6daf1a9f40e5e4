"""examples/bridge-worker.service passes `systemd-analyze verify`, as it would on a host where bridge
is installed as the unit says (/opt/bridge/.venv/bin/bridge): the check runs in a scratch root
holding the system's own units, a stand-in executable at that path, and the unit file unchanged.
Skipped where systemd-analyze is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "examples" / "bridge-worker.service"
SYSTEM_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or SYSTEM_UNITS is None,
                    reason="systemd-analyze (systemd) is not installed here")
def test_the_example_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    executable = next(line.split("=", 1)[1].split()[0] for line in text.splitlines() if line.startswith("ExecStart="))
    assert SYSTEM_UNITS is not None
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    stand_in = tmp_path / executable.lstrip("/")
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", UNIT.name],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
