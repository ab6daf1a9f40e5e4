"""`bridge process-once` and `bridge worker`: the commands that run events."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from bridge_cli import logcontext, reporting
from bridge_cli.adapters import open_lake, open_target
from bridge_cli.api import (
    current_pauses,
    events_ahead,
    get_event,
)
from bridge_cli.cancel import describe_pauses, pause_covering
from bridge_cli.cli import (
    EXIT_ABORTED,
    JsonFlag,
    _BridgeCommand,
    _state,
    app,
    in_range,
    reported_errors,
)
from bridge_cli.config import Settings
from bridge_cli.engine import Engine
from bridge_cli.entry import take_early_signals
from bridge_cli.errors import (
    RefusedError,
)
from bridge_cli.events import Status
from bridge_cli.notify import SystemdNotifier
from bridge_cli.observe import Observers, WorkerObserver
from bridge_cli.settings_spec import POLL_INTERVAL_FLOOR, SpecError, WorkerId


def _engine(
    settings: Settings, progress: reporting.CopyProgress | None, patient: bool = False
) -> Engine:
    target = open_target(settings)
    # The login and ledger check overlap the engine's pyarrow import.
    target.connect_ahead()
    return Engine(
        settings, open_lake(settings, patient=patient), target,
        on_progress=progress, on_phase=progress.phase if progress is not None else None,
    )


@app.command("process-once", cls=_BridgeCommand)
def process_once(
    ctx: typer.Context,
    max_events: Annotated[
        int | None, typer.Option(
            "--max-events",
            metavar="N",
            callback=in_range(1),
            help="Stop after this many events.",
        )
    ] = None,
    event_id: Annotated[str | None, typer.Option(
        "--event-id",
        metavar="ID",
        help="Process only this event.",
    )] = None,
    as_json: JsonFlag = False,
) -> None:
    """Process the pending events once and print a result table."""
    if event_id is not None and max_events is not None:
        raise typer.BadParameter("does nothing with --event-id (one event)", param_hint="--max-events")
    progress = reporting.CopyProgress()
    try:
        with reported_errors():
            engine = _engine(_state(ctx).settings(), progress)
            if event_id is not None:
                event = get_event(engine.lake, event_id)
                if event.status in (Status.COMPLETED.value, Status.FAILED.value):
                    reporting.info(f"event {event_id} is {event.status}: nothing to do")
            results = engine.process_once(max_events=max_events, event_id=event_id)
            if event_id is not None and not results:
                _explain_waiting(engine, event_id)
    finally:
        progress.close()
    reporting.print_results(results, as_json)


def _explain_waiting(engine: Engine, event_id: str) -> None:
    """An explicit event that a pause or per-target order holds back is refused, naming why."""
    event = get_event(engine.lake, event_id)
    pause = pause_covering(current_pauses(engine.lake) or [], event.target_table)
    if event.status == Status.PENDING.value and pause is not None:
        raise RefusedError(f"event {event_id} waits: its target {event.target_table} is paused, "
                           f"{describe_pauses([pause])}; `bridge resume` lifts it")
    if engine.settings.ordering != "per_target":
        return
    ahead = events_ahead(engine.lake, event)
    if event.status == Status.PENDING.value and ahead:
        first = ahead[0]
        raise RefusedError(
            f"event {event_id} waits for {len(ahead)} earlier event(s) on target {event.target_table}, "
            f"first {first.event_id} ({first.status}): events for one target apply one at a time, "
            "in claim order. Process those first, or set BRIDGE_ORDERING=none to apply this one now"
        )


def _checked_worker_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return WorkerId().coerce(value)
    except SpecError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command(cls=_BridgeCommand)
def worker(
    ctx: typer.Context,
    poll_interval: Annotated[
        float | None, typer.Option(
            "--poll-interval",
            metavar="SECONDS",
            callback=in_range(POLL_INTERVAL_FLOOR),
            help=f"Seconds between polls (at least {POLL_INTERVAL_FLOOR:g}).",
        )
    ] = None,
    max_events: Annotated[
        int | None, typer.Option(
            "--max-events",
            metavar="N",
            callback=in_range(1),
            help="Exit after this many events.",
        )
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(
            "--metrics-port",
            metavar="PORT",
            callback=in_range(0, 65535),
            help="Serve Prometheus /metrics and /healthz on this port (0: off; default: the "
                 "profile's metrics_port).",
        )
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(
            "--metrics-host",
            metavar="ADDRESS",
            help="Serve metrics on this address only, e.g. 127.0.0.1 (default: the profile's "
                 "metrics_host, else every interface).",
        )
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(
            "--worker-id",
            metavar="ID",
            callback=_checked_worker_id,
            help="This worker's id (default: the profile's worker_id, else hostname:pid:random); "
                 "a live worker with the same id makes this one refuse to start.",
        )
    ] = None,
) -> None:
    """Run the long-lived worker: SIGTERM or Ctrl-C finishes the event in hand, then exits."""
    state = _state(ctx)
    reporting.setup_logging(state.verbose, quiet=False, log_format=state.log_format,
                            log_level=state.log_level)
    log = logging.getLogger("bridge.worker")
    stop = threading.Event()
    interrupts = 0
    notifier = SystemdNotifier()  # Type=notify under systemd; nothing without NOTIFY_SOCKET

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if signum == signal.SIGINT and interrupts > 1:
            raise KeyboardInterrupt  # a second Ctrl-C: roll back the event in hand and go
        log.info("stopping on %s: finishing the event in hand (Ctrl-C again to abort it)",
                 signal.Signals(signum).name)
        if interrupts == 1:
            notifier.stopping()
        stop.set()

    # SIGHUP (a closed terminal, `systemctl reload`) stops as SIGTERM does.
    stopping = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, request_stop) for s in stopping}
    if take_early_signals():  # stopped while starting (docker stop right after docker run)
        log.info("stopped before it started: no event claimed")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return
    server = None
    try:
        with reported_errors():
            settings = state.settings()
            if worker_id is not None:
                settings = dataclasses.replace(settings, worker_id=worker_id)
            port = settings.metrics_port if metrics_port is None else metrics_port
            engine = _engine(settings, None, patient=True)
            logcontext.worker_id.set(engine.worker_id)
            driver = engine.target.describe_driver()
            log.info("worker started (profile %s, pid %d%s)", engine.settings.profile, os.getpid(),
                     f"; SQL Server driver {driver}" if driver else "")
            observers: list[WorkerObserver] = [notifier]
            if port:
                from bridge_cli.metrics import MetricsServer, WorkerMetrics  # only when asked for

                metrics = WorkerMetrics(in_flight=engine.in_flight)
                host = settings.metrics_host if metrics_host is None else metrics_host
                server = MetricsServer(metrics, port, host).start()
                observers.append(metrics)
            count = engine.run_worker(stop, poll_interval, max_events, observer=Observers(observers))
    except KeyboardInterrupt:
        log.warning("aborted: the event in hand was rolled back and released for a retry")
        raise typer.Exit(EXIT_ABORTED) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.close()
    log.info("worker stopped after %d event(s)", count)
