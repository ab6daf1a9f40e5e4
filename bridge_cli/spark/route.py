"""Which events stage on Spark: those that ask for it, or whose source is big enough."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge_cli.config import Settings
from bridge_cli.events import ENGINES, Job, Operation
from bridge_cli.targets import ApplyPlan

if TYPE_CHECKING:
    from bridge_cli.lakes import Lake
    from bridge_cli.spark import SparkStager

log = logging.getLogger("bridge")


@dataclass(frozen=True)
class Route:
    """Where an event's rows are staged: `spark` or not, and a note for the event's warning when
    it asked for Spark and could not have it."""

    spark: bool
    note: str | None = None


def choose_route(
    job: Job, plan: ApplyPlan, settings: Settings, stager: SparkStager | None, lake: Lake,
) -> Route:
    """Spark when the event asks for it or its source is big enough, and Spark can take it."""
    engine, note = job.engine, None
    if engine is not None and engine not in ENGINES:
        note = f"metadata engine {engine!r} is not one of {', '.join(ENGINES)}: ignored"
        engine = None
    if job.operation is Operation.DELETE or job.source is None or engine == "worker":
        return Route(False, note)
    if engine != "spark":
        if stager is None or settings.spark_min_rows <= 0:
            return Route(False, note)
        rows = lake.count_rows(job.source)
        if rows < settings.spark_min_rows:
            return Route(False, note)
        log.info("event %s: source has %d rows (spark_min_rows %d): staging on Spark", job.event_id, rows,
                 settings.spark_min_rows)
    if stager is None:
        return Route(False, 'metadata asks for {"engine": "spark"}, but this worker\'s profile has no '
                            "spark: section; staged by the worker itself")
    refused = stager.refuses(plan)
    if refused:
        return Route(False, f"not staged on Spark: {refused}; staged by the worker itself")
    return Route(True, note)
