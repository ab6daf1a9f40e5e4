"""The embedded event table under several real processes: every acknowledged write is stored.

Writers loop over conditional updates of their own event (the claim/lease/record pattern) and new
submits; readers list and count at the same time. Each process reports what it was told was
written; the stored rows must match exactly. Bounded in time and count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.backends import LocalPair
from tests.helpers import submit

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("BRIDGE_STRESS_SECONDS", "12"))

WORKER = textwrap.dedent("""
    import json, sys, time, uuid, dataclasses
    from bridge_cli.config import load_settings
    from bridge_cli.errors import BridgeError
    from bridge_cli.lakes.duckdb import DuckDBLake
    from bridge_cli.api import submit_event
    from bridge_cli.events import Operation, SubmitRequest

    home, role, event_id, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    settings = dataclasses.replace(load_settings(env={"BRIDGE_HOME": home}), lock_timeout=30.0)
    lake = DuckDBLake(settings)
    acknowledged, submitted, errors, reads = 0, [], [], 0
    token = None
    end = time.monotonic() + seconds
    while time.monotonic() < end and acknowledged < 5000:
        try:
            if role == "writer":
                new = uuid.uuid4().hex
                if lake.update_event_if(event_id, {"claim_token": token}, {"claim_token": new,
                                                                             "attempts": acknowledged + 1}):
                    token = new
                    acknowledged += 1
                else:
                    errors.append("conditional update matched nothing")
                    break
                if acknowledged % 10 == 0:
                    request = SubmitRequest(operation=Operation.DELETE, target_table="dbo.t", primary_keys=(),
                                            filter_conditions={"id": 1})
                    submitted.append(submit_event(lake, request, settings).event_id)
            else:
                lake.list_events(None, 50)
                lake.count_by_status()
                reads += 1
        except BridgeError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"acknowledged": acknowledged, "submitted": submitted, "errors": errors,
                      "reads": reads, "token": token}))
""")


def test_every_acknowledged_write_is_stored_under_concurrent_processes(local: LocalPair) -> None:
    writers = [submit(local.lake, "delete", "dbo.t", filter_conditions={"id": 1}) for _ in range(4)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(local.home), "writer", e.event_id, str(SECONDS)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for e in writers
    ] + [
        subprocess.Popen([sys.executable, "-c", WORKER, str(local.home), "reader", "-", str(SECONDS)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=SECONDS + 120)
        assert process.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for event, report in zip(writers, reports[: len(writers)], strict=True):
        assert report["errors"] == [], report["errors"][:3]
        assert report["acknowledged"] > 0
        stored = local.lake.get_event(event.event_id)
        assert stored is not None
        assert (stored.attempts, stored.claim_token) == (report["acknowledged"], report["token"])
        for submitted in report["submitted"]:
            assert local.lake.get_event(submitted) is not None, f"acknowledged submit {submitted} is gone"
    assert all(r["errors"] == [] and r["reads"] > 0 for r in reports[len(writers):]), reports[len(writers):]


@pytest.mark.skipif(not os.environ.get("BRIDGE_STRESS_LONG"), reason="long soak: set BRIDGE_STRESS_LONG=1")
def test_soak(local: LocalPair) -> None:
    os.environ["BRIDGE_STRESS_SECONDS"] = "120"
    test_every_acknowledged_write_is_stored_under_concurrent_processes(local)
