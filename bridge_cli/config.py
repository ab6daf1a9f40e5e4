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

from bridge_cli.errors import ConfigError
from bridge_cli.settings_spec import (
    ADAPTER_SPECS,
    ORDERED_PAIRS,
    PROFILE_SETTINGS,
    SPARK_SPECS,
    Spec,
    SpecError,
)
from bridge_cli.settings_spec import DEFAULT_EVENT_TABLE as DEFAULT_EVENT_TABLE  # the adapters read
from bridge_cli.settings_spec import DEFAULT_LEDGER_TABLE as DEFAULT_LEDGER_TABLE  # them from here

LAKE_KINDS = ("duckdb", "databricks")
TARGET_KINDS = ("sqlite", "sqlserver")
SECRET_KEYS = frozenset({"password", "token", "client_secret", "access_token"})
# Every option each adapter reads (tests/test_config_errors.py checks this against the adapters'
# code): any other key in a `lake:` or `target:` section is a typo, and an error. Each option's type,
# range and default: bridge_cli/settings_spec.py.
ADAPTER_OPTIONS: dict[str, frozenset[str]] = {kind: frozenset(specs) for kind, specs in ADAPTER_SPECS.items()}
SPARK_KINDS = ("local", "databricks")
# Every option of a `spark:` section, by kind (bridge_cli/spark/settings.py reads them).
SPARK_OPTIONS: dict[str, frozenset[str]] = {kind: frozenset(specs) for kind, specs in SPARK_SPECS.items()}
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
    # A REPLACE that would bring fewer than this share of the rows it deletes fails (its shrink
    # guard; metadata {"allow_shrink": true} lifts it). max_delete_rows does not apply to REPLACE.
    replace_min_ratio: float = 0.5
    max_attempts: int = 5
    poll_interval: float = 10.0
    # Polls that find nothing wait longer each time, doubling up to this (seconds).
    idle_poll_max: float = 300.0
    # A worker serves Prometheus /metrics and /healthz on this port; 0 = off.
    metrics_port: int = 0
    # ... on this address ("" or 0.0.0.0: every IPv4 interface, as Prometheus exporters do; :: for IPv6).
    metrics_host: str = ""
    lease_seconds: float = 300.0
    # A busy worker writes its heartbeat (rows so far) this often; it counts as gone after 3 missed.
    progress_seconds: float = 15.0
    # The worker's id in the workers table and on its events; None: hostname:pid:random.
    worker_id: str | None = None
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


# Settings a profile (or BRIDGE_<NAME>) may set; their types and ranges are in settings_spec.
_TUNABLE: dict[str, Spec] = PROFILE_SETTINGS
# An empty BRIDGE_<NAME> is taken as unset, except for these: an empty list must never widen to
# the default "*" (any table).
_NEVER_EMPTY = frozenset({"allowed_targets", "allowed_sources"})


def bridge_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("BRIDGE_HOME") or ".bridge")


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    chosen, origin = (explicit, "--config") if explicit else (env.get("BRIDGE_CONFIG"), "BRIDGE_CONFIG")
    if chosen:
        path = Path(chosen)
        try:
            if path.is_dir():
                raise ConfigError(f"{origin}: {path} is a directory; name the bridge.yaml file in it")
            if not path.is_file():
                raise ConfigError(f"{origin}: config file {path} does not exist")
        except PermissionError as exc:  # a folder on the way that this user may not enter
            raise _unreadable(path, exc, origin) from None
        return path
    local = Path("bridge.yaml")
    return local if local.is_file() else None


def _unreadable(path: Path, exc: OSError, origin: str = "") -> ConfigError:
    """One line with the fix: a config mounted or copied with an owner and mode this user lacks."""
    ids = f"uid {os.getuid()}, gid {os.getgid()}" if hasattr(os, "getuid") else "this user"
    return ConfigError(
        f"{origin + ': ' if origin else ''}cannot read config file {path}: {exc.strerror or exc} "
        f"(bridge runs as {ids}): make it readable to that user, e.g. chmod a+r {path} "
        "(and a+x on its folders), or give it that owner"
    )


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
    except PermissionError as exc:
        raise _unreadable(path, exc) from None
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
    labels: dict[str, tuple[str, str]] = {}  # setting -> (label, where), for messages
    for key, value in expanded.items():
        if key in ("lake", "target", "spark"):
            continue
        if key not in _TUNABLE:
            known = ", ".join(["lake", "target", "spark", *_TUNABLE])
            raise ConfigError(f"{where}: {prefix}.{key}: unknown setting (known: {known})")
        labels[key] = (f"{prefix}.{key}", where)
        values[key] = _coerce(_TUNABLE[key], value, *labels[key])
    for key in _TUNABLE:
        variable = f"BRIDGE_{key.upper()}"
        override = env.get(variable)
        if override is not None and (override != "" or key in _NEVER_EMPTY):
            labels[key] = (variable, "the environment")
            values[key] = _coerce(_TUNABLE[key], override, *labels[key])
    values = {key: value for key, value in values.items() if value is not None}
    for smaller, larger in ORDERED_PAIRS:  # only when both are set: a default never stands in the way
        if smaller in values and larger in values and values[larger] < values[smaller]:
            label, at = labels[larger]
            raise ConfigError(
                f"{at}: {label}: must be at least {smaller} ({values[smaller]:g}), got {values[larger]:g}"
            )
    lake = _adapter(expanded.get("lake"), "lake", LAKE_KINDS, prefix, where)
    target = _adapter(expanded.get("target"), "target", TARGET_KINDS, prefix, where)
    spark = None
    if expanded.get("spark") is not None:
        spark = _adapter(expanded["spark"], "spark", SPARK_KINDS, prefix, where, SPARK_SPECS)
    settings_fields = {f.name for f in fields(Settings)}
    assert set(_TUNABLE) <= settings_fields
    return Settings(
        profile=name, home=home, lake=lake, target=target, config_file=path, spark=spark, **values
    )


def _adapter(
    section: Any, which: str, kinds: tuple[str, ...], prefix: str, where: str,
    registry: Mapping[str, Mapping[str, Spec]] = ADAPTER_SPECS,
) -> AdapterConfig:
    if section is None:
        raise ConfigError(f"{where}: {prefix}.{which}: missing (needs at least 'kind:')")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {prefix}.{which}: must be a mapping with 'kind:'")
    given = section.get("kind")
    kind = next((k for k in kinds if isinstance(given, str) and given.strip().lower() == k), None)
    if kind is None:
        raise ConfigError(
            f"{where}: {prefix}.{which}.kind: {given!r} is not one of {', '.join(kinds)}"
        )
    specs = registry[kind]
    options: dict[str, Any] = {}
    for key, value in section.items():
        key = str(key)
        if key == "kind":
            continue
        if key not in specs:
            close = difflib.get_close_matches(key, sorted(specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(specs))})"
            raise ConfigError(f"{where}: {prefix}.{which}.{key}: unknown option for kind {kind}{hint}")
        checked = None if value is None else _coerce(specs[key], value, f"{prefix}.{which}.{key}", where)
        if checked is not None:  # unset (null, or "" for a number): the adapter's default applies
            options[key] = checked
    return AdapterConfig(kind=kind, options=options, source=f"{where}: {prefix}.{which}")


def _coerce(spec: Spec, value: Any, label: str, where: str) -> Any:
    try:
        return spec.coerce(value)
    except SpecError as exc:
        raise ConfigError(f"{where}: {label}: {exc}") from None


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
    sections = [("lake", settings.lake, ADAPTER_SPECS), ("target", settings.target, ADAPTER_SPECS)]
    if settings.spark is not None:
        sections.append(("spark", settings.spark, SPARK_SPECS))
    for which, adapter, registry in sections:
        sources.append(SettingSource(f"{which}.kind", adapter.kind, origin(f"{which}.kind")))
        specs = registry[adapter.kind]
        for option in sorted(specs, key=lambda o: (o not in adapter.options, o)):
            value = adapter.options.get(option)
            if value is None:  # the adapter's own default, where there is one
                value = specs[option].default_for(settings, adapter.options)
            elif option in SECRET_KEYS:
                value = "***"
            sources.append(SettingSource(f"{which}.{option}", value, origin(f"{which}.{option}")))
        if which == "target" and adapter.kind == "sqlserver":
            sources.append(_chosen_driver(adapter))
    return settings, sources


def _chosen_driver(target: AdapterConfig) -> SettingSource:
    """The driver `driver: auto` (or the profile) gives on this machine, and why."""
    from bridge_cli.targets.sqlserver.driver_choice import choose_driver

    try:
        choice = choose_driver(target.options, target.source)
    except ConfigError as exc:
        return SettingSource("target.driver_chosen", None, f"none: {exc}")
    if choice.requested != "auto":
        return SettingSource("target.driver_chosen", choice.driver, "named in the profile")
    why = f"auto fell back: {choice.reason}; {choice.fix}" if choice.fix else f"auto: {choice.reason}"
    return SettingSource("target.driver_chosen", choice.driver, why)


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
