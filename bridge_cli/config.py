"""bridge.yaml profiles plus environment variables -> typed Settings.

Lookup: --config / BRIDGE_CONFIG, else ./bridge.yaml, else the embedded default (DuckDB lake and
SQLite target under BRIDGE_HOME, default ./.bridge). `${VAR}` in any value reads the environment;
BRIDGE_<SETTING> overrides a profile setting (e.g. BRIDGE_MAX_DELETE_ROWS=500).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bridge_cli.errors import ConfigError, ValidationError
from bridge_cli.identifiers import parse_table_name

DEFAULT_EVENT_TABLE = "`000-sql-databricks-bridge`.`events`.bridge_events"
DEFAULT_LEDGER_TABLE = "bridge.applied_events"
LAKE_KINDS = ("duckdb", "databricks")
TARGET_KINDS = ("sqlite", "sqlserver")
SECRET_KEYS = frozenset({"password", "token", "client_secret", "access_token"})
# Every option each adapter reads (tests/test_units.py checks this against the adapters' code):
# any other key in a `lake:` or `target:` section is a typo, and an error.
ADAPTER_OPTIONS: dict[str, frozenset[str]] = {
    "duckdb": frozenset({"path", "event_table"}),
    "databricks": frozenset({
        "server_hostname", "http_path", "port", "token", "profile", "auth_timeout", "event_table",
        "catalog", "schema", "session_configuration", "timestamp_zone", "conflict_retries",
        "retry_seconds", "connect_timeout", "fetch_rows", "buffer_bytes",
    }),
    "sqlite": frozenset({"path", "ledger_table"}),
    "sqlserver": frozenset({
        "driver", "host", "port", "database", "user", "password", "authentication", "client_id",
        "client_secret", "access_token", "encrypt", "trust_server_certificate", "login_timeout",
        "timeout", "packet_size", "tds_version", "appname", "write_method", "rows_per_trip",
        "bulk_timeout", "batch_rows", "ledger_table",
    }),
}
SPARK_KINDS = ("local", "databricks")
# Every option of a `spark:` section, by kind (bridge_cli/spark/settings.py reads them).
_SPARK_COMMON = frozenset({
    "partitions", "batch_size", "jdbc_driver", "jdbc_url", "jdbc_properties", "poll_seconds",
})
SPARK_OPTIONS: dict[str, frozenset[str]] = {
    "local": _SPARK_COMMON | {"master", "jars", "spark_conf", "python", "work_dir"},
    "databricks": _SPARK_COMMON | {
        "cluster_id", "serverless", "job_id", "wheel", "password_secret", "host", "token", "profile",
        "run_name",
    },
}
# Table names an adapter section may hold, and how many parts each takes.
_TABLE_OPTIONS = {"event_table": (3, 3), "ledger_table": (1, 2)}
# ${NAME}, ${NAME:-default}, or $$ for a literal $; any other $ is a mistake worth saying so.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$")


@dataclass(frozen=True)
class AdapterConfig:
    """A `lake:` or `target:` section: its kind and the rest of its keys, for the adapter."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<embedded default>"  # the file, for messages

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def __repr__(self) -> str:  # secrets never reach a log line or a traceback
        shown = {k: ("***" if k in SECRET_KEYS else v) for k, v in self.options.items()}
        return f"AdapterConfig(kind={self.kind!r}, options={shown!r})"


@dataclass(frozen=True)
class Settings:
    profile: str
    home: Path
    lake: AdapterConfig
    target: AdapterConfig
    config_file: Path | None = None
    max_delete_rows: int = 10000
    max_attempts: int = 5
    poll_interval: float = 10.0
    # Polls that find nothing wait longer each time, doubling up to this (seconds).
    idle_poll_max: float = 300.0
    # A worker serves Prometheus /metrics and /healthz on this port; 0 = off.
    metrics_port: int = 0
    lease_seconds: float = 300.0
    retry_backoff: float = 10.0
    retry_backoff_max: float = 600.0
    batch_rows: int = 5000
    lock_timeout: float = 60.0
    allowed_targets: tuple[str, ...] = ("*",)
    # Lake tables an event may read (patterns as for allowed_targets; see bridge_cli/policy.py).
    allowed_sources: tuple[str, ...] = ("*",)
    # per_target: events for one target table apply one at a time, in claim order.
    ordering: str = "per_target"
    # INSERT / UPDATE events whose source has at least this many rows stage through the `spark:`
    # section's Spark job instead of this process; 0 = only when an event's metadata asks for it.
    spark_min_rows: int = 0
    spark: AdapterConfig | None = None  # the profile's `spark:` section (kind local | databricks)


ORDERINGS = ("per_target", "none")

# Settings a profile (or BRIDGE_<NAME>) may set, with their types.
_TUNABLE: dict[str, type] = {
    "max_delete_rows": int,
    "max_attempts": int,
    "poll_interval": float,
    "idle_poll_max": float,
    "metrics_port": int,
    "lease_seconds": float,
    "retry_backoff": float,
    "retry_backoff_max": float,
    "batch_rows": int,
    "lock_timeout": float,
    "allowed_targets": tuple,
    "allowed_sources": tuple,
    "ordering": str,
    "spark_min_rows": int,
}
_MINIMUM = {"max_attempts": 1, "batch_rows": 1, "max_delete_rows": 0}
_MAXIMUM = {"metrics_port": 65535}


def bridge_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("BRIDGE_HOME") or ".bridge")


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    chosen, origin = (explicit, "--config") if explicit else (env.get("BRIDGE_CONFIG"), "BRIDGE_CONFIG")
    if chosen:
        path = Path(chosen)
        if path.is_dir():
            raise ConfigError(f"{origin}: {path} is a directory; name the bridge.yaml file in it")
        if not path.is_file():
            raise ConfigError(f"{origin}: config file {path} does not exist")
        return path
    local = Path("bridge.yaml")
    return local if local.is_file() else None


def load_settings(
    config: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    home = bridge_home(env)
    path = find_config_file(config, env)
    if path is None:
        if profile or env.get("BRIDGE_PROFILE"):
            name = profile or env.get("BRIDGE_PROFILE")
            raise ConfigError(f"profile {name!r} asked for, but there is no bridge.yaml")
        raw: dict[str, Any] = {"lake": {"kind": "duckdb"}, "target": {"kind": "sqlite"}}
        return _build(raw, "local", home, None, env)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "unreadable"
        raise ConfigError(f"{path}{where}: not valid YAML: {reason}") from None
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), dict):
        raise ConfigError(f"{path}: expected a 'profiles:' mapping")
    profiles: dict[str, Any] = document["profiles"]
    name = profile or env.get("BRIDGE_PROFILE") or document.get("default_profile")
    if name is None:
        if len(profiles) != 1:
            raise ConfigError(f"{path}: several profiles and no default_profile; pass --profile")
        name = next(iter(profiles))
    name = str(name)
    if name not in profiles:
        known = ", ".join(sorted(map(str, profiles)))
        raise ConfigError(f"{path}: no profile {name!r} (profiles: {known})")
    raw = profiles[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: profiles.{name} must be a mapping")
    return _build(raw, name, home, path, env)


def _build(
    raw: dict[str, Any], name: str, home: Path, path: Path | None, env: Mapping[str, str]
) -> Settings:
    where = str(path) if path else "<embedded default>"
    prefix = f"profiles.{name}"
    expanded = _expand(raw, f"{prefix}", where, env)
    values: dict[str, Any] = {}
    for key, value in expanded.items():
        if key in ("lake", "target", "spark"):
            continue
        if key not in _TUNABLE:
            known = ", ".join(["lake", "target", "spark", *_TUNABLE])
            raise ConfigError(f"{where}: {prefix}.{key}: unknown setting (known: {known})")
        values[key] = _coerce(key, value, f"{prefix}.{key}", where)
    for key in _TUNABLE:
        override = env.get(f"BRIDGE_{key.upper()}")
        if override is not None and override != "":
            values[key] = _coerce(key, override, f"BRIDGE_{key.upper()}", "the environment")
    lake = _adapter(expanded.get("lake"), "lake", LAKE_KINDS, prefix, where)
    target = _adapter(expanded.get("target"), "target", TARGET_KINDS, prefix, where)
    spark = None
    if expanded.get("spark") is not None:
        spark = _adapter(expanded["spark"], "spark", SPARK_KINDS, prefix, where, SPARK_OPTIONS)
    settings_fields = {f.name for f in fields(Settings)}
    assert set(_TUNABLE) <= settings_fields
    return Settings(
        profile=name, home=home, lake=lake, target=target, config_file=path, spark=spark, **values
    )


def _adapter(
    section: Any, which: str, kinds: tuple[str, ...], prefix: str, where: str,
    registry: Mapping[str, frozenset[str]] = ADAPTER_OPTIONS,
) -> AdapterConfig:
    if section is None:
        raise ConfigError(f"{where}: {prefix}.{which}: missing (needs at least 'kind:')")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {prefix}.{which}: must be a mapping with 'kind:'")
    kind = section.get("kind")
    if kind not in kinds:
        raise ConfigError(
            f"{where}: {prefix}.{which}.kind: {kind!r} is not one of {', '.join(kinds)}"
        )
    options = {str(k): v for k, v in section.items() if k != "kind"}
    known = registry[str(kind)]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"{where}: {prefix}.{which}.{key}: unknown option for kind {kind}{hint}")
    for key, (low, high) in _TABLE_OPTIONS.items():
        if options.get(key) is not None:
            try:
                parse_table_name(str(options[key]), min_parts=low, max_parts=high, what=key)
            except ValidationError as exc:
                raise ConfigError(f"{where}: {prefix}.{which}.{key}: {exc}") from None
    return AdapterConfig(kind=str(kind), options=options, source=f"{where}: {prefix}.{which}")


def _coerce(key: str, value: Any, label: str, where: str) -> Any:
    wanted = _TUNABLE[key]
    if wanted is str:  # a choice
        if value not in ORDERINGS:
            raise ConfigError(f"{where}: {label}: expected one of {', '.join(ORDERINGS)}, got {value!r}")
        return value
    try:
        if wanted is tuple:
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, list):
                items = [str(v) for v in value]
            else:
                raise ValueError
            return tuple(items)
        if isinstance(value, bool):
            raise ValueError
        number = wanted(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number", tuple: "a list"}[wanted]
        raise ConfigError(f"{where}: {label}: expected {kind}, got {value!r}") from None
    if number < _MINIMUM.get(key, 0):
        raise ConfigError(f"{where}: {label}: must be at least {_MINIMUM.get(key, 0)}, got {value!r}")
    if key in _MAXIMUM and number > _MAXIMUM[key]:
        raise ConfigError(f"{where}: {label}: must be at most {_MAXIMUM[key]}, got {value!r}")
    return number


def _expand(value: Any, label: str, where: str, env: Mapping[str, str]) -> Any:
    """Replace ${VAR} from the environment, recursively; a missing variable is an error."""
    if isinstance(value, dict):
        return {str(k): _expand(v, f"{label}.{k}", where, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{label}[{i}]", where, env) for i, v in enumerate(value)]
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            text, var, default = match.group(0), match.group(1), match.group(2)
            if text == "$$":
                return "$"
            if var is None:  # $NAME, ${NAME, ${1}: never created as a literal folder name
                bad = value[match.start():].split()[0]
                raise ConfigError(
                    f"{where}: {label}: {bad!r} is not a variable reference: write ${{NAME}} or "
                    "${NAME:-default} (or $$ for a literal $)"
                )
            if var in env and env[var] != "":
                return env[var]
            if default is not None:
                return default
            if var in env:
                return env[var]
            raise ConfigError(f"{where}: {label}: environment variable {var} is not set")

        return _VAR.sub(replace, value)
    return value


def resolve_path(option: Any, default: Path, home: Path) -> Path:
    """An adapter's `path:`; relative paths are taken from the current directory."""
    return Path(str(option)) if option else default


# -- where each value came from (`bridge config show`) --------------------------------------------
@dataclass(frozen=True)
class SettingSource:
    """One resolved value and where it came from: `bridge.yaml:12`, `BRIDGE_MAX_ATTEMPTS
    (environment)`, `${DB_PASSWORD} in bridge.yaml:14`, or `default`. Secrets are masked."""

    key: str  # a profile setting (max_attempts) or an adapter option (target.password)
    value: Any  # None: not set, the adapter's own default applies
    source: str


def describe_settings(
    config: str | None = None, profile: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[Settings, list[SettingSource]]:
    """The profile load_settings resolves, value by value with its origin (the YAML re-read with
    line numbers)."""
    env = os.environ if env is None else env
    settings = load_settings(config, profile, env)
    path = settings.config_file
    lines = _profile_lines(path, settings.profile) if path is not None else {}

    def origin(key: str, default: str = "default") -> str:
        found = lines.get(key)
        if found is None:
            return default
        line, raw = found
        where = f"{path}:{line}"
        names = [m.group(1) for m in _VAR.finditer(raw) if m.group(1)] if isinstance(raw, str) else []
        if not names:
            return where
        # ${NAME:-…}: the variable was not set and the default written after :- applied
        shown = ["${" + (n if env.get(n, "") != "" else n + ":-…") + "}" for n in names]
        return f"{', '.join(shown)} in {where}"

    home_from = "BRIDGE_HOME (environment)" if env.get("BRIDGE_HOME") else "default"
    sources = [SettingSource("home", str(settings.home), home_from)]
    for key in _TUNABLE:
        variable = f"BRIDGE_{key.upper()}"
        value = getattr(settings, key)
        value = list(value) if isinstance(value, tuple) else value
        from_env = env.get(variable) not in (None, "")
        sources.append(SettingSource(key, value, f"{variable} (environment)" if from_env else origin(key)))
    sections = [("lake", settings.lake, ADAPTER_OPTIONS), ("target", settings.target, ADAPTER_OPTIONS)]
    if settings.spark is not None:
        sections.append(("spark", settings.spark, SPARK_OPTIONS))
    for which, adapter, registry in sections:
        sources.append(SettingSource(f"{which}.kind", adapter.kind, origin(f"{which}.kind")))
        for option in sorted(registry[adapter.kind], key=lambda o: (o not in adapter.options, o)):
            value = adapter.options.get(option)
            if value is not None and option in SECRET_KEYS:
                value = "***"
            sources.append(SettingSource(f"{which}.{option}", value, origin(f"{which}.{option}")))
    return settings, sources


def _profile_lines(path: Path, profile: str) -> dict[str, tuple[int, Any]]:
    """`key` or `lake.key` -> (1-based line, the raw scalar before ${VAR} expansion)."""
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    found: dict[str, tuple[int, Any]] = {}
    profiles = _child(root, "profiles")
    node = _child(profiles, profile) if profiles is not None else None
    if not isinstance(node, yaml.MappingNode):
        return found
    for key, value in node.value:
        name = str(key.value)
        if name in ("lake", "target", "spark") and isinstance(value, yaml.MappingNode):
            for inner_key, inner in value.value:
                raw = inner.value if isinstance(inner, yaml.ScalarNode) else None
                found[f"{name}.{inner_key.value}"] = (inner.start_mark.line + 1, raw)
        else:
            raw = value.value if isinstance(value, yaml.ScalarNode) else None
            found[name] = (value.start_mark.line + 1, raw)
    return found


def _child(node: Any, name: str) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for key, value in node.value if str(key.value) == name), None)
