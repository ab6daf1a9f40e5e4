"""The `bridge` console script. It catches SIGTERM and SIGHUP before the heavy imports: a stop that
arrives while the process starts (`docker stop` right after `docker run`, systemd stopping a unit
that is still starting) is then a clean stop of the worker, not a kill by the default action.

Imports nothing of bridge's own at module level, so the handlers are in place within milliseconds;
the image closes even that window by starting bridge with the two signals blocked.
"""

from __future__ import annotations

import signal
from types import FrameType

EARLY_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_pending: list[int] = []
_installed = False


def _remember(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def take_early_signals() -> list[int]:
    """The stops that came before the caller's own handlers; the caller now owns those signals."""
    global _installed
    _installed = False
    taken, _pending[:] = list(_pending), []
    return taken


def release_early_signals() -> None:
    """For commands other than the worker: the default action again, and a stop that came during
    start-up takes effect now, as it would have without us."""
    global _installed
    if not _installed:
        return
    _installed = False
    for sig in EARLY_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    for signum in take_early_signals():
        signal.raise_signal(signum)


def main() -> None:
    global _installed
    for sig in EARLY_SIGNALS:
        signal.signal(sig, _remember)
    _installed = True
    # A launcher may hold them blocked until now (the image: `env --block-signal`), so that one sent
    # while the interpreter itself starts waits for us instead of killing it; ours from here on.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, EARLY_SIGNALS)
    try:
        from bridge_cli.cli import main as cli_main

        cli_main()
    finally:
        release_early_signals()
