"""The long-lived worker: poll, claim, process, heartbeat, back off while idle; until stopped.

The engine (bridge_cli/engine.py) claims and processes one event; this loop runs it for hours. A
store error of any kind while claiming is logged and retried: the worker never dies of one. Only a
missing store (`bridge init`) and a worker id in use stop it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge_cli.errors import ConnectionFailure, NotInitialized, TransientError, WorkerIdInUse
from bridge_cli.events import split_counts
from bridge_cli.heartbeat import Heartbeats
from bridge_cli.observe import Observers, WorkerObserver

if TYPE_CHECKING:
    from bridge_cli.engine import Engine
    from bridge_cli.lakes import QueueStats
    from bridge_cli.outcomes import EventResult

log = logging.getLogger("bridge")

# While idle, the worker counts events by status this often, to warn about statuses it ignores.
_STATUS_CHECK_SECONDS = 600.0


def run_worker(
    engine: Engine,
    stop: threading.Event,
    poll_interval: float | None = None,
    max_events: int | None = None,
    on_result: Callable[[EventResult], None] | None = None,
    observer: WorkerObserver | None = None,
) -> int:
    """Claim and process until `stop` is set (after the event in hand) or max_events."""
    interval = engine.settings.poll_interval if poll_interval is None else poll_interval
    idle = IdleBackoff(interval, engine.settings.idle_poll_max)
    watch = Observers([observer] if observer is not None else [])

    beats = engine.beats = Heartbeats(
        engine.lake, engine.worker_id, engine.clock.now,
        progress_seconds=engine.settings.progress_seconds,
    )
    beats.after_busy_beat = engine.check_cancel  # a `bridge cancel` is looked for with each beat
    engine.stopping = stop
    try:
        return _loop(engine, stop, interval, idle, watch, beats, max_events, on_result)
    finally:
        engine.stopping = None
        engine.beats = None
        beats.forget()  # a clean stop (Ctrl-C too): the row goes


def _loop(
    engine: Engine, stop: threading.Event, interval: float, idle: IdleBackoff, watch: Observers,
    beats: Heartbeats, max_events: int | None, on_result: Callable[[EventResult], None] | None,
) -> int:
    def pause(seconds: float) -> None:
        watch.on_wait(seconds)
        engine.wait(stop, seconds)

    processed = 0
    # A worker started against stores that are missing says so and exits; a store that fails
    # for a moment (a transient or unknown error) is retried, at start as later.
    try:
        engine.target.check_ready()
        warn_about_unknown_statuses(engine.lake.count_by_status())
        beats.claim_id()
    except (NotInitialized, WorkerIdInUse, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # unreachable, transient or unknown (a native panic too):
        # retried in the loop below
        log.warning("stores not ready at start: %s: %s (retrying)", type(exc).__name__, exc)
    next_status_check = engine.clock.monotonic() + _STATUS_CHECK_SECONDS
    beats.start()  # one beat per change from now on (see Heartbeats)
    watch.on_start(interval)
    while not stop.is_set():
        try:
            engine.target.check_ready()
            if not beats.id_checked:  # the lake was not there at start
                beats.claim_id()
            event = engine.claim_next_event()
        except (ConnectionFailure, TransientError) as exc:
            log.warning("cannot claim events now: %s (retrying in %ss)", exc, interval)
            watch.on_poll(False, None)
            pause(interval)
            continue
        except (WorkerIdInUse, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # an error no adapter knows (a native panic too): logged and
            # retried, never fatal
            log.exception("unexpected error while claiming events (retrying in %ss)", interval)
            watch.on_poll(False, None)
            pause(interval)
            continue
        watch.on_poll(True, queue_stats_for_metrics(engine) if watch.wants_queue_stats else None)
        if event is None:
            wait = idle.next_wait()
            log.debug("no event due; next poll in %gs", wait)
            beats.idle(wait)  # one heartbeat per idle poll
            if engine.clock.monotonic() >= next_status_check:  # now and then, while idle
                next_status_check = engine.clock.monotonic() + _STATUS_CHECK_SECONDS
                try:
                    warn_about_unknown_statuses(engine.lake.count_by_status())
                except Exception as exc:
                    log.debug("counting events by status: %s", exc)
            pause(wait)
            continue
        idle.reset()  # work found: the next poll comes at the poll interval
        watch.on_event(event.event_id)
        beats.event(event.event_id)  # a beat at once: the claim
        try:
            result = engine.process_event(event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            # The result could not be recorded (e.g. the lake went away): the claim's lease
            # runs out and the event is claimed again; the ledger keeps it from applying twice.
            log.warning(
                "event %s: result not recorded: %s: %s", event.event_id, type(exc).__name__, exc
            )
            pause(interval)
            continue
        finally:
            beats.event(None)
        processed += 1
        watch.on_result(result)
        if on_result is not None:
            on_result(result)
        if max_events is not None and processed >= max_events:
            break
    watch.on_stop()
    return processed


def queue_stats_for_metrics(engine: Engine) -> QueueStats | None:
    """The queue, counted for those watching the worker; a failure is logged, not fatal."""
    try:
        stats = engine.lake.queue_stats()
        return dataclasses.replace(stats, paused=tuple(p.target for p in engine.current_pauses()))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a native panic too: the worker lives on
        log.warning("counting the queue for metrics: %s: %s", type(exc).__name__, exc)
        return None


class IdleBackoff:
    """Polls that find nothing wait longer each time: from the poll interval, doubling, up to
    idle_poll_max; work found snaps it back. An idle worker on a serverless warehouse then lets
    the warehouse stop instead of waking it every poll_interval."""

    def __init__(self, interval: float, idle_max: float) -> None:
        self.interval = interval
        self.idle_max = max(interval, idle_max)
        self._next = interval

    def next_wait(self) -> float:
        wait = self._next
        self._next = min(self.idle_max, self._next * 2)
        return wait

    def reset(self) -> None:
        self._next = self.interval


def warn_about_unknown_statuses(counts: dict[str, int]) -> None:
    """Events whose status is not one of the four (e.g. 'PENDING' written by a job's own SQL) are
    never claimed: say so in the worker's log rather than ignore them silently forever."""
    _, unknown = split_counts(counts)
    if unknown:
        listed = ", ".join(f"{k!r}: {v}" for k, v in sorted(unknown.items()))
        log.warning(
            "events with a status bridge does not know are never processed (%s): set their status "
            "to 'pending' to have them processed, or to 'failed'", listed,
        )
