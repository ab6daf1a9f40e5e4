"""Every setting a profile may hold, with its type, its range and its default: the profile's own
settings (max_attempts, lease_seconds, ...) and each option of a `lake:`, `target:` or `spark:`
section, by kind. bridge_cli/config.py checks each value against its spec when the profile loads,
so a value that would break a worker is one ConfigError naming the file, profile and key, before
anything runs; `bridge config show` shows the defaults from here.

A value from `${VAR}` is text: a numeric option takes "1433" as 1433 and a flag "true" as True.
An empty value ("", e.g. a set but empty variable) leaves a number, flag, choice or mapping option
unset, so the adapter's default applies. Choices compare without regard to case and are stored in
their canonical spelling. The adapters check what only they can (a host and a database both given,
options a sign-in method does not use); they still read what they get defensively, since tests and
tools build AdapterConfig without a file.

Pure: imports neither the configuration nor an adapter (the adapters import config, which imports
this); tests/test_settings_types.py checks the choices here against the adapters' own lists.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge_cli.errors import ValidationError
from bridge_cli.identifiers import parse_table_name
from bridge_cli.patterns import parse_patterns
from bridge_cli.untrusted import printable

DEFAULT_EVENT_TABLE = "`000-sql-databricks-bridge`.`events`.bridge_events"
DEFAULT_LEDGER_TABLE = "bridge.applied_events"
# A worker polling more often than this only loads the event table (and `--poll-interval` has the
# same floor).
POLL_INTERVAL_FLOOR = 0.05
# A lease renews every third of itself: below a second a slow store (a DuckDB lock wait, a busy
# warehouse) loses leases of events that are running fine. Production wants minutes (default 300);
# the floor only rules out values that can never work (0 failed every event).
LEASE_SECONDS_FLOOR = 1.0
# SQL Server's SET LOCK_TIMEOUT takes milliseconds as a 32-bit int.
LOCK_TIMEOUT_MAX = 2_147_483.0
# Heartbeats while busy: more often than this would load the lake (on Databricks, a statement).
PROGRESS_SECONDS_FLOOR = 0.1
AT_LEAST_ONE_PATTERN = "must name at least one pattern ('*' allows any table)"

# A default may depend on the profile: called with (Settings, the section's options).
Default = Any


class SpecError(ValueError):
    """Why a value does not fit its spec; config.py adds the file, profile and key."""


@dataclass(frozen=True)
class Spec:
    default: Default = None
    secret: bool = False

    def coerce(self, value: Any) -> Any:
        """The value as the adapter reads it; None: unset (the default applies); SpecError when
        it does not fit."""
        raise NotImplementedError

    def default_for(self, settings: Any, options: Mapping[str, Any]) -> Any:
        return self.default(settings, options) if callable(self.default) else self.default

    def _got(self, value: Any) -> str:
        if self.secret:
            return f"a {type(value).__name__}"  # never the secret itself
        if isinstance(value, list | dict):
            return f"a {'list' if isinstance(value, list) else 'mapping'} {value!r}"
        return repr(value)


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


@dataclass(frozen=True)
class Integer(Spec):
    low: int | None = None
    high: int | None = None

    def coerce(self, value: Any) -> int | None:
        if isinstance(value, str) and not value.strip():
            return None
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())  # "1.5" and "1e3" are refused
            except ValueError:
                number = None
        if number is None:
            raise SpecError(f"expected an integer, got {self._got(value)}")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise SpecError(f"must be {_bounds(self.low, self.high)}, got {value!r}")
        return number


@dataclass(frozen=True)
class Number(Spec):
    low: float | None = None
    high: float | None = None

    def coerce(self, value: Any) -> float | None:
        if isinstance(value, str) and not value.strip():
            return None
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise SpecError(f"expected a number, got {self._got(value)}")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise SpecError(f"must be {_bounds(self.low, self.high)}, got {value!r}")
        return number


_FLAG_TEXT = {"true": True, "yes": True, "false": False, "no": False}


@dataclass(frozen=True)
class Flag(Spec):
    def coerce(self, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if not value.strip():
                return None
            if value.strip().lower() in _FLAG_TEXT:
                return _FLAG_TEXT[value.strip().lower()]
        raise SpecError(f"expected true or false (or yes, no), got {self._got(value)}")


@dataclass(frozen=True)
class Choice(Spec):
    values: tuple[str, ...] = ()
    # encrypt: YAML reads yes/no/true/false as booleans, and the driver takes them
    booleans: bool = False

    def coerce(self, value: Any) -> str | bool | None:
        if self.booleans and isinstance(value, bool):
            return value
        if isinstance(value, str):
            if not value.strip():
                return None
            for canonical in self.values:
                if value.strip().lower() == canonical.lower():
                    return canonical
        raise SpecError(f"{value!r} is not one of {', '.join(self.values)}")


@dataclass(frozen=True)
class Text(Spec):
    """A host, a path, a name, a secret. Numbers are taken as their text (`database: 2024`, `tds_version:
    7.4`), except for a secret: YAML has already changed `0123` into 83, so a secret must be quoted."""

    def coerce(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and not self.secret:
            return str(value)
        if self.secret and isinstance(value, int | float) and not isinstance(value, bool):
            raise SpecError("expected text, got a number: quote it, so that YAML keeps it as written")
        raise SpecError(f"expected text, got {self._got(value)}")


MAX_WORKER_ID_CHARS = 200


@dataclass(frozen=True)
class WorkerId(Spec):
    """A worker's id (a Kubernetes pod name, say): shown in tables and logs, so printable text."""

    def coerce(self, value: Any) -> str | None:
        text = Text().coerce(value).strip()
        if not text:
            return None  # unset: hostname:pid:random
        if len(text) > MAX_WORKER_ID_CHARS:
            raise SpecError(f"at most {MAX_WORKER_ID_CHARS} characters, got {len(text)}")
        if printable(text) != text:
            raise SpecError("must be printable text (no control or bidirectional-override characters)")
        return text


@dataclass(frozen=True)
class Table(Spec):
    min_parts: int = 1
    max_parts: int = 3

    def coerce(self, value: Any) -> str:
        if not isinstance(value, str):
            raise SpecError(f"expected a table name, got {self._got(value)}")
        try:
            parse_table_name(value, min_parts=self.min_parts, max_parts=self.max_parts, what="table name")
        except ValidationError as exc:
            raise SpecError(str(exc)) from None
        return value


@dataclass(frozen=True)
class MappingSpec(Spec):
    """session_configuration, spark_conf, jdbc_properties: names to single values."""

    def coerce(self, value: Any) -> dict[Any, Any] | None:
        if isinstance(value, str) and not value.strip():
            return None
        if not isinstance(value, dict):
            raise SpecError(f"must be a mapping, got {self._got(value)}")
        for key, item in value.items():
            if isinstance(item, list | dict) or item is None:
                raise SpecError(f"{key}: expected a single value, got {item!r}")
        return dict(value)


@dataclass(frozen=True)
class TextList(Spec):
    """jars: a list of text, or one text."""

    def coerce(self, value: Any) -> list[str] | None:
        if isinstance(value, str):
            return [value] if value.strip() else None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise SpecError(f"expected a list of text, got {self._got(value)}")


@dataclass(frozen=True)
class Patterns(Spec):
    """allowed_sources (catalog.schema.table, max_parts 3) or allowed_targets (schema.table, 2): a
    list, or comma-separated text (BRIDGE_ALLOWED_TARGETS=dbo.*,staging.*). Never empty: an empty
    list would refuse every event, and an empty variable must not mean "any table"."""

    max_parts: int = 2

    def coerce(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")]
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            items = [v.strip() for v in value]
        else:
            raise SpecError(f"expected a list of table patterns, got {self._got(value)}")
        items = [item for item in items if item]
        if not items:
            raise SpecError(AT_LEAST_ONE_PATTERN)
        try:
            parse_patterns(items, max_parts=self.max_parts)
        except ValidationError as exc:
            raise SpecError(str(exc)) from None
        return tuple(items)


def _profile_batch_rows(settings: Any, options: Mapping[str, Any]) -> Any:
    return settings.batch_rows


def _under_home(folder: str) -> Callable[[Any, Mapping[str, Any]], str]:
    return lambda settings, options: str(settings.home / folder)


# The profile's own settings (also BRIDGE_<NAME> in the environment).
PROFILE_SETTINGS: dict[str, Spec] = {
    "max_delete_rows": Integer(low=0),
    "replace_min_ratio": Number(low=0, high=1),
    "max_attempts": Integer(low=1),
    "poll_interval": Number(low=POLL_INTERVAL_FLOOR),
    "idle_poll_max": Number(low=POLL_INTERVAL_FLOOR),
    "metrics_port": Integer(low=0, high=65535),
    "metrics_host": Text(),
    "lease_seconds": Number(low=LEASE_SECONDS_FLOOR),
    "progress_seconds": Number(low=PROGRESS_SECONDS_FLOOR, high=3600),
    "worker_id": WorkerId(),
    "retry_backoff": Number(low=0),
    "retry_backoff_max": Number(low=0),
    "batch_rows": Integer(low=1),
    "lock_timeout": Number(low=0.1, high=LOCK_TIMEOUT_MAX),
    "allowed_targets": Patterns(max_parts=2),
    "allowed_sources": Patterns(max_parts=3),
    "ordering": Choice(values=("per_target", "none")),
    "spark_min_rows": Integer(low=0),
}
# (smaller, larger): when a profile sets both, the larger may not be below the smaller.
ORDERED_PAIRS = (("poll_interval", "idle_poll_max"), ("retry_backoff", "retry_backoff_max"))

# What the adapters accept (tests/test_settings_types.py compares these with the adapters' lists).
SQLSERVER_DRIVERS = ("auto", "pymssql", "mssql-python")
SQLSERVER_AUTHENTICATIONS = (
    "SqlPassword", "ActiveDirectoryServicePrincipal", "ActiveDirectoryDefault", "ActiveDirectoryMsi",
    "ActiveDirectoryPassword",
)
ENCRYPT_VALUES = ("strict", "mandatory", "yes", "true", "optional", "no", "false")
WRITE_METHODS = ("auto", "bulk", "values", "arrays")  # which a driver takes: the target checks
JDBC_DRIVERS = ("microsoft", "jtds")

_EVENT_TABLE = Table(default=DEFAULT_EVENT_TABLE, min_parts=3, max_parts=3)
_LEDGER_TABLE = Table(default=DEFAULT_LEDGER_TABLE, min_parts=1, max_parts=2)

def _pymssql_appname(settings: Any, options: Mapping[str, Any]) -> str | None:
    """pymssql sends APP=bridge; mssql-python always sends its own (MSSQL-Python)."""
    from bridge_cli.errors import ConfigError
    from bridge_cli.targets.sqlserver.driver_choice import choose_driver

    try:
        return "bridge" if choose_driver(options, "target").driver == "pymssql" else None
    except ConfigError:
        return None


# Every option each adapter reads, by kind: any other key in a `lake:` or `target:` section is a typo.
ADAPTER_SPECS: dict[str, dict[str, Spec]] = {
    "duckdb": {"path": Text(default=_under_home("lake")), "event_table": _EVENT_TABLE},
    "databricks": {
        "server_hostname": Text(), "http_path": Text(), "port": Integer(default=443, low=1, high=65535),
        "token": Text(secret=True), "profile": Text(), "auth_timeout": Integer(default=60, low=1),
        "event_table": _EVENT_TABLE, "catalog": Text(), "schema": Text(),
        "session_configuration": MappingSpec(), "timestamp_zone": Text(default="UTC"),
        "conflict_retries": Integer(default=8, low=0),
        "retry_seconds": Number(default=120.0, low=1, high=86400),
        "connect_timeout": Number(default=30.0, low=1, high=3600),
        "fetch_rows": Integer(default=_profile_batch_rows, low=1),
        "buffer_bytes": Integer(default=16 * 1024 * 1024, low=1),
    },
    "sqlite": {"path": Text(default=_under_home("target")), "ledger_table": _LEDGER_TABLE},
    "sqlserver": {
        "driver": Choice(default="auto", values=SQLSERVER_DRIVERS),
        "host": Text(), "port": Integer(default=1433, low=1, high=65535), "database": Text(), "user": Text(),
        "password": Text(secret=True),
        "authentication": Choice(values=SQLSERVER_AUTHENTICATIONS),
        "client_id": Text(), "client_secret": Text(secret=True), "tenant_id": Text(),
        "access_token": Text(secret=True),
        "encrypt": Choice(values=ENCRYPT_VALUES, booleans=True),
        "trust_server_certificate": Flag(),
        "login_timeout": Integer(default=30, low=1),
        "timeout": Integer(default=0, low=0),  # query timeout; 0: none
        "packet_size": Integer(low=512, high=32767),
        "tds_version": Text(),
        "appname": Text(default=_pymssql_appname),
        "write_method": Choice(default="auto", values=WRITE_METHODS),
        "rows_per_trip": Integer(default=1000, low=1),
        "bulk_timeout": Integer(default=0, low=0),  # 0: none
        "batch_rows": Integer(default=_profile_batch_rows, low=1),
        "ledger_table": _LEDGER_TABLE,
    },
}


def _spark_common(partitions: int, poll_seconds: int) -> dict[str, Spec]:
    return {
        "partitions": Integer(default=partitions, low=1),
        "batch_size": Integer(default=10000, low=1),
        "jdbc_driver": Choice(values=JDBC_DRIVERS),
        "jdbc_url": Text(),
        "jdbc_properties": MappingSpec(),
        "poll_seconds": Integer(default=poll_seconds, low=1),
    }


# Every option of a `spark:` section, by kind (bridge_cli/spark/settings.py reads them).
SPARK_SPECS: dict[str, dict[str, Spec]] = {
    "local": {
        **_spark_common(partitions=2, poll_seconds=2),
        "master": Text(default=lambda s, o: f"local[{o.get('partitions', 2)}]"),
        "jars": TextList(),
        "spark_conf": MappingSpec(),
        "python": Text(default=sys.executable),
        "work_dir": Text(default=_under_home("spark")),
    },
    "databricks": {
        **_spark_common(partitions=8, poll_seconds=10),
        "jdbc_driver": Choice(default="microsoft", values=JDBC_DRIVERS),
        "cluster_id": Text(), "serverless": Flag(default=False), "job_id": Integer(low=1),
        "wheel": Text(), "password_secret": Text(), "host": Text(), "token": Text(secret=True),
        "profile": Text(), "run_name": Text(default="bridge stage"),
    },
}
