"""Small helpers shared by the tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bridge_cli.api import submit_event
from bridge_cli.config import load_settings
from bridge_cli.events import Event, Operation, SubmitRequest
from bridge_cli.lakes import Lake


class ManualClock:
    """The engine's injectable clock, moved by hand instead of sleeping (not a fake of a
    real part: time itself is the input under test)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, 12, 0, 0)
        self.mono = 0.0

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
        self.mono += seconds


def submit(lake: Lake, operation: str, target: str, **fields: Any) -> Event:
    from bridge_cli.lakes.databricks import DatabricksLake

    if isinstance(lake, DatabricksLake) and isinstance(fields.get("source_table"), str):
        from tests.databricks_env import ENV

        assert ENV is not None  # a Databricks lake in a test means one of the two modes
        fields["source_table"] = ENV.source(fields["source_table"])  # where DatabricksPair made it
    request = SubmitRequest(
        operation=Operation(operation.upper()),
        target_table=target,
        primary_keys=tuple(fields.pop("primary_keys", ())),
        **fields,
    )
    # The embedded default's policy (every table allowed but bridge's own): tests that check
    # allowed_sources / allowed_targets call api.submit_event with their own settings.
    return submit_event(lake, request, load_settings(env={}))
