"""The exceptions the engine raises; the CLI turns each into one message and an exit code."""

from __future__ import annotations

import errno
import os


class BridgeError(Exception):
    """Base of every error bridge reports to a user."""


class ConfigError(BridgeError):
    """bridge.yaml, a profile or an environment override is wrong or missing."""


class WorkerIdInUse(ConfigError):
    """A live worker already runs under the id this one was given: two workers cannot share one."""


class ConnectionFailure(BridgeError):
    """The lake or the target cannot be reached (or its store is not set up)."""


class NotInitialized(ConnectionFailure):
    """A store bridge needs (the event table, the target's ledger) does not exist or is out of
    date: `bridge init` (or `bridge init --upgrade`) makes it; waiting will not."""


class StoreNotWritable(ConnectionFailure):
    """A store's file cannot be written here: a read-only file system, no permission, a full disk.
    Nothing was written; commands that only read still work (exit code 5, as for any store that
    cannot be used now; a worker logs it and polls again)."""


# What an OSError on a store's file says, in the words of `ls` and `touch`.
_WHY = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def not_writable(what: str, path: os.PathLike[str] | str, exc: OSError, detail: str = "") -> StoreNotWritable:
    """One line naming the store's file and why it cannot be written (`detail`: which step)."""
    why = _WHY.get(exc.errno or 0) or exc.strerror or str(exc)
    fix = _ownership_fix(path) if exc.errno in (errno.EACCES, errno.EPERM) else ""
    return StoreNotWritable(f"cannot write {what} {path}: {why}{f' ({detail})' if detail else ''}{fix}")


def _ownership_fix(path: os.PathLike[str] | str) -> str:
    """Who we are and who owns the nearest existing folder: a root-owned bind mount as a non-root
    user's data folder is the usual cause, and chown the usual fix."""
    if not hasattr(os, "getuid"):
        return ""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        owner = os.stat(folder).st_uid
    except OSError:
        return ""
    uid, gid = os.getuid(), os.getgid()
    return (f"; bridge runs as uid {uid} and {folder} belongs to uid {owner}: "
            f"chown -R {uid}:{gid} {folder}, or set BRIDGE_HOME to a folder that user can write")


class ValidationError(BridgeError):
    """An event or a request is malformed; nothing was written."""


class EventNotFound(BridgeError):
    """No event has the given id."""


class RefusedError(BridgeError):
    """A request that is well formed but not allowed (e.g. requeue a completed event)."""


class PermanentError(BridgeError):
    """Processing an event failed in a way a retry cannot fix."""


class TransientError(BridgeError):
    """Processing an event failed in a way a later retry may fix (lock, deadlock, lost link)."""


class AlreadyApplied(BridgeError):
    """The target's ledger already holds this event: it was applied once and never will twice."""


class WorkerStopping(BridgeError):
    """The worker was asked to stop while a long staging run (Spark) was under way: the run was
    cancelled, nothing was applied, and the event goes back to the queue as it was."""
