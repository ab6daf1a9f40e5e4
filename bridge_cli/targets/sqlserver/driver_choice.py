"""Which SQL Server driver a profile gets: `driver: auto` (the default) takes mssql-python where it
loads, pymssql otherwise; an explicit driver is taken as named.

mssql-python is about 4x pymssql's rows/s on the same server (README, "SQL Server: drivers and
write methods"), but its ODBC driver needs system libraries (on Debian: libltdl7, libkrb5-3,
libgssapi-krb5-2) that a slim image or an old host may lack, and it has no wheel for some platforms.
Whether it loads is asked once per process: importing it, then loading the ODBC library it would
load, which is where a missing library shows (its own error at connect names none).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge_cli.errors import ConfigError

AUTO = "auto"
PYMSSQL = "pymssql"
MSSQL_PYTHON = "mssql-python"
DRIVER_VALUES = (AUTO, PYMSSQL, MSSQL_PYTHON)

INSTALL_HINT = "pip install mssql-python (bridge-cli installs it on platforms it has wheels for)"
# The system libraries the ODBC driver links to that a slim image may lack.
_SYSTEM_LIBRARIES = ("libltdl", "libkrb5", "libgssapi_krb5", "libk5crypto", "libcom_err", "libkrb5support")
APT_LINE = "apt-get install libltdl7 libkrb5-3 libgssapi-krb5-2"
DNF_LINE = "dnf install libtool-ltdl krb5-libs"


@dataclass(frozen=True)
class Unavailable:
    """Why mssql-python cannot be used in this process, and what would fix it."""

    problem: str
    fix: str


@dataclass(frozen=True)
class DriverChoice:
    driver: str      # pymssql | mssql-python: what connects
    requested: str   # auto | pymssql | mssql-python: what the profile said (auto when it said nothing)
    reason: str      # why this driver, in words for a log line, `doctor` and `config show`
    fix: str | None = None  # when `auto` fell back: what makes mssql-python usable here

    @property
    def fell_back(self) -> bool:
        """`auto` wanted mssql-python and could not have it here."""
        return self.fix is not None

    def describe(self) -> str:
        if self.requested != AUTO:
            return f"{self.driver} (named in the profile)"
        if self.fix is not None:
            return f"{self.driver} (auto fell back: {self.reason}; {self.fix})"
        return f"{self.driver} (auto: {self.reason})"


@functools.cache
def mssql_python_unavailable() -> Unavailable | None:
    """Why mssql-python cannot be used in this process, or None when it imports and its ODBC driver
    loads. Asked once per process: a library installed later is seen by the next process."""
    try:
        import mssql_python
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and missing.split(".")[0] == "mssql_python":
            return Unavailable("mssql-python is not installed", INSTALL_HINT)
        return Unavailable(f"mssql-python does not import: {_one_line(exc)}", INSTALL_HINT)
    except Exception as exc:  # its own import-time checks (platform, architecture)
        return Unavailable(f"mssql-python does not import: {type(exc).__name__}: {_one_line(exc)}", INSTALL_HINT)
    try:
        info = mssql_python.get_native_provider_info()
        path = str(info.get("driver_path") or "")
    except Exception as exc:
        return Unavailable(f"mssql-python cannot find its ODBC driver: {type(exc).__name__}: {_one_line(exc)}",
                           "reinstall mssql-python")
    if not path or not os.path.exists(path):
        return Unavailable(f"mssql-python's ODBC driver is missing ({path or 'no path'})", "reinstall mssql-python")
    return _load_problem(path)


def _load_problem(path: str) -> Unavailable | None:
    """None when the shared library at `path` loads (and with it every library it links to)."""
    import ctypes

    try:
        ctypes.CDLL(path)  # the loader resolves its dependencies now; mssql-python's own load reuses it
    except OSError as exc:
        message = " ".join(str(exc).replace(path + ": ", "").split())
        return Unavailable(f"mssql-python's ODBC driver does not load: {message}", _fix_for(message))
    return None


def _fix_for(message: str) -> str:
    if sys.platform.startswith("linux") and any(name + ".so" in message for name in _SYSTEM_LIBRARIES):
        return f"{APT_LINE} (Debian, Ubuntu) or {DNF_LINE} (RHEL, Fedora)"
    return "reinstall mssql-python, and see https://github.com/microsoft/mssql-python#installation"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# -- which options tie a profile to one driver ----------------------------------------------------
def _set(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key)
    return value is not None and str(value).strip() != ""


def _lowered(options: Mapping[str, Any], key: str) -> str:
    value = options.get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower() if value is not None else ""


def only_mssql_python(options: Mapping[str, Any]) -> list[str]:
    """The options this profile sets that only mssql-python can honour."""
    found = [key for key in ("access_token", "client_id", "client_secret", "tenant_id", "packet_size")
             if _set(options, key)]
    authentication = _lowered(options, "authentication")
    if authentication and authentication != "sqlpassword":
        found.append(f"authentication: {options.get('authentication')}")
    if _lowered(options, "encrypt") == "strict":
        found.append("encrypt: strict")
    if _lowered(options, "trust_server_certificate") in ("false", "no"):
        found.append("trust_server_certificate: false")
    if _lowered(options, "write_method") == "arrays":
        found.append("write_method: arrays")
    return found


def only_pymssql(options: Mapping[str, Any]) -> list[str]:
    """The options this profile sets that only pymssql takes."""
    found = [key for key in ("appname", "tds_version", "rows_per_trip") if _set(options, key)]
    if _lowered(options, "write_method") == "values":
        found.append("write_method: values")
    return found


def requested_driver(options: Mapping[str, Any], source: str) -> str:
    value = options.get("driver")
    requested = AUTO if value is None or str(value).strip() == "" else str(value).strip().lower()
    if requested not in DRIVER_VALUES:
        raise ConfigError(f"{source}.driver: {value!r} is not one of {', '.join(DRIVER_VALUES)}")
    return requested


def choose_driver(options: Mapping[str, Any], source: str) -> DriverChoice:
    """The driver this profile's target connects with, and why. An explicit mssql-python that cannot
    load here, or options only mssql-python takes under `auto`, raise a ConfigError that names what
    is missing."""
    requested = requested_driver(options, source)
    if requested == PYMSSQL:
        return DriverChoice(PYMSSQL, requested, "named in the profile")
    if requested == MSSQL_PYTHON:
        unavailable = mssql_python_unavailable()
        if unavailable is not None:
            raise ConfigError(f"{source}.driver: mssql-python cannot be used here: {unavailable.problem}: "
                              f"{unavailable.fix}")
        return DriverChoice(MSSQL_PYTHON, requested, "named in the profile")
    needs_fast, needs_pymssql = only_mssql_python(options), only_pymssql(options)
    if needs_fast and needs_pymssql:
        raise ConfigError(
            f"{source}: {', '.join(needs_fast)} only mssql-python takes, and {', '.join(needs_pymssql)} only "
            "pymssql: name the driver you want (`driver: mssql-python` or `driver: pymssql`) and remove the others"
        )
    if needs_pymssql:
        return DriverChoice(PYMSSQL, AUTO, f"the profile sets {', '.join(needs_pymssql)}, which only pymssql takes")
    unavailable = mssql_python_unavailable()
    if needs_fast:
        if unavailable is not None:
            raise ConfigError(f"{source}: {', '.join(needs_fast)} needs mssql-python, which cannot be used here: "
                              f"{unavailable.problem}: {unavailable.fix}")
        return DriverChoice(MSSQL_PYTHON, AUTO, f"the profile sets {', '.join(needs_fast)}, which needs it")
    if unavailable is not None:
        return DriverChoice(PYMSSQL, AUTO, unavailable.problem, fix=unavailable.fix)
    return DriverChoice(MSSQL_PYTHON, AUTO, "mssql-python and its ODBC driver load here")
