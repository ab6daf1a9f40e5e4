"""Watching for `bridge cancel` of the event in hand, and reading the pauses a claim obeys.

A cancel request is a row of the control table keyed by the claim (event_id, claim_token), so a
request never touches a later claim of the same event. `CancelWatch.check()` is one lake read; it
is called from a thread that already talks to the lake while an event is in hand (the lease
renewal, and the heartbeat), and once before the target transaction starts. The worker's own
checkpoints ask `requested()`, which reads nothing, and `raise_if_requested()` stops the event with
EventCancelled: the target transaction rolls back, the stage is dropped, and the event fails with
"cancelled by USER@HOST at TIME", as a cancelled pending event does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from bridge_cli.errors import NotInitialized, PermanentError, ValidationError
from bridge_cli.identifiers import TableName, parse_target_table
from bridge_cli.lakes import CancelRequest, Lake, Pause
from bridge_cli.patterns import NamePattern, parse_pattern

log = logging.getLogger("bridge")

# A checkpoint reads the lake itself when no check has run for this long (until the heartbeat
# thread checks after each beat, lease renewals alone may be minutes apart).
CHECK_EVERY_SECONDS = 10.0


def cancel_message(by: str, at: datetime) -> str:
    """The error_message of a cancelled event, pending or in hand."""
    return f"cancelled by {by} at {at.isoformat(timespec='seconds')}Z"


class EventCancelled(PermanentError):
    """`bridge cancel` asked the worker to stop the event in hand: nothing was applied."""


class CancelWatch:
    """The cancel request for one claim: `check()` reads the lake (and remembers a request it
    finds); `requested()` and `raise_if_requested()` only look at what was remembered."""

    def __init__(self, lake: Lake, event_id: str, claim_token: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.lake = lake
        self.event_id = event_id
        self.claim_token = claim_token
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._request: CancelRequest | None = None
        self._checked_at = monotonic()
        self._missing_said = False
        self._failing = False

    def check(self) -> CancelRequest | None:
        """One read of the control table. A store error is logged, never raised: the caller is a
        thread that must outlive it (the next check may work)."""
        if self._request is not None:
            return self._request
        try:
            found = self.lake.cancel_request(self.event_id, self.claim_token)
        except NotInitialized:  # an install from before the control table: nobody can cancel
            if not self._missing_said:
                log.debug("no control table: cancel requests cannot be seen (run `bridge init`)")
                self._missing_said = True
            found = None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a native panic too; once at WARNING, then DEBUG (as a heartbeat)
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "looking for a cancel request failed (the event goes on): %s: %s",
                    type(exc).__name__, exc, extra={"event_id": self.event_id})
            self._failing = True
            found = None
        with self._lock:
            self._checked_at = self.monotonic()
            if found is not None and self._request is None:
                self._request = found
                log.warning("event %s: cancel requested by %s; stopping at the next checkpoint",
                            self.event_id, found.requested_by, extra={"event_id": self.event_id})
            return self._request

    def check_if_due(self, every: float = CHECK_EVERY_SECONDS) -> None:
        with self._lock:
            due = self.monotonic() - self._checked_at >= every
        if due:
            self.check()

    def requested(self) -> CancelRequest | None:
        with self._lock:
            return self._request

    def raise_if_requested(self) -> None:
        request = self.requested()
        if request is not None:
            raise EventCancelled(cancel_message(request.requested_by, request.requested_at))

    def forget(self) -> None:
        """The event ended: its request (if one was seen) is done with."""
        if self.requested() is None:
            return
        try:
            self.lake.forget_cancel_request(self.event_id, self.claim_token)
        except Exception as exc:  # a leftover request names a claim that never comes back: harmless
            log.debug("deleting the cancel request of %s: %s", self.event_id, exc)


def pause_pattern(text: str) -> NamePattern:
    """A pause's target pattern, as allowed_targets reads it (ValidationError when malformed)."""
    return parse_pattern(text, max_parts=2)


def pause_holds(pause: Pause, name: TableName | None) -> bool:
    """Whether the pause covers the table; None, a target name that does not parse (the event will
    fail anyway), is held only by a pause of everything. A pattern written by hand that does not
    parse holds nothing."""
    try:
        pattern = pause_pattern(pause.target)
    except ValidationError:
        return False
    return pattern.allows_any or (name is not None and pattern.matches(name))


def pause_covering(pauses: Sequence[Pause], target_table: str | None) -> Pause | None:
    """The first pause whose pattern matches the event's target table."""
    try:
        name: TableName | None = parse_target_table(target_table or "")
    except ValidationError:
        name = None
    return next((pause for pause in pauses if pause_holds(pause, name)), None)


def describe_pauses(pauses: Sequence[Pause]) -> str:
    """e.g. "dbo.* (by ana@vm since 2026-12-07T10:00:00Z: SQL Server maintenance)"."""
    shown = []
    for pause in pauses:
        why = f": {pause.reason}" if pause.reason else ""
        what = "every target (*)" if pause.target == "*" else pause.target
        shown.append(f"{what} (by {pause.paused_by} since "
                     f"{pause.paused_at.isoformat(timespec='seconds')}Z{why})")
    return ", ".join(shown)
