"""Spark on Databricks: bridge's staging entry point as a one-time job run, through databricks-sdk.

The run is a `python_wheel_task` (package `bridge_cli`, entry point `bridge-spark-stage`) whose one
parameter is the spec JSON: on an existing cluster (`cluster_id`, the wheel as a library), on
serverless compute (`serverless`, the wheel as an environment dependency), or as a run of a job
already defined with that task (`job_id`). The job reads the source natively (`spark.table`) and
reads the JDBC password from the secret scope itself; neither the token nor the password is sent.
The worker follows the run with `jobs.get_run`, reads the job's answer from the task's logs
(`jobs.get_run_output`), and cancels the run when it must stop.

Verified only on paper: no Databricks workspace is reachable from where this was written, so the
SDK calls (their names, arguments and the dataclasses they return, as in databricks-sdk 0.167) are
tested with a recording client, not against a live workspace.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge_cli.errors import TransientError
from bridge_cli.events import Job
from bridge_cli.spark.settings import SparkSettings
from bridge_cli.spark.spec import StageFailure, StageFigures, StageSpec, parse_output

if TYPE_CHECKING:
    from bridge_cli.lakes import Lake, SourceColumn

log = logging.getLogger("bridge")

PACKAGE = "bridge_cli"
ENTRY_POINT = "bridge-spark-stage"
TASK_KEY = "stage"
ENVIRONMENT_KEY = "bridge"
SERVERLESS_ENVIRONMENT_VERSION = "2"  # Python 3.11 on serverless; bridge needs >= 3.10
RUNNING_STATES = frozenset({"PENDING", "QUEUED", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY"})
ENDED_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
POLL_ERRORS_FOR = 600.0  # seconds of failed polls in a row before the run is given up (transient)
OUTPUT_TRIES = 3  # polls that may fail to read an ended run's output before it is given up
CANCEL_WAIT = 60.0  # seconds cancel() waits for the run to end
CANCEL_POLL = 5.0


def idempotency_token(event_id: str, stage: str) -> str:
    """The same for a resubmit of the same stage (Databricks then returns the run already
    started), different for every stage; 64 characters at most, as the Jobs API asks."""
    digest = hashlib.sha256(f"{event_id}\n{stage}".encode()).hexdigest()
    return f"bridge-{digest[:48]}"


def _one_line(text: object, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


def _failure(what: str, exc: BaseException) -> str:
    return f"{what}: {type(exc).__name__}: {_one_line(exc, 300)}"


def _enum_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _run_id(waiter: Any) -> int:
    """The run id of what `jobs.submit` / `jobs.run_now` returned (a `Wait` whose `response` is a
    SubmitRunResponse / RunNowResponse, and which binds `run_id`), without waiting on it."""
    run_id = getattr(getattr(waiter, "response", None), "run_id", None)
    if run_id is None:
        try:
            run_id = waiter.run_id  # Wait.__getattr__ reads its bound arguments (KeyError if absent)
        except (AttributeError, KeyError):
            run_id = None
    if run_id is None:
        raise TransientError("Databricks accepted the staging run but returned no run id")
    return int(run_id)


class DatabricksLauncher:
    def __init__(self, config: SparkSettings, client: Any = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.client = client
        self.sleep = sleep
        self.monotonic = monotonic

    def _client(self) -> Any:
        if self.client is None:
            workspace = self.config.workspace
            try:
                from databricks.sdk import WorkspaceClient
                from databricks.sdk.core import Config

                host = workspace.get("host") or None
                if host and "://" not in host:
                    host = f"https://{host}"
                # A bounded budget: the SDK's default (300 s of retries) would hang a worker's event
                # on an unreachable workspace.
                self.client = WorkspaceClient(config=Config(
                    host=host, token=workspace.get("token") or None, profile=workspace.get("profile") or None,
                    retry_timeout_seconds=60, http_timeout_seconds=60,
                ))
            except Exception as exc:
                message = _failure(f"{self.config.source}: cannot connect to the Databricks workspace", exc)
                token = workspace.get("token")
                if token:
                    message = message.replace(token, "***")
                raise TransientError(message) from None
        return self.client

    def start(self, spec: StageSpec, job: Job, columns: list[SourceColumn], lake: Lake,
              on_wait: Callable[[], None]) -> DatabricksRun:
        client = self._client()
        config = self.config
        spec_json = dataclasses.replace(spec, master=None, parquet=None).to_json()
        token = idempotency_token(job.event_id, spec.stage)
        try:
            if config.job_id is not None:
                waiter = client.jobs.run_now(job_id=config.job_id, python_params=[spec_json],
                                             idempotency_token=token)
            else:
                waiter = self._submit(client, job, spec_json, token)
        except Exception as exc:
            raise TransientError(_failure("cannot start the Databricks staging run", exc)) from None
        run_id = _run_id(waiter)
        link = f"run {run_id}"
        try:
            link = client.jobs.get_run(run_id).run_page_url or link
        except Exception as exc:
            log.warning("event %s: Databricks staging run %s started; its page is unknown (%s)", job.event_id,
                        run_id, _one_line(exc, 200))
        return DatabricksRun(client, run_id, link, self.sleep, self.monotonic)

    def _submit(self, client: Any, job: Job, spec_json: str, token: str) -> Any:
        from databricks.sdk.service import compute
        from databricks.sdk.service.jobs import JobEnvironment, PythonWheelTask, SubmitTask

        config = self.config
        assert config.wheel is not None  # spark_settings asks for one unless job_id is set
        wheel_task = PythonWheelTask(package_name=PACKAGE, entry_point=ENTRY_POINT, parameters=[spec_json])
        run_name = f"{config.run_name} {job.event_id}"
        if config.serverless:
            task = SubmitTask(task_key=TASK_KEY, environment_key=ENVIRONMENT_KEY, python_wheel_task=wheel_task)
            environment = JobEnvironment(
                environment_key=ENVIRONMENT_KEY,
                spec=compute.Environment(environment_version=SERVERLESS_ENVIRONMENT_VERSION,
                                         dependencies=[config.wheel]),
            )
            return client.jobs.submit(run_name=run_name, tasks=[task], environments=[environment],
                                      idempotency_token=token)
        task = SubmitTask(task_key=TASK_KEY, existing_cluster_id=config.cluster_id, python_wheel_task=wheel_task,
                          libraries=[compute.Library(whl=config.wheel)])
        return client.jobs.submit(run_name=run_name, tasks=[task], idempotency_token=token)


class DatabricksRun:
    def __init__(self, client: Any, run_id: int, link: str,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.run_id = run_id
        self.link = link
        self.sleep = sleep
        self.monotonic = monotonic
        self._failing_since: float | None = None
        self._output_failures = 0

    def poll(self) -> StageFigures | StageFailure | None:
        try:
            run = self.client.jobs.get_run(self.run_id)
        except Exception as exc:
            return self._poll_failed(exc)
        self._failing_since = None
        state = run.state
        life = _enum_value(getattr(state, "life_cycle_state", None))
        if life is None:  # only the newer `status` (RunLifecycleStateV2State)
            life = _enum_value(getattr(getattr(run, "status", None), "state", None))
        if life not in ENDED_STATES:
            return None  # RUNNING_STATES, or a state this version does not know yet: keep following
        task_run_id = self._task_run_id(run)
        if task_run_id is None and life != "TERMINATED":  # nothing ran: no output to read
            return StageFailure(f"the job gave no answer: {self._describe(run)}", permanent=False)
        try:
            output = self.client.jobs.get_run_output(run_id=task_run_id or self.run_id)
        except Exception as exc:
            self._output_failures += 1
            if self._output_failures < OUTPUT_TRIES:
                log.warning("Databricks run %s ended; reading its output failed (%s); trying again", self.run_id,
                            _one_line(exc, 200))
                return None
            return StageFailure(f"{self._describe(run)}; its output could not be read: "
                                f"{_failure('get_run_output', exc)}", permanent=False)
        answer = parse_output(output.logs or "")
        if answer is not None:
            return answer
        message = f"the job gave no answer: {self._describe(run)}"
        if output.error:
            message += f"; error: {_one_line(output.error)}"
        return StageFailure(message, permanent=False)

    def _poll_failed(self, exc: Exception) -> StageFailure | None:
        now = self.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since > POLL_ERRORS_FOR:
            return StageFailure(f"the run could not be followed for {POLL_ERRORS_FOR / 60:.0f} minutes: "
                                f"{_failure('get_run', exc)}", permanent=False)
        log.warning("Databricks run %s: polling failed (%s); trying again", self.run_id, _one_line(exc, 200))
        return None

    @staticmethod
    def _task_run_id(run: Any) -> int | None:
        """The staging task's run (get_run_output answers for a task run, not a multi-task run):
        the wheel task's latest attempt; None when the run lists no task run."""
        tasks = [t for t in (run.tasks or []) if t.run_id is not None]
        wheel = [t for t in tasks if t.python_wheel_task is not None] or tasks
        if not wheel:
            return None
        return int(max(wheel, key=lambda t: t.attempt_number or 0).run_id)

    @staticmethod
    def _describe(run: Any) -> str:
        state = run.state
        life = _enum_value(getattr(state, "life_cycle_state", None)) or "unknown"
        result = _enum_value(getattr(state, "result_state", None))
        text = f"run {life}" + (f" {result}" if result else "")
        message = getattr(state, "state_message", None)
        if message:
            text += f": {_one_line(message)}"
        return text

    def cancel(self) -> None:
        try:
            self.client.jobs.cancel_run(self.run_id)  # returns a Wait: never waited on (it blocks)
        except Exception as exc:
            log.warning("Databricks run %s: cancelling failed (%s)", self.run_id, _one_line(exc, 200))
        deadline = self.monotonic() + CANCEL_WAIT
        while True:
            try:
                state = self.client.jobs.get_run(self.run_id).state
                if _enum_value(getattr(state, "life_cycle_state", None)) in ENDED_STATES:
                    return
            except Exception as exc:
                log.warning("Databricks run %s: checking the cancelled run failed (%s)", self.run_id,
                            _one_line(exc, 200))
            if self.monotonic() >= deadline:
                break
            self.sleep(CANCEL_POLL)
        log.warning("Databricks run %s was cancelled but has not ended after %.0fs; it may still write to its "
                    "stage (%s)", self.run_id, CANCEL_WAIT, self.link)

    def cleanup(self) -> None:
        """Nothing of a Databricks run is on this machine."""
