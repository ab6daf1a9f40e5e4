"""The image of examples/Dockerfile, built and run on a real Docker daemon (`make test-container`
starts one with the python-slim stand-in, then stops it): the README's "Deploying" commands, a
numeric non-root user, the embedded default with no config, health, stops (right after the start,
and with a 3,000,000-row event in hand), a read-only root without capabilities, worker ids of two
containers with one hostname, and `doctor` against a TDS server: `driver: auto` takes mssql-python in
the image, and falls back to pymssql when a library its ODBC driver needs is deleted.

Skipped unless BRIDGE_TEST_CONTAINER=1 (`make test-container` sets it): `make test` needs no Docker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import mssql_url

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    os.environ.get("BRIDGE_TEST_CONTAINER") != "1" or shutil.which("docker") is None,
    reason="container tests run only under `make test-container` (BRIDGE_TEST_CONTAINER=1, a Docker daemon)",
)

IMAGE = "bridge"
# The README's build commands, as written there, with the classic builder (DOCKER_BUILDKIT=0), which
# reads no Dockerfile-specific ignore file: test_the_image_holds_only_the_package checks that what
# else the context holds does not reach the image.
BUILD = ["docker", "build", "-f", "examples/Dockerfile", "-t", IMAGE, "."]
DATA = "/var/lib/bridge"
BIG_ROWS = 3_000_000


def docker(*args: str, timeout: float = 180, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def wait_until(condition: Callable[[], bool], seconds: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds:g}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def images() -> None:
    """The image, built with the README's command (the classic builder)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    # What a working tree holds beside the package (bytecode, a stray file): in the context, not the image.
    strays = [ROOT / "bridge_cli" / "__pycache__" / "stray.cpython-312.pyc", ROOT / "bridge_cli" / "stray.txt"]
    made = [p for p in strays if not p.exists()]
    try:
        for path in made:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"not part of bridge")
        for command in (BUILD,):
            started = time.monotonic()
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                                    check=False)
            assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            assert re.search(r"(?m)^Step 1/\d+ : FROM python:3.12-slim", result.stdout), "not the classic builder"
            print(f"{' '.join(command)}: {time.monotonic() - started:.1f}s")
    finally:
        for path in made:
            path.unlink()


class Docker:
    """Containers and volumes made by one test, removed after it."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = f"bridge-test-{uuid.uuid4().hex[:10]}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, *args: str, image: str = IMAGE, timeout: float = 180, check: bool = True,
            entrypoint: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`docker run --rm [options] IMAGE [command]`; options come before "--", the command after."""
        options, command = _split(args)
        if entrypoint:
            options = [*options, "--entrypoint", entrypoint]
        return docker("run", "--rm", *options, image, *command, timeout=timeout, check=check, env=env)

    def start(self, *args: str, image: str = IMAGE, env: dict[str, str] | None = None) -> str:
        """`docker run -d --name NAME [options] IMAGE [command]`: the container's name."""
        options, command = _split(args)
        name = f"bridge-test-{uuid.uuid4().hex[:10]}"
        self.containers.append(name)
        docker("run", "-d", "--name", name, *options, image, *command, env=env)
        return name

    def close(self) -> None:
        for name in self.containers:
            docker("rm", "-f", name, check=False)
        for name in self.volumes:
            docker("volume", "rm", "-f", name, check=False)


def _split(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    if "--" in args:
        i = args.index("--")
        return list(args[:i]), list(args[i + 1:])
    return list(args), []


@pytest.fixture
def dock(images: None) -> Iterator[Docker]:
    made = Docker()
    try:
        yield made
    finally:
        made.close()


def initialised(dock: Docker, *options: str) -> str:
    """A data volume where `bridge init` ran (the embedded default)."""
    volume = dock.volume()
    dock.run("-v", f"{volume}:{DATA}", *options, "--", "init")
    return volume


def state(name: str) -> dict[str, Any]:
    found = json.loads(docker("inspect", name).stdout)[0]["State"]
    assert isinstance(found, dict)
    return found


def health(name: str) -> str:
    return docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()


def status_json(name: str, event_id: str) -> dict[str, Any]:
    data = json.loads(docker("exec", name, "bridge", "status", event_id, "--json").stdout)
    assert isinstance(data, dict)
    return data


# -- the image -------------------------------------------------------------------------------------
def test_the_image_holds_only_the_package(dock: Docker) -> None:
    # The context had a __pycache__ folder and a stray file in the package (the fixture made them):
    # only the tracked modules are in the image, and no copy of the sources.
    installed = dock.run("--", "-c", "import bridge_cli, pathlib; root = pathlib.Path(bridge_cli.__file__).parent; "
                         "print('\\n'.join(sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())))",
                         entrypoint="python").stdout.split()
    tracked = subprocess.run(["git", "ls-files", "bridge_cli"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert installed == sorted(str(Path(p).relative_to("bridge_cli")) for p in tracked if p.endswith(".py"))
    assert dock.run("--", "-c", "test ! -e /src && test ! -e /opt/bridge/.venv && echo clean", entrypoint="sh").stdout == "clean\n"
    # The pinned versions: what constraints.txt says is what pip installed.
    pins = dict(line.split("==") for line in (ROOT / "examples/constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    frozen = dict(line.split("==") for line in dock.run("--", "--python", "/opt/bridge/bin/python", "freeze", entrypoint="pip").stdout.splitlines()
                  if "==" in line)
    for name in ("duckdb", "pyarrow", "typer", "databricks-sql-connector", "pymssql"):
        key = next(k for k in frozen if k.lower().replace("_", "-") == name)
        assert frozen[key] == pins[next(k for k in pins if k.lower().replace("_", "-") == name)], name


def test_it_runs_as_a_numeric_non_root_user(dock: Docker) -> None:
    user = json.loads(docker("image", "inspect", IMAGE).stdout)[0]["Config"]["User"]
    assert re.fullmatch(r"[1-9]\d*:\d+", user), user  # runAsNonRoot can verify a number, not a name
    assert dock.run("--", "-u", entrypoint="id").stdout.strip() == user.split(":")[0]
    assert dock.run("--", "-g", entrypoint="id").stdout.strip() == user.split(":")[1]
    assert dock.run("--", "-gn", entrypoint="id").stdout.strip() == "bridge"  # the group exists with that gid


def test_version(dock: Docker) -> None:
    assert dock.run("--", "--version").stdout.strip() == "bridge 0.1.0"


def test_the_demo_flow_with_no_config_mounted(dock: Docker) -> None:
    # `make demo`, one container per command, the embedded default in the data volume.
    volume = dock.volume()
    data = ("-v", f"{volume}:{DATA}")
    dock.run(*data, "--", "init")
    seeded = dock.run(*data, "--", "-m", "bridge_cli.demo", entrypoint="python").stdout
    assert f"{DATA}/lake/mi-catalog.duckdb" in seeded
    dock.run(*data, "--", "submit", "insert", "--source", "`mi-catalog`.`mi-schema`.datos_nuevos",
             "--target", "dbo.MarketScopeAccess", "--pk", "username", "--expected", "5")
    dock.run(*data, "--", "submit", "update", "--source", "mi-catalog.mi-schema.datos_actualizados",
             "--target", "dbo.MarketScopeAccess", "--pk", "username", "--expected", "2")
    dock.run(*data, "--", "submit", "delete", "--target", "dbo.MarketScopeAccess", "--pk", "username",
             "--filter", '{"username": ["elena"]}', "--expected", "1")
    dock.run(*data, "--", "process-once")
    shown = dock.run(*data, "--", "status", "--limit", "6").stdout
    assert shown.count("completed") == 3, shown
    events = json.loads(dock.run(*data, "--", "status", "--limit", "6", "--json").stdout)
    assert sorted((e["operation"], e["status"], e["rows_affected"]) for e in events) == [
        ("DELETE", "completed", 1), ("INSERT", "completed", 5), ("UPDATE", "completed", 2)]


def test_a_mounted_config_the_user_cannot_read_and_a_root_owned_data_folder_say_the_fix(
    dock: Docker, tmp_path: Path
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("profiles: {prod: {lake: {kind: duckdb}, target: {kind: sqlite}}}\n")
    config.chmod(0o600)  # root's, as a secret copied without thinking of the container's user
    result = dock.run("-v", f"{config}:/etc/bridge/bridge.yaml:ro", "-e", "BRIDGE_CONFIG=/etc/bridge/bridge.yaml",
                      "--", "status", check=False)
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: cannot read config file /etc/bridge/bridge.yaml: Permission denied (bridge runs as uid 10001, "
        "gid 10001): make it readable to that user, e.g. chmod a+r /etc/bridge/bridge.yaml (and a+x on its "
        "folders), or give it that owner"]
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)  # root-owned, bind-mounted over the volume
    result = dock.run("-v", f"{folder}:{DATA}", "--", "init", check=False)
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot write lake folder {DATA}/lake: permission denied; bridge runs as uid 10001 and {DATA} "
        f"belongs to uid 0: chown -R 10001:10001 {DATA}, or set BRIDGE_HOME to a folder that user can write"]
    subprocess.run(["chown", "-R", "10001:10001", str(folder)], check=True)  # the fix it names, on the host
    dock.run("-v", f"{folder}:{DATA}", "--", "init")


# -- the worker ------------------------------------------------------------------------------------
HEALTH_FAST = ("--health-interval", "1s")  # the image's HEALTHCHECK command, checked each second


def test_a_worker_turns_healthy_on_the_port_it_is_configured_for(dock: Docker, tmp_path: Path) -> None:
    volume = initialised(dock)
    data = ("-v", f"{volume}:{DATA}")
    default = dock.start(*data, *HEALTH_FAST)  # the image's BRIDGE_METRICS_PORT=9464, every interface
    other_port = dock.start(*data, *HEALTH_FAST, "-e", "BRIDGE_METRICS_PORT=9500")
    config = tmp_path / "bridge.yaml"
    config.write_text("profiles:\n  prod:\n    lake: {kind: duckdb}\n    target: {kind: sqlite}\n"
                      "    metrics_port: 9600\n    metrics_host: 127.0.0.1\n")
    config.chmod(0o644)
    # A mounted config; BRIDGE_METRICS_PORT set empty lets the profile's metrics_port apply.
    mounted = dock.start(*data, *HEALTH_FAST, "-v", f"{config}:/etc/bridge/bridge.yaml:ro",
                         "-e", "BRIDGE_CONFIG=/etc/bridge/bridge.yaml", "-e", "BRIDGE_METRICS_PORT=")
    for name in (default, other_port, mounted):
        wait_until(lambda n=name: health(n) == "healthy", 90, f"{name} healthy")
    logs = {name: docker("logs", name).stderr for name in (default, other_port, mounted)}
    assert "serving metrics on :9464" in logs[default]
    assert "serving metrics on :9500" in logs[other_port]
    assert "serving metrics on 127.0.0.1:9600" in logs[mounted] and "profile prod" in logs[mounted]
    last = state(mounted)["Health"]["Log"][-1]
    assert last["ExitCode"] == 0 and last["Output"].startswith("ok"), last
    for name in (default, other_port, mounted):
        docker("stop", name)
        assert state(name)["ExitCode"] == 0


@pytest.mark.parametrize("delay", [0.0, 0.25, 0.5])
def test_docker_stop_right_after_docker_run_exits_0_at_once(dock: Docker, delay: float) -> None:
    volume = initialised(dock)
    name = dock.start("-v", f"{volume}:{DATA}")
    time.sleep(delay)
    started = time.monotonic()
    docker("stop", name)
    took = time.monotonic() - started
    assert state(name)["ExitCode"] == 0, docker("logs", name).stderr
    assert took < 3, f"docker stop took {took:.1f}s"


def big_source_and_target(dock: Docker, volume: str, *options: str) -> None:
    """3,000,000 rows in the embedded lake (bigcat.s.rows) and an empty dbo.big in the target."""
    script = f"""
import sqlite3
from bridge_cli.config import load_settings
from bridge_cli.lakes.duckdb import DuckDBLake
from bridge_cli.targets.sqlite import SQLiteTarget
settings = load_settings()
with DuckDBLake(settings).connect("bigcat", create=True) as con:
    con.execute("CREATE SCHEMA IF NOT EXISTS s")
    con.execute("CREATE OR REPLACE TABLE s.rows AS SELECT range AS id, 'name-' || range::VARCHAR AS name "
                "FROM range({BIG_ROWS})")
with sqlite3.connect(SQLiteTarget(settings).schema_path("dbo")) as target:
    target.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT)")
"""
    dock.run("-v", f"{volume}:{DATA}", *options, "--", "-c", script, entrypoint="python", timeout=300)


def test_docker_stop_with_a_3_000_000_row_event_in_hand_finishes_it(dock: Docker) -> None:
    volume = initialised(dock)
    big_source_and_target(dock, volume)
    event_id = dock.run("-v", f"{volume}:{DATA}", "--", "submit", "insert", "--source", "bigcat.s.rows",
                        "--target", "dbo.big", "--pk", "id", "--expected", str(BIG_ROWS), "-q").stdout.strip()
    worker = dock.start("-v", f"{volume}:{DATA}", "--", "worker", "--poll-interval", "0.2")
    wait_until(lambda: status_json(worker, event_id)["status"] == "processing", 60, "the claim", every=0.2)
    started = time.monotonic()
    stop = docker("stop", "-t", "120", worker, timeout=200)
    took = time.monotonic() - started
    assert stop.returncode == 0
    logs = docker("logs", worker).stderr
    assert state(worker)["ExitCode"] == 0, logs
    event = json.loads(dock.run("-v", f"{volume}:{DATA}", "--", "status", event_id, "--json").stdout)
    assert (event["status"], event["rows_affected"]) == ("completed", BIG_ROWS), event
    assert took < 120, f"stopped by the timeout ({took:.0f}s), not by the worker"
    assert logs.index("stopping on SIGTERM") < logs.index(f"event {event_id} INSERT dbo.big completed")
    print(f"docker stop -t 120 took {took:.1f}s: {logs.splitlines()[-2]}")


def test_a_read_only_root_without_capabilities_works_with_a_data_volume(dock: Docker) -> None:
    locked = ("--read-only", "--cap-drop", "ALL")
    volume = dock.volume()
    data = ("-v", f"{volume}:{DATA}")
    dock.run(*locked, *data, "--", "init")
    dock.run(*locked, *data, "--", "-m", "bridge_cli.demo", entrypoint="python")
    event_id = dock.run(*locked, *data, "--", "submit", "insert", "--source", "`mi-catalog`.`mi-schema`.datos_nuevos",
                        "--target", "dbo.MarketScopeAccess", "--pk", "username", "-q").stdout.strip()
    worker = dock.start(*locked, *data)
    wait_until(lambda: status_json(worker, event_id)["status"] == "completed", 60, "the event")
    check = docker("exec", worker, "bridge-healthcheck", check=False)  # what HEALTHCHECK runs
    assert check.returncode == 0 and check.stdout.startswith("ok"), check.stdout
    docker("stop", worker)
    assert state(worker)["ExitCode"] == 0, docker("logs", worker).stderr
    assert status_json_once(dock, data, event_id)["rows_affected"] == 5


def status_json_once(dock: Docker, data: tuple[str, str], event_id: str) -> dict[str, Any]:
    found = json.loads(dock.run(*data, "--", "status", event_id, "--json").stdout)
    assert isinstance(found, dict)
    return found


def test_two_containers_with_one_hostname_get_distinct_worker_ids(dock: Docker) -> None:
    volume = initialised(dock)
    data = ("-v", f"{volume}:{DATA}")
    first = dock.start(*data, "--hostname", "bridge-worker", "--", "worker", "--poll-interval", "0.2")
    second = dock.start(*data, "--hostname", "bridge-worker", "--", "worker", "--poll-interval", "0.2")
    for name in (first, second):
        wait_until(lambda n=name: "worker started" in docker("logs", n).stderr, 60, f"{name} started")
    time.sleep(1)  # both have registered (the heartbeat at start)
    listed = json.loads(dock.run(*data, "--", "workers", "--json").stdout)
    ids = [w["worker_id"] for w in listed if w["state"] == "alive"]
    started = [re.search(r"worker=(\S+)", docker("logs", n).stderr) for n in (first, second)]
    assert len(ids) == 2 and len(set(ids)) == 2, (
        f"bridge workers --json lists {ids}; the workers logged "
        f"{[m.group(1) if m else None for m in started]}: the default worker id must differ between "
        "containers with one hostname (hostname:pid is the same: bridge has the same pid in each)")
    print(f"two containers with --hostname bridge-worker: worker ids {sorted(ids)}")
    # The README's maintenance pause, run in one of the containers: every worker sees it.
    docker("exec", first, "bridge", "pause", "--target", "dbo.*")
    summary = json.loads(docker("exec", second, "bridge", "status", "--summary", "--json").stdout)
    assert [p["target"] for p in summary["paused"]] == ["dbo.*"], summary
    docker("exec", second, "bridge", "resume")
    summary = json.loads(docker("exec", first, "bridge", "status", "--summary", "--json").stdout)
    assert "paused" not in summary, summary  # the key comes only while something is paused
    # A stable id (a pod's name): a second worker under it refuses to start, saying why.
    named = dock.start(*data, "-e", "BRIDGE_WORKER_ID=bridge-worker-0", "--", "worker", "--poll-interval", "0.2")
    wait_until(lambda: "worker started" in docker("logs", named).stderr, 60, f"{named} started")
    time.sleep(1)
    twin = dock.run(*data, "-e", "BRIDGE_WORKER_ID=bridge-worker-0", "--", "worker", check=False)
    assert twin.returncode == 5 and "worker id 'bridge-worker-0' is in use by a live worker" in twin.stderr
    for name in (first, second, named):
        docker("stop", name)


# -- SQL Server: the driver `auto` chooses in the image --------------------------------------------
def tds_server() -> dict[str, Any]:
    """BRIDGE_TEST_MSSQL_URL, else the TDS server (Babelfish) on this host's 127.0.0.1:1433."""
    return mssql_url() or {"host": "127.0.0.1", "port": 1433, "user": "bridge", "password": "Bridge-Test-1",
                           "database": "bridge_test3", "encrypt": "optional"}


def _checks(doctor: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    return {line.split("\t")[0]: line.split("\t")[1:] for line in doctor.stdout.splitlines() if "\t" in line}


def test_doctor_reaches_the_server_through_the_driver_auto_chose(dock: Docker, tmp_path: Path) -> None:
    server = tds_server()
    try:
        socket.create_connection((server["host"], int(server["port"])), timeout=5).close()
    except OSError as exc:
        pytest.skip(f"no TDS server at {server['host']}:{server['port']} ({exc}); set BRIDGE_TEST_MSSQL_URL")
    options = {k: v for k, v in server.items() if k not in ("host", "port", "user", "password", "database")}
    # The README's production profile: no `driver:` line.
    target = {"kind": "sqlserver", "host": server["host"], "port": int(server["port"]),
              "database": server["database"], "user": server["user"], "password": "${MSSQL_PASSWORD}", **options}
    config = tmp_path / "bridge.yaml"
    config.write_text(json.dumps({"profiles": {"prod": {"lake": {"kind": "duckdb"}, "target": target}}}))
    config.chmod(0o644)
    volume = dock.volume()
    # As the README runs it: the password from the caller's environment (-e MSSQL_PASSWORD); the
    # server listens on this host's loopback, hence --network host.
    secret = {"MSSQL_PASSWORD": str(server["password"])}
    run = ("--network", "host", "-v", f"{volume}:{DATA}", "-v", f"{config}:/etc/bridge/bridge.yaml:ro",
           "-e", "BRIDGE_CONFIG=/etc/bridge/bridge.yaml", "-e", "BRIDGE_PROFILE=prod", "-e", "MSSQL_PASSWORD")
    dock.run(*run, "--", "init", env=secret)
    doctor = dock.run(*run, "--", "doctor", check=False, env=secret)
    print(f"bridge doctor, exit {doctor.returncode}:\n{doctor.stdout}{doctor.stderr}")
    checks = _checks(doctor)
    assert checks["driver"][0] == "ok", doctor.stdout
    assert "mssql-python (auto: mssql-python and its ODBC driver load here)" in checks["driver"][2]
    assert checks["target"][0] == "ok" and checks["ledger"][0] == "ok", doctor.stdout
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    # The same image with libltdl deleted (as on a host without libltdl7): auto falls back to pymssql,
    # says why and what to install, and still reaches the server.
    missing = dock.run(*run, "--user", "0", "--", "-c",
                       "rm -f /usr/lib/*/libltdl.so.7* && exec bridge doctor", entrypoint="sh",
                       check=False, env=secret)
    print(f"bridge doctor without libltdl, exit {missing.returncode}:\n{missing.stdout}{missing.stderr}")
    fallback = _checks(missing)
    assert fallback["driver"][0] == "warning", missing.stdout
    assert "pymssql, because auto fell back" in fallback["driver"][2]
    assert "libltdl.so.7: cannot open shared object file" in fallback["driver"][2]
    assert "apt-get install libltdl7 libkrb5-3 libgssapi-krb5-2" in fallback["driver"][2]
    assert fallback["target"][0] == "ok" and fallback["ledger"][0] == "ok", missing.stdout
    # A worker of that image against the server: healthy, then a clean stop.
    worker = dock.start(*run, *HEALTH_FAST, env=secret)
    wait_until(lambda: health(worker) == "healthy", 90, "a healthy worker on SQL Server")
    docker("stop", "-t", "120", worker)
    assert state(worker)["ExitCode"] == 0, docker("logs", worker).stderr
