"""`bridge doctor`: each thing a deployment needs, checked in order, with what to do when not ok.

A check whose prerequisite failed is skipped (no event-table checks when the lake is unreachable).
Each check is bounded by the lake's connect_timeout: one that has not answered by then fails,
saying so, and the command goes on (the adapters bound their own connections the same way).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge_cli.adapters import open_lake, open_target
from bridge_cli.api import list_workers
from bridge_cli.cancel import describe_pauses
from bridge_cli.clock import Clock, SystemClock
from bridge_cli.config import Settings, load_settings
from bridge_cli.errors import (
    BridgeError,
    ConnectionFailure,
    NotInitialized,
    StoreNotWritable,
    TransientError,
)
from bridge_cli.events import Status, split_counts
from bridge_cli.lakes import Lake, WorkerBeat
from bridge_cli.targets import Target

# warning: worth changing, not a failure (exit 0); a check that needs it still runs.
OK, WARNING, FAILED, SKIPPED = "ok", "warning", "failed", "skipped"
DEFAULT_BOUND = 30.0  # seconds, when the lake has no connect_timeout (the embedded lake)
STALE_LIMIT = 10000  # processing events looked at


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok, warning, failed or skipped
    seconds: float
    detail: str  # what was found
    fix: str = ""  # what to do when not ok


class CheckFailed(Exception):
    """A check's finding that is not ok, with what to do about it."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class CheckWarning(CheckFailed):
    """A finding that works but deserves a change: reported, and the command still exits 0."""


@dataclass
class _State:
    settings: Settings | None = None
    lake: Lake | None = None
    target: Target | None = None
    lake_error: BridgeError | None = None  # what reaching the lake said about the event table
    target_error: BridgeError | None = None  # the same for the ledger


def bound_of(settings: Settings | None) -> float:
    if settings is None:
        return DEFAULT_BOUND
    value = settings.lake.get("connect_timeout", DEFAULT_BOUND)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else DEFAULT_BOUND


def run_checks(
    config: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> list[CheckResult]:
    clock = clock or SystemClock()
    state = _State()
    checks: list[tuple[str, tuple[str, ...], Callable[[], str]]] = [
        ("config", (), lambda: _config(state, config, profile, env)),
        ("lake", ("config",), lambda: _lake(state)),
        ("event table", ("lake",), lambda: _event_table(state, clock)),
        ("driver", ("config",), lambda: _driver(state)),
        ("target", ("config",), lambda: _target(state)),
        ("ledger", ("target",), lambda: _ledger(state)),
        ("staging", ("ledger",), lambda: _staging(state)),
        ("allowed tables", ("config",), lambda: _allowed(state)),
        ("leftover stages", ("target",), lambda: _leftovers(state)),
        ("statuses", ("event table",), lambda: _statuses(state)),
        ("leases", ("event table",), lambda: _leases(state, clock)),
        ("workers", ("event table",), lambda: _workers(state, clock)),
        ("pauses", ("event table",), lambda: _pauses(state)),
        ("spark", ("config",), lambda: _spark(state)),
    ]
    results: dict[str, CheckResult] = {}
    for name, needs, check in checks:
        blocked = [n for n in needs if results[n].status not in (OK, WARNING)]
        if blocked:
            results[name] = CheckResult(name, SKIPPED, 0.0, f"skipped: the {blocked[0]} check did not pass")
            continue
        results[name] = _timed(name, check, bound_of(state.settings))
    return list(results.values())


def _timed(name: str, check: Callable[[], str], bound: float) -> CheckResult:
    """Run one check in a thread of its own and wait at most `bound` seconds for it."""
    outcome: list[CheckResult] = []
    start = time.monotonic()

    def run() -> None:
        try:
            detail = check()
            outcome.append(CheckResult(name, OK, time.monotonic() - start, detail))
        except _Skip as skip:
            outcome.append(CheckResult(name, SKIPPED, time.monotonic() - start, str(skip)))
        except CheckWarning as warned:
            outcome.append(CheckResult(name, WARNING, time.monotonic() - start, warned.detail, warned.fix))
        except CheckFailed as failed:
            outcome.append(CheckResult(name, FAILED, time.monotonic() - start, failed.detail, failed.fix))
        except BridgeError as exc:
            outcome.append(CheckResult(name, FAILED, time.monotonic() - start, str(exc), _fix_for(exc)))
        except Exception as exc:  # a driver's own error: reported as the check's finding
            detail = f"{type(exc).__name__}: {exc}"
            outcome.append(CheckResult(name, FAILED, time.monotonic() - start, detail, "see the error"))

    thread = threading.Thread(target=run, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(bound)
    if outcome:
        return outcome[0]
    return CheckResult(
        name, FAILED, time.monotonic() - start, f"no answer within {bound:g}s (the lake's connect_timeout)",
        "check the network path to the server and that it is running",
    )


class _Skip(Exception):
    """Nothing to check here (yet): skipped, which is not a failure."""


def _fix_for(exc: BridgeError) -> str:
    if "`bridge " in str(exc):  # the message names the command that fixes it already
        return ""
    if isinstance(exc, NotInitialized):
        return "run `bridge init` (or `bridge init --upgrade`)"
    if isinstance(exc, StoreNotWritable):
        return ("workers, submit and init write there: make it writable by this user, on a file "
                "system mounted read-write (status, wait and workers work meanwhile)")
    if isinstance(exc, ConnectionFailure | TransientError):
        return "check the host, port, network and credentials in the profile (`bridge config show`)"
    return "fix the cause named in the error"


def _config(state: _State, config: str | None, profile: str | None, env: Mapping[str, str] | None) -> str:
    try:
        state.settings = load_settings(config, profile, env)
    except BridgeError as exc:
        raise CheckFailed(str(exc), "fix bridge.yaml or the environment; `bridge config show` once it loads") from None
    where = state.settings.config_file or "the embedded default"
    return f"profile {state.settings.profile} from {where}"


def _lake(state: _State) -> str:
    assert state.settings is not None
    state.lake = open_lake(state.settings, patient=False)
    try:
        state.lake.count_by_status()
    except NotInitialized as exc:  # reached, and it said the event table is missing
        state.lake_error = exc
    except (ConnectionFailure, TransientError):
        raise
    except BridgeError as exc:  # answered, with an error about the table: the next check's finding
        state.lake_error = exc
    return f"{state.settings.lake.kind} lake answered"


def _event_table(state: _State, clock: Clock) -> str:
    lake = state.lake
    assert lake is not None
    if state.lake_error is not None:
        raise state.lake_error
    lake.list_events(None, 1)  # reads every column: a missing lifecycle column says so
    never = f"doctor-{uuid.uuid4().hex}"  # an id no event has: the conditional update matches nothing
    changed = lake.update_event_if(never, {"status": Status.PENDING.value}, {"updated_at": clock.now()})
    if changed:
        raise CheckFailed(f"a conditional update of event {never}, which does not exist, reported a change",
                          "the event table's row counts cannot be trusted: report this")
    return f"{lake.event_table_name} exists, has the lifecycle columns, and takes conditional updates"


def _driver(state: _State) -> str:
    """Which SQL Server driver `driver: auto` (or the profile) gives, and why; a fallback to the
    slower pymssql is a warning with what would make mssql-python load."""
    assert state.settings is not None
    target = state.settings.target
    if target.kind != "sqlserver":
        raise _Skip(f"the {target.kind} target has no driver to choose")
    from bridge_cli.targets.sqlserver.driver_choice import choose_driver

    choice = choose_driver(target.options, target.source)
    if choice.fix is not None:
        raise CheckWarning(f"pymssql, because auto fell back: {choice.reason}",
                           f"{choice.fix}; or name `driver: pymssql` in the profile to choose it knowingly")
    return choice.describe()


def _target(state: _State) -> str:
    assert state.settings is not None
    state.target = open_target(state.settings)
    try:
        state.target.check_ready()
    except NotInitialized as exc:  # reached; the ledger check says what is missing
        state.target_error = exc
    return f"{state.settings.target.kind} target answered"


def _ledger(state: _State) -> str:
    if state.target_error is not None:
        raise state.target_error
    return "the ledger exists"


def _staging(state: _State) -> str:
    assert state.target is not None
    state.target.check_staging()
    return "a staging table was created and dropped"


def _allowed(state: _State) -> str:
    """Both lists (the profile refused an empty one or a malformed pattern when it loaded); a list
    that allows any table is a warning: event rows are untrusted, and the worker's credentials
    reach further than the jobs that submit should."""
    from bridge_cli.policy import table_policy

    settings = state.settings
    assert settings is not None
    policy = table_policy(settings)
    lists = {"allowed_sources": policy.allowed_sources, "allowed_targets": policy.allowed_targets}
    detail = "; ".join(f"{key}: {', '.join(p.text for p in patterns)}" for key, patterns in lists.items())
    wide = [key for key, patterns in lists.items() if any(p.allows_any for p in patterns)]
    if not wide:
        return detail
    risks = {"allowed_sources": "every lake table the credentials can read may be copied",
             "allowed_targets": "every target table the credentials can write may be written"}
    examples = {"allowed_sources": "allowed_sources: ['main.sales_exports.*']",
                "allowed_targets": "allowed_targets: ['dbo.*']"}
    raise CheckWarning(
        f"{detail}: {'; '.join(risks[key] for key in wide)}",
        f"name the tables events may reach in the profile ({', '.join(examples[key] for key in wide)})",
    )


def _leftovers(state: _State) -> str:
    assert state.target is not None
    left = state.target.leftover_stages()
    if left:
        raise CheckFailed(f"{len(left)} staging table(s) left by stopped workers: {', '.join(left)}",
                          "run `bridge init`: it drops them")
    return "no leftover staging tables"


def _spark(state: _State) -> str:
    """The `spark:` section: valid, and what a run needs is here (local: pyspark and Java; on
    Databricks: the SDK signs in)."""
    import importlib.util
    import shutil

    from bridge_cli.spark.settings import spark_settings

    settings = state.settings
    assert settings is not None
    if settings.spark is None:
        raise _Skip("no spark: section: every event is staged by the worker")
    config = spark_settings(settings)
    if config.kind == "local":
        if importlib.util.find_spec("pyspark") is None:
            raise CheckFailed("pyspark is not installed", "pip install 'bridge-cli[spark]'")
        if shutil.which("java") is None:
            raise CheckFailed("Java is not on PATH: a local SparkSession needs a JVM", "install a JRE (17)")
        return f"local Spark, {config.partitions} JDBC writers ({config.jdbc.driver}); {config.jdbc.url}"
    from bridge_cli.spark.databricks import DatabricksLauncher

    user = DatabricksLauncher(config)._client().current_user.me()
    where = (f"cluster {config.cluster_id}" if config.cluster_id else
             f"job {config.job_id}" if config.job_id else "serverless compute")
    return f"Databricks runs on {where} as {getattr(user, 'user_name', None) or 'the configured identity'}"


def _statuses(state: _State) -> str:
    assert state.lake is not None
    known, unknown = split_counts(state.lake.count_by_status())
    if unknown:
        odd = ", ".join(f"{k!r}: {v}" for k, v in unknown.items())
        raise CheckFailed(f"events in statuses bridge does not know, never processed: {odd}",
                          "set their status to 'pending' to have them processed (or 'failed')")
    return ", ".join(f"{k}: {v}" for k, v in known.items()) or "no events"


def _leases(state: _State, clock: Clock) -> str:
    assert state.lake is not None
    now = clock.now()
    processing = state.lake.list_events(Status.PROCESSING.value, STALE_LIMIT)
    expired = [e for e in processing if e.lease_expires_at is None or e.lease_expires_at < now]
    if expired:
        shown = ", ".join(e.event_id for e in expired[:5]) + (", …" if len(expired) > 5 else "")
        raise CheckFailed(
            f"{len(expired)} processing event(s) with an expired lease (their worker stopped): {shown}",
            "a running worker reclaims them on its next poll; or run `bridge requeue --stale`",
        )
    return f"{len(processing)} processing event(s), none with an expired lease"


def _workers(state: _State, clock: Clock) -> str:
    """From the workers' heartbeats: before any worker has run (checking a configuration before
    deploying it) there is nothing to judge; after, at least one must be alive."""
    assert state.lake is not None
    workers = list_workers(state.lake, clock)
    if not workers:
        raise _Skip("no worker has run against this event table yet")
    alive = [w.beat.worker_id for w in workers if w.alive]
    gone = [_gone(w.beat) for w in workers if not w.alive]
    if not alive:
        raise CheckFailed(
            f"no worker alive; {len(gone)} gone (no heartbeat in time): {', '.join(gone[:5])}",
            "start `bridge worker` (see `bridge workers`); `bridge workers --forget-gone` removes "
            "the rows of workers that will not come back",
        )
    shown = f"{len(alive)} alive: {', '.join(alive[:5])}"
    return shown + (f"; {len(gone)} gone: {', '.join(gone[:5])}" if gone else "")


def _gone(beat: WorkerBeat) -> str:
    """A gone worker, with the event it held when last heard from: what an operator may requeue."""
    if beat.event_id is None:
        return beat.worker_id
    return f"{beat.worker_id} (held event {beat.event_id}, {beat.phase or 'claimed'})"


def _pauses(state: _State) -> str:
    """`bridge pause` is for a while (a maintenance window): say so while it lasts."""
    assert state.lake is not None
    try:
        pauses = state.lake.list_pauses()
    except NotInitialized as exc:
        raise CheckWarning(str(exc), "run `bridge init`: it adds the control table, leaving the events alone") from None
    if pauses:
        raise CheckWarning(f"paused, workers claim none of their events: {describe_pauses(pauses)}",
                           "`bridge resume` (or `bridge resume --target PATTERN`) when the window is over")
    return "nothing is paused"


def all_passed(results: list[CheckResult]) -> bool:
    """No check failed (a check skipped for want of a prerequisite follows a failed one)."""
    return not any(r.status == FAILED for r in results)
