"""Huge events on Spark: stage in parallel where the data lives, apply in one transaction as always.

For an INSERT or UPDATE event that asks for it (metadata {"engine": "spark"}) or whose source has at
least `spark_min_rows` rows, the worker does not stream rows itself. The target session creates a
uniquely named permanent stage typed from the target; a Spark run (a local SparkSession, or a
Databricks job run) writes the source into it over JDBC; the session checks the stage against the
figures the run reports, then applies it with the ledger row in one transaction and drops it.
The worker follows the run, renewing its lease, and cancels it when the worker stops or loses the
event. Nothing here imports pyspark or databricks-sdk until a run starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bridge_cli.config import Settings
from bridge_cli.errors import PermanentError, TransientError
from bridge_cli.events import Job
from bridge_cli.identifiers import quote_backtick
from bridge_cli.spark.settings import SparkSettings, spark_settings
from bridge_cli.spark.spec import StageColumn, StageFailure, StageFigures, StageSpec
from bridge_cli.targets import ApplyPlan

if TYPE_CHECKING:
    from bridge_cli.lakes import Lake, SourceColumn

log = logging.getLogger("bridge")


class SparkRun(Protocol):
    link: str  # where to look: a Databricks run page, or the local run's log file

    def poll(self) -> StageFigures | StageFailure | None:
        """The run's answer once it has ended; None while it runs."""
        ...

    def cancel(self) -> None:
        """Stop the run and wait (bounded) until it no longer writes to the stage."""
        ...

    def cleanup(self) -> None:
        """Remove what the run left on this machine (an exported source, logs kept apart)."""
        ...


class SparkLauncher(Protocol):
    def start(self, spec: StageSpec, job: Job, columns: list[SourceColumn], lake: Lake,
              on_wait: Callable[[], None]) -> SparkRun:
        """Start a staging run for `spec` (the launcher fills in where the source is read from)."""
        ...


class SparkStager:
    def __init__(self, settings: Settings, launcher: SparkLauncher | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config: SparkSettings = spark_settings(settings)
        self.launcher = launcher or _launcher(self.config)
        self.sleep = sleep

    def refuses(self, plan: ApplyPlan) -> str | None:
        return self.config.jdbc.refuses([c.type for c in plan.columns])

    def spec(self, job: Job, plan: ApplyPlan, source_columns: list[SourceColumn], stage: str) -> StageSpec:
        config = self.config
        return StageSpec(
            event_id=job.event_id,
            columns=tuple(StageColumn(s.name, t.name, t.type) for s, t in zip(source_columns, plan.columns,
                                                                              strict=True)),
            stage=stage,
            jdbc_url=config.jdbc.url,
            jdbc_driver_class=config.jdbc.driver_class,
            jdbc_properties=dict(config.jdbc.properties),
            partitions=config.partitions,
            batch_size=config.batch_size,
            table=None if job.source is None else ".".join(quote_backtick(p) for p in job.source.parts),
            master=config.master or None,
            spark_conf=dict(config.spark_conf),
            password_secret=config.password_secret,
        )

    def stage(
        self, job: Job, plan: ApplyPlan, source_columns: list[SourceColumn], lake: Lake, stage: str,
        on_wait: Callable[[], None],
    ) -> StageFigures:
        """Run the staging job into `stage` and return its figures. `on_wait` is called between
        polls and may raise (lease lost, worker stopping): the run is then cancelled first."""
        spec = self.spec(job, plan, source_columns, stage)
        run = self.launcher.start(spec, job, source_columns, lake, on_wait)
        try:
            log.info("event %s: staging on Spark (%s, %d partitions): %s", job.event_id, self.config.kind,
                     self.config.partitions, run.link)
            while True:
                outcome = run.poll()
                if outcome is not None:
                    break
                on_wait()
                self.sleep(self.config.poll_seconds)
        except BaseException:
            log.warning("event %s: cancelling the Spark staging run (%s)", job.event_id, run.link)
            run.cancel()
            raise
        finally:
            run.cleanup()
        if isinstance(outcome, StageFailure):
            message = f"Spark staging run failed: {outcome.message} (run: {run.link})"
            raise PermanentError(message) if is_permanent(outcome) else TransientError(message)
        log.info("event %s: Spark staged %d rows in %.1fs", job.event_id, outcome.rows, outcome.seconds)
        return outcome


def is_permanent(failure: StageFailure) -> bool:
    """A refusal with a server error number is sorted as the worker's own drivers sort it
    (deadlocks, lock timeouts and lost links retry; truncation, conversion, constraints fail); a
    lost connection (SQLState 08…) retries; otherwise the job's own judgement."""
    from bridge_cli.targets.sqlserver.pymssql_driver import TRANSIENT_NUMBERS, TRANSIENT_TEXT

    if failure.code:
        text = failure.message.lower()
        return failure.code not in TRANSIENT_NUMBERS and not any(m in text for m in TRANSIENT_TEXT)
    if failure.state and failure.state.startswith("08"):
        return False
    return failure.permanent


def _launcher(config: SparkSettings) -> SparkLauncher:
    if config.kind == "local":
        from bridge_cli.spark.local import LocalLauncher

        return LocalLauncher(config)
    from bridge_cli.spark.databricks import DatabricksLauncher

    return DatabricksLauncher(config)
