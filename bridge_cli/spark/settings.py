"""The profile's `spark:` section, checked and typed (see README, "Huge events on Spark")."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_cli.config import AdapterConfig, Settings
from bridge_cli.errors import ConfigError
from bridge_cli.spark.jdbc import JdbcTarget, jdbc_target


@dataclass(frozen=True)
class SparkSettings:
    kind: str  # local | databricks
    source: str  # "bridge.yaml: profiles.x.spark", for messages
    jdbc: JdbcTarget
    partitions: int
    batch_size: int
    poll_seconds: float
    # local
    master: str = ""
    jars: tuple[str, ...] = ()
    spark_conf: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    work_dir: Path = Path(".")
    # databricks
    cluster_id: str | None = None
    serverless: bool = False
    job_id: int | None = None
    wheel: str | None = None
    password_secret: str | None = None
    run_name: str = "bridge stage"
    workspace: dict[str, str] = field(default_factory=dict)  # host / token / profile for the SDK


def _int(config: AdapterConfig, key: str, default: int, low: int = 1) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ConfigError(f"{config.source}.{key}: expected a whole number, got {value!r}")
    number = int(value)
    if number < low:
        raise ConfigError(f"{config.source}.{key}: must be at least {low}, got {value!r}")
    return number


def _mapping(config: AdapterConfig, key: str) -> dict[str, str]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{config.source}.{key}: must be a mapping")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


def spark_settings(settings: Settings) -> SparkSettings:
    config = settings.spark
    assert config is not None
    if settings.target.kind != "sqlserver":
        raise ConfigError(
            f"{config.source}: Spark staging writes to SQL Server; this profile's target is {settings.target.kind}"
        )
    default_driver = "microsoft" if config.kind == "databricks" else "jtds"
    jars = config.get("jars") or []
    if isinstance(jars, str):
        jars = [jars]
    if not isinstance(jars, list):
        raise ConfigError(f"{config.source}.jars: expected a list of jar files")
    if config.kind == "local" and not config.get("jdbc_driver") and not any("jtds" in str(j) for j in jars):
        default_driver = "microsoft"
    jdbc = jdbc_target(settings.target.options, settings.target.source, config.options, config.source, default_driver)
    partitions = _int(config, "partitions", 2 if config.kind == "local" else 8)
    common: dict[str, Any] = {
        "kind": config.kind, "source": config.source, "jdbc": jdbc, "partitions": partitions,
        "batch_size": _int(config, "batch_size", 10000),
        "poll_seconds": float(_int(config, "poll_seconds", 2 if config.kind == "local" else 10)),
        "spark_conf": _mapping(config, "spark_conf"),
    }
    if config.kind == "local":
        for jar in jars:
            if not Path(str(jar)).is_file():
                raise ConfigError(f"{config.source}.jars: {jar} is not a file")
        work = config.get("work_dir")
        return SparkSettings(
            **common,
            master=str(config.get("master") or f"local[{partitions}]"),
            jars=tuple(str(j) for j in jars),
            python=str(config.get("python") or sys.executable),
            work_dir=Path(str(work)) if work else settings.home / "spark",
        )
    targets = [k for k in ("cluster_id", "serverless", "job_id") if config.get(k)]
    if len(targets) != 1:
        raise ConfigError(
            f"{config.source}: name where the staging job runs: exactly one of cluster_id, serverless: true, "
            f"or job_id (got {', '.join(targets) or 'none'})"
        )
    if not config.get("job_id") and not config.get("wheel"):
        raise ConfigError(f"{config.source}.wheel: the bridge wheel to install on the cluster "
                          "(e.g. /Volumes/main/tools/wheels/bridge_cli-0.1.0-py3-none-any.whl)")
    secret = config.get("password_secret")
    if jdbc.password is not None and not secret:
        raise ConfigError(
            f"{config.source}.password_secret: the job reads the SQL Server password from a Databricks "
            "secret scope (\"scope/key\"); it is never sent in the run's parameters"
        )
    if secret is not None and "/" not in str(secret):
        raise ConfigError(f"{config.source}.password_secret: expected \"scope/key\", got {secret!r}")
    lake = settings.lake.options if settings.lake.kind == "databricks" else {}
    workspace = {
        "host": str(config.get("host") or lake.get("server_hostname") or ""),
        "token": str(config.get("token") or lake.get("token") or ""),
        "profile": str(config.get("profile") or lake.get("profile") or ""),
    }
    job_id = config.get("job_id")
    return SparkSettings(
        **common,
        cluster_id=str(config.get("cluster_id")) if config.get("cluster_id") else None,
        serverless=bool(config.get("serverless")),
        job_id=_int(config, "job_id", 0) if job_id else None,
        wheel=str(config.get("wheel")) if config.get("wheel") else None,
        password_secret=str(secret) if secret else None,
        run_name=str(config.get("run_name") or "bridge stage"),
        workspace={k: v for k, v in workspace.items() if v},
    )
