"""Single key presses from a terminal, for `bridge top`: stdin in cbreak mode (no line buffering or
echo; Ctrl-C still interrupts), read with a timeout. Not a terminal: no keys, only the wait."""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Keys:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd  # None: stdin is not a terminal

    def wait(self, seconds: float) -> str | None:
        """The next key pressed within `seconds`, or None when none was."""
        if self.fd is None:
            time.sleep(seconds)
            return None
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return None
        data = os.read(self.fd, 32)
        return data.decode(errors="replace")[:1] if data else None


@contextmanager
def keys_from_stdin() -> Iterator[Keys]:
    """Keys from stdin while the block runs; the terminal's settings are restored after."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        fd = -1
    if fd < 0 or not os.isatty(fd):
        yield Keys(None)
        return
    import termios
    import tty

    saved: Any = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield Keys(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
