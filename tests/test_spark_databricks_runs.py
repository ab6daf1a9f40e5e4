"""Spark staging on Databricks, driven through SparkStager with a recording client.

No Databricks workspace is reachable here: `RecordingWorkspaceClient` stands in for
`databricks.sdk.WorkspaceClient`. Its `.jobs` records every call with its arguments and answers with
the SDK's own dataclasses (`jobs.Run`, `jobs.RunState`, `jobs.RunTask`, `jobs.RunOutput`, a `Wait`
holding a `SubmitRunResponse`), scripted per scenario. What is checked is what a user would notice:
the run Databricks is asked for, the figures or the error the event gets, a cancelled run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk.service import compute
from databricks.sdk.service import jobs as sdk_jobs
from databricks.sdk.service._internal import Wait

from bridge_cli.config import Settings, load_settings
from bridge_cli.errors import ConfigError, PermanentError, TransientError
from bridge_cli.events import Event, Job, build_job
from bridge_cli.identifiers import TableName
from bridge_cli.lakes import SourceColumn
from bridge_cli.planning import plan_job
from bridge_cli.spark import SparkStager
from bridge_cli.spark.databricks import DatabricksLauncher, idempotency_token
from bridge_cli.spark.settings import spark_settings
from bridge_cli.spark.spec import ERROR_MARKER, RESULT_MARKER, StageFigures
from bridge_cli.targets import ApplyPlan, TargetColumn, TargetTable

RUN_ID = 4242
TASK_RUN_ID = 4243
RUN_PAGE = "https://x.cloud.databricks.com/?o=1#job/1/run/4242"
STAGE = "[bridge].[bridge_stage_0123456789abcdef]"
WHEEL = "/Volumes/main/tools/bridge_cli-0.1.0-py3-none-any.whl"
SECRETS = ("hunter22", "dapi-secret")
FIGURES = StageFigures(rows=3, nulls=(0, 1), ranges={0: (1, 3)}, seconds=12.5)

L = sdk_jobs.RunLifeCycleState
R = sdk_jobs.RunResultState


def run_state(life: sdk_jobs.RunLifeCycleState, result: sdk_jobs.RunResultState | None = None,
              message: str = "") -> sdk_jobs.Run:
    return sdk_jobs.Run(
        run_id=RUN_ID, run_page_url=RUN_PAGE,
        state=sdk_jobs.RunState(life_cycle_state=life, result_state=result, state_message=message),
        tasks=[sdk_jobs.RunTask(task_key="stage", run_id=TASK_RUN_ID, attempt_number=0,
                                python_wheel_task=sdk_jobs.PythonWheelTask(package_name="bridge_cli",
                                                                           entry_point="bridge-spark-stage"))],
    )


def logs(*lines: str) -> str:
    return "\n".join(["24/05/01 10:00:00 INFO SparkContext: Running Spark version 3.5.0", *lines,
                      "24/05/01 10:00:09 INFO SparkContext: Successfully stopped SparkContext"])


class RecordingJobs:
    """Records each `jobs` call with its arguments; answers `get_run` from a script of runs (or
    exceptions), the last one repeated, and `get_run_output` with the scripted output."""

    def __init__(self, runs: list[sdk_jobs.Run | Exception], output: sdk_jobs.RunOutput) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.runs = runs
        self.output = output
        self.gets = 0

    def _wait(self, response: Any) -> Wait[sdk_jobs.Run]:
        def blocks(**kwargs: Any) -> sdk_jobs.Run:
            raise AssertionError("the launcher waited on the SDK's Wait (it blocks)")

        return Wait(blocks, response=response, run_id=response.run_id)

    def submit(self, **kwargs: Any) -> Wait[sdk_jobs.Run]:
        self.calls.append(("submit", kwargs))
        return self._wait(sdk_jobs.SubmitRunResponse(run_id=RUN_ID))

    def run_now(self, job_id: int, **kwargs: Any) -> Wait[sdk_jobs.Run]:
        self.calls.append(("run_now", {"job_id": job_id, **kwargs}))
        return self._wait(sdk_jobs.RunNowResponse(run_id=RUN_ID))

    def get_run(self, run_id: int, **kwargs: Any) -> sdk_jobs.Run:
        self.calls.append(("get_run", {"run_id": run_id, **kwargs}))
        answer = self.runs[min(self.gets, len(self.runs) - 1)]
        self.gets += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get_run_output(self, run_id: int) -> sdk_jobs.RunOutput:
        self.calls.append(("get_run_output", {"run_id": run_id}))
        return self.output

    def cancel_run(self, run_id: int) -> Wait[sdk_jobs.Run]:
        self.calls.append(("cancel_run", {"run_id": run_id}))
        self.runs = [run_state(L.TERMINATED, R.CANCELED, "Run cancelled.")]
        self.gets = 0

        def blocks(**kwargs: Any) -> sdk_jobs.Run:
            raise AssertionError("cancel waited on the SDK's Wait (it blocks)")

        return Wait(blocks, run_id=run_id)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for called, args in self.calls if called == name]


class RecordingWorkspaceClient:
    """Stands in for databricks.sdk.WorkspaceClient: only `.jobs`, recording."""

    def __init__(self, runs: list[sdk_jobs.Run | Exception], output: sdk_jobs.RunOutput) -> None:
        self.jobs = RecordingJobs(runs, output)


def write_profile(tmp_path: Path, spark: str) -> Settings:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "profiles:\n"
        "  prod:\n"
        "    lake: {kind: databricks, server_hostname: x.cloud.databricks.com,"
        " http_path: /sql/1.0/warehouses/abc, token: dapi-secret}\n"
        "    target: {kind: sqlserver, host: sql.example.com, database: sales, user: bridge, password: hunter22}\n"
        f"    spark: {spark}\n",
        encoding="utf-8",
    )
    return load_settings(config=str(path), env={"BRIDGE_HOME": str(tmp_path / "home")})


CLUSTER = f"{{kind: databricks, cluster_id: 0101-abc, wheel: {WHEEL}, password_secret: bridge/sqlpw}}"
SERVERLESS = f"{{kind: databricks, serverless: true, wheel: {WHEEL}, password_secret: bridge/sqlpw}}"
JOB = "{kind: databricks, job_id: 77, password_secret: bridge/sqlpw}"


@dataclasses.dataclass
class Staging:
    settings: Settings
    client: RecordingWorkspaceClient
    job: Job
    plan: ApplyPlan
    columns: list[SourceColumn]

    def stage(self, on_wait: Callable[[], None] = lambda: None) -> StageFigures:
        config = spark_settings(self.settings)
        ticks = iter(range(0, 10_000, 1))
        launcher = DatabricksLauncher(config, client=self.client, sleep=lambda s: None,
                                      monotonic=lambda: float(next(ticks)))
        stager = SparkStager(self.settings, launcher=launcher, sleep=lambda s: None)
        return stager.stage(self.job, self.plan, self.columns, lake=None, stage=STAGE,  # type: ignore[arg-type]
                            on_wait=on_wait)

    def recorded(self) -> str:
        """Every recorded call's arguments, as text (to look for secrets)."""
        return repr(self.client.jobs.calls)


def staging(tmp_path: Path, runs: list[sdk_jobs.Run | Exception], output: sdk_jobs.RunOutput,
            spark: str = CLUSTER) -> Staging:
    settings = write_profile(tmp_path, spark)
    job = build_job(Event(event_id="evt-0001", operation="INSERT", source_table="main.sales.orders",
                          target_table="dbo.orders", primary_keys=["id"]))
    target = TargetTable(TableName(("dbo", "orders")),
                         (TargetColumn("id", "int", nullable=False), TargetColumn("note", "nvarchar(50)")))
    columns = [SourceColumn("id", "int"), SourceColumn("note", "string")]
    plan = plan_job(job, target, columns, max_delete_rows=10000)
    return Staging(settings, RecordingWorkspaceClient(runs, output), job, plan, columns)


def succeeded() -> list[sdk_jobs.Run | Exception]:
    return [run_state(L.PENDING), run_state(L.RUNNING), run_state(L.RUNNING),
            run_state(L.TERMINATED, R.SUCCESS, "")]


def answered() -> sdk_jobs.RunOutput:
    return sdk_jobs.RunOutput(logs=logs(RESULT_MARKER + FIGURES.to_json()))


@pytest.fixture(autouse=True)
def _no_real_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that forgot its recording client must not try to reach a workspace."""
    import databricks.sdk

    def refuse(**kwargs: Any) -> None:
        raise AssertionError("a real WorkspaceClient was built")

    monkeypatch.setattr(databricks.sdk, "WorkspaceClient", refuse)
    yield


def test_cluster_run_is_the_bridge_wheel_on_the_existing_cluster_and_its_figures_come_back(tmp_path: Path) -> None:
    s = staging(tmp_path, succeeded(), answered())
    assert s.stage() == FIGURES

    [submit] = s.client.jobs.named("submit")
    assert submit["run_name"] == "bridge stage evt-0001"
    assert submit["idempotency_token"] == idempotency_token("evt-0001", STAGE)
    assert len(submit["idempotency_token"]) <= 64
    [task] = submit["tasks"]
    assert task.task_key == "stage"
    assert task.existing_cluster_id == "0101-abc"
    assert task.new_cluster is None and task.environment_key is None
    assert task.python_wheel_task.package_name == "bridge_cli"
    assert task.python_wheel_task.entry_point == "bridge-spark-stage"
    assert task.libraries == [compute.Library(whl=WHEEL)]
    [parameter] = task.python_wheel_task.parameters
    spec = json.loads(parameter)
    assert spec["table"] == "`main`.`sales`.`orders`"
    assert spec["stage"] == STAGE
    assert spec["jdbc_url"] == "jdbc:sqlserver://sql.example.com:1433;databaseName=sales"
    assert spec["password_secret"] == "bridge/sqlpw"
    assert spec["master"] is None and spec["parquet"] is None
    assert [c["target"] for c in spec["columns"]] == ["id", "note"]
    # The output read is the wheel task's run, not the submitted (multi-task) run.
    assert s.client.jobs.named("get_run_output") == [{"run_id": TASK_RUN_ID}]
    assert s.client.jobs.named("cancel_run") == []
    for secret in SECRETS:
        assert secret not in s.recorded()


def test_a_submitted_run_of_the_same_stage_keeps_its_token_and_another_stage_gets_another() -> None:
    token = idempotency_token("evt-0001", STAGE)
    assert token == idempotency_token("evt-0001", STAGE)
    assert token != idempotency_token("evt-0001", "[bridge].[bridge_stage_fedcba9876543210]")
    assert token != idempotency_token("evt-0002", STAGE)
    assert len(idempotency_token("e" * 200, STAGE * 10)) <= 64


def test_serverless_run_installs_the_wheel_in_an_environment(tmp_path: Path) -> None:
    s = staging(tmp_path, succeeded(), answered(), spark=SERVERLESS)
    assert s.stage() == FIGURES

    [submit] = s.client.jobs.named("submit")
    [task] = submit["tasks"]
    assert task.existing_cluster_id is None and task.new_cluster is None and not task.libraries
    assert task.environment_key == "bridge"
    assert task.python_wheel_task.entry_point == "bridge-spark-stage"
    [environment] = submit["environments"]
    assert environment.environment_key == "bridge"
    assert environment.spec.dependencies == [WHEEL]
    assert environment.spec.environment_version
    assert json.loads(task.python_wheel_task.parameters[0])["stage"] == STAGE
    for secret in SECRETS:
        assert secret not in s.recorded()


def test_job_id_runs_the_defined_job_with_the_spec_as_its_python_parameter(tmp_path: Path) -> None:
    s = staging(tmp_path, succeeded(), answered(), spark=JOB)
    assert s.stage() == FIGURES

    assert s.client.jobs.named("submit") == []
    [run_now] = s.client.jobs.named("run_now")
    assert run_now["job_id"] == 77
    assert run_now["idempotency_token"] == idempotency_token("evt-0001", STAGE)
    [parameter] = run_now["python_params"]
    assert json.loads(parameter)["table"] == "`main`.`sales`.`orders`"
    for secret in SECRETS:
        assert secret not in s.recorded()


def failed(message: str = "Task stage failed with message: Workload failed.") -> list[sdk_jobs.Run | Exception]:
    return [run_state(L.RUNNING), run_state(L.TERMINATED, R.FAILED, message)]


def test_a_permanent_job_error_fails_the_event_with_the_run_page(tmp_path: Path) -> None:
    error = ERROR_MARKER + json.dumps({"message": "AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] main.sales.orders",
                                       "permanent": True})
    s = staging(tmp_path, failed(), sdk_jobs.RunOutput(logs=logs(error), error="Workload failed"))
    with pytest.raises(PermanentError) as raised:
        s.stage()
    assert "TABLE_OR_VIEW_NOT_FOUND" in str(raised.value)
    assert RUN_PAGE in str(raised.value)


def test_a_transient_job_error_is_retried_later(tmp_path: Path) -> None:
    error = ERROR_MARKER + json.dumps({"message": "SQLServerException: Connection reset", "permanent": False})
    s = staging(tmp_path, failed(), sdk_jobs.RunOutput(logs=logs(error)))
    with pytest.raises(TransientError) as raised:
        s.stage()
    assert "Connection reset" in str(raised.value) and RUN_PAGE in str(raised.value)


def test_a_run_that_failed_without_an_answer_names_its_state(tmp_path: Path) -> None:
    s = staging(tmp_path, failed("Library installation failed for library due to user error"),
                sdk_jobs.RunOutput(logs="", error="Library installation failed"))
    with pytest.raises(TransientError) as raised:
        s.stage()
    message = str(raised.value)
    assert "FAILED" in message
    assert "Library installation failed for library due to user error" in message
    assert RUN_PAGE in message
    assert "\n" not in message


def test_a_lost_lease_cancels_the_running_run_and_is_raised(tmp_path: Path) -> None:
    s = staging(tmp_path, [run_state(L.RUNNING)], answered())

    def lease_lost() -> None:
        raise TransientError("lease lost")

    with pytest.raises(TransientError, match="lease lost"):
        s.stage(on_wait=lease_lost)
    assert s.client.jobs.named("cancel_run") == [{"run_id": RUN_ID}]
    # After the cancel, the run was followed until it ended.
    assert s.client.jobs.calls[-1] == ("get_run", {"run_id": RUN_ID})
    assert s.client.jobs.named("get_run_output") == []


def test_a_cancel_that_does_not_end_the_run_gives_up_after_a_minute(tmp_path: Path) -> None:
    from bridge_cli.spark.databricks import DatabricksRun

    class IgnoredCancel(RecordingJobs):
        def cancel_run(self, run_id: int) -> Wait[sdk_jobs.Run]:
            self.calls.append(("cancel_run", {"run_id": run_id}))  # the run goes on regardless
            return Wait(lambda **kwargs: None, run_id=run_id)

    client = RecordingWorkspaceClient([run_state(L.RUNNING)], answered())
    client.jobs = IgnoredCancel([run_state(L.RUNNING)], answered())
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    DatabricksRun(client, RUN_ID, RUN_PAGE, sleep=sleep, monotonic=lambda: clock[0]).cancel()
    assert client.jobs.named("cancel_run") == [{"run_id": RUN_ID}]
    assert 55 <= sum(sleeps) <= 65


def test_a_poll_that_fails_once_does_not_end_the_run(tmp_path: Path) -> None:
    runs: list[sdk_jobs.Run | Exception] = [run_state(L.RUNNING), ConnectionError("Connection aborted."),
                                            run_state(L.RUNNING), run_state(L.TERMINATED, R.SUCCESS)]
    s = staging(tmp_path, runs, answered())
    assert s.stage() == FIGURES
    assert s.client.jobs.named("cancel_run") == []


def test_polls_failing_for_more_than_ten_minutes_give_the_run_up_as_transient(tmp_path: Path) -> None:
    from bridge_cli.spark.databricks import DatabricksRun

    client = RecordingWorkspaceClient([ConnectionError("Connection refused")], answered())
    clock = [0.0]
    run = DatabricksRun(client, RUN_ID, RUN_PAGE, sleep=lambda s: None, monotonic=lambda: clock[0])
    for _ in range(60):  # ten minutes of 10 s polls
        assert run.poll() is None
        clock[0] += 10
    clock[0] += 5
    failure = run.poll()
    assert failure is not None and not isinstance(failure, StageFigures)
    assert not failure.permanent and "Connection refused" in failure.message


def test_a_workspace_that_cannot_be_reached_is_transient_and_keeps_the_token_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import databricks.sdk
    import databricks.sdk.core

    def recording_config(**kwargs: Any) -> dict[str, Any]:  # no network: the SDK's Config would look the host up
        return kwargs

    def broken(config: dict[str, Any]) -> None:
        assert config == {"host": "https://x.cloud.databricks.com", "token": "dapi-secret", "profile": None,
                          "retry_timeout_seconds": 60, "http_timeout_seconds": 60}  # bounded, not the SDK's 300 s
        raise ValueError("default auth: cannot configure default credentials.\nConfig: token=dapi-secret")

    monkeypatch.setattr(databricks.sdk.core, "Config", recording_config)
    monkeypatch.setattr(databricks.sdk, "WorkspaceClient", broken)
    settings = write_profile(tmp_path, CLUSTER)
    s = staging(tmp_path, succeeded(), answered())
    stager = SparkStager(settings, launcher=DatabricksLauncher(spark_settings(settings)), sleep=lambda s: None)
    with pytest.raises(TransientError) as raised:
        stager.stage(s.job, s.plan, s.columns, lake=None, stage=STAGE, on_wait=lambda: None)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "cannot configure default credentials" in message
    assert "dapi-secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("spark", "expected"),
    [
        (f"{{kind: databricks, wheel: {WHEEL}, password_secret: bridge/sqlpw}}",
         "exactly one of cluster_id, serverless: true, or job_id (got none)"),
        (f"{{kind: databricks, cluster_id: 0101-abc, job_id: 7, wheel: {WHEEL}, password_secret: bridge/sqlpw}}",
         "got cluster_id, job_id"),
        (f"{{kind: databricks, cluster_id: 0101-abc, wheel: {WHEEL}}}", "password_secret"),
        ("{kind: databricks, cluster_id: 0101-abc, password_secret: bridge/sqlpw}", "wheel"),
    ],
)
def test_profile_mistakes_are_config_errors(tmp_path: Path, spark: str, expected: str) -> None:
    settings = write_profile(tmp_path, spark)
    with pytest.raises(ConfigError) as raised:
        spark_settings(settings)
    assert expected in str(raised.value)
    assert "profiles.prod.spark" in str(raised.value)
    assert "hunter22" not in str(raised.value)


class RecordingApiClient:
    """Below the SDK's own `JobsAPI`: records each HTTP request it would send and answers with the
    JSON the Jobs API 2.2 documents, so that the SDK's real methods check the launcher's arguments
    and build the request bodies."""

    class _Config:
        workspace_id = None

    def __init__(self, gets: list[dict[str, Any]], output: dict[str, Any]) -> None:
        self._cfg = self._Config()
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = []
        self.gets = gets
        self.output = output

    def do(self, method: str, path: str, query: dict[str, Any] | None = None, body: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        self.requests.append((method, path, query, body))
        if path.endswith("/runs/submit") or path.endswith("/jobs/run-now"):
            return {"run_id": RUN_ID}
        if path.endswith("/runs/get"):
            return self.gets.pop(0) if len(self.gets) > 1 else self.gets[0]
        if path.endswith("/runs/get-output"):
            return self.output
        raise AssertionError(f"unexpected request {method} {path}")


@pytest.mark.parametrize("where", ["cluster", "serverless", "job"])
def test_the_sdk_s_own_jobs_api_takes_the_launcher_s_calls_and_sends_this_request(tmp_path: Path, where: str) -> None:
    from databricks.sdk.mixins.jobs import JobsExt

    task = {"task_key": "stage", "run_id": TASK_RUN_ID, "attempt_number": 0,
            "python_wheel_task": {"package_name": "bridge_cli", "entry_point": "bridge-spark-stage"}}

    def get(life: str, result: str | None = None) -> dict[str, Any]:
        state = {"life_cycle_state": life, **({"result_state": result} if result else {})}
        return {"run_id": RUN_ID, "run_page_url": RUN_PAGE, "state": state, "tasks": [task]}

    api = RecordingApiClient([get("PENDING"), get("RUNNING"), get("TERMINATED", "SUCCESS")],
                             {"logs": logs(RESULT_MARKER + FIGURES.to_json()), "metadata": {"run_id": TASK_RUN_ID}})
    s = staging(tmp_path, [], answered(), spark={"cluster": CLUSTER, "serverless": SERVERLESS, "job": JOB}[where])
    s.client.jobs = JobsExt(api)  # type: ignore[assignment]
    assert s.stage() == FIGURES

    starts = [(path, body) for method, path, _, body in api.requests if method == "POST"]
    assert len(starts) == 1
    path, body = starts[0]
    assert body is not None
    assert body["idempotency_token"] == idempotency_token("evt-0001", STAGE)
    if where == "job":
        assert path == "/api/2.2/jobs/run-now"
        assert body["job_id"] == 77
        assert json.loads(body["python_params"][0])["stage"] == STAGE
    else:
        assert path == "/api/2.2/jobs/runs/submit"
        assert body["run_name"] == "bridge stage evt-0001"
        [sent] = body["tasks"]
        assert sent["python_wheel_task"]["package_name"] == "bridge_cli"
        assert sent["python_wheel_task"]["entry_point"] == "bridge-spark-stage"
        assert json.loads(sent["python_wheel_task"]["parameters"][0])["stage"] == STAGE
        if where == "cluster":
            assert sent["existing_cluster_id"] == "0101-abc"
            assert sent["libraries"] == [{"whl": WHEEL}]
        else:
            assert "existing_cluster_id" not in sent and "libraries" not in sent
            assert sent["environment_key"] == "bridge"
            [environment] = body["environments"]
            assert environment["environment_key"] == "bridge"
            assert environment["spec"]["dependencies"] == [WHEEL]
            assert environment["spec"]["environment_version"]
    outputs = [query for _, path, query, _ in api.requests if path == "/api/2.2/jobs/runs/get-output"]
    assert outputs == [{"run_id": TASK_RUN_ID}]
    for secret in SECRETS:
        assert secret not in repr(api.requests)
