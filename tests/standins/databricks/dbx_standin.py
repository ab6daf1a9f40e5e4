"""Start and stop the Databricks SQL warehouse stand-in (test only; README.md beside this file).

    python tests/standins/databricks/dbx_standin.py run -- python -m pytest -k databricks
    python tests/standins/databricks/dbx_standin.py up      # prints `export ...` lines
    python tests/standins/databricks/dbx_standin.py down    # stops what `up` started

`run` is what `make test-databricks` uses: it puts itself, the stand-in and the command in a
private network namespace when one can be made (`unshare -n` as root, `unshare -rn` otherwise),
starts the stand-in, runs the command with the stand-in's settings in its environment, and stops
the stand-in however the command ends. Where no namespace can be made, or when
BRIDGE_STANDIN_NO_NETNS=1, everything listens on free ports of 127.0.0.1 instead.

Only the processes recorded in the state dir are ever signalled, and only while their command
line still carries the state dir's marker (no stray kills after a PID is reused).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HTTP_PATH = "/sql/1.0/warehouses/standin"
PIP_LINE = "python -m pip install -e '.[standin]'   # pyspark==3.5.9 snowpark-connect-deps-iceberg==1.0.3"
APT_PACKAGES = {"nginx": "nginx-light", "java": "openjdk-17-jre-headless", "openssl": "openssl"}
NO_NETNS = "BRIDGE_STANDIN_NO_NETNS"


def log(message: str) -> None:
    print(f"dbx-standin: {message}", file=sys.stderr, flush=True)


class StandinError(Exception):
    """The stand-in cannot start here; the message says why and what to install or run."""


@dataclass(frozen=True)
class Config:
    state: Path  # pids, logs, TLS material, jars, tables
    catalogs: tuple[str, ...]  # Iceberg catalogs; the first is the default catalog
    port: int  # nginx, HTTPS
    thrift_port: int  # the Spark Thrift Server, HTTP, behind nginx
    token: str
    memory: str = "1g"
    timeout: float = 180.0

    @property
    def ca(self) -> Path:
        return self.state / "tls" / "ca.pem"

    @property
    def spark_marker(self) -> str:
        return f"-Dbridge.standin.dir={self.state}"

    def settings(self) -> dict[str, str]:
        """What the tests read (tests/databricks_env.py); SSL_CERT_FILE makes Python's ssl, and so
        the connector, trust the test CA."""
        return {
            "DBX_STANDIN_HOST": "localhost", "DBX_STANDIN_PORT": str(self.port), "DBX_STANDIN_HTTP_PATH": HTTP_PATH,
            "DBX_STANDIN_TOKEN": self.token, "DBX_STANDIN_CATALOGS": ",".join(self.catalogs),
            "DBX_STANDIN_DIR": str(self.state), "DBX_STANDIN_COMPAT_DIR": str(HERE), "SSL_CERT_FILE": str(self.ca),
        }

    def save(self) -> None:
        (self.state / "run" / "config.json").write_text(json.dumps({
            "catalogs": self.catalogs, "port": self.port, "thrift_port": self.thrift_port, "token": self.token,
        }))

    @classmethod
    def load(cls, state: Path) -> Config:
        saved = json.loads((state / "run" / "config.json").read_text())
        return cls(state, tuple(saved["catalogs"]), saved["port"], saved["thrift_port"], saved["token"])


def parse_catalogs(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if not names:
        raise StandinError("no catalogs given")
    for name in names:
        if not name.replace("-", "").replace("_", "").isalnum() or not name.isascii():
            raise StandinError(f"catalog {name!r}: use letters, digits, _ and - only")
        if name == "spark_catalog":
            raise StandinError("spark_catalog is Spark's own session catalog; pick another name")
    return names


# -- what must be installed -------------------------------------------------------------------------
@dataclass(frozen=True)
class Parts:
    spark_home: Path
    iceberg_jar: Path
    jackson_jars: list[Path]
    thriftserver_jar: Path


def find_parts() -> Parts:
    """Everything comes from PyPI (pyspark, the Iceberg runtime jar) and Debian (nginx, Java,
    openssl); nothing is downloaded here. A missing piece is named with the line that installs it."""
    missing = [f"apt-get install -y {package}" for tool, package in APT_PACKAGES.items() if not shutil.which(tool)]
    spark_home = iceberg = thriftserver = None
    jackson: list[Path] = []
    try:
        import pyspark

        if pyspark.__version__ != "3.5.9":
            missing.append(f"pyspark {pyspark.__version__} is installed; the stand-in is built for 3.5.9: {PIP_LINE}")
        spark_home = Path(pyspark.__file__).parent
        for name in ("jackson-annotations", "jackson-core", "jackson-databind"):
            jackson += [Path(p) for p in sorted(glob.glob(str(spark_home / "jars" / f"{name}-2.*.jar")))[-1:]]
        thriftserver = next(iter(sorted((spark_home / "jars").glob("spark-hive-thriftserver_2.12-*.jar"))), None)
    except ImportError:
        missing.append(f"pyspark is not installed: {PIP_LINE}")
    try:
        import snowpark_connect_deps_iceberg

        jars = Path(snowpark_connect_deps_iceberg.__file__).parent / "jars"
        iceberg = next(iter(sorted(jars.glob("iceberg-spark-runtime-3.5_2.12-*.jar"))), None)
    except ImportError:
        missing.append(f"snowpark-connect-deps-iceberg is not installed: {PIP_LINE}")
    if spark_home and (len(jackson) != 3 or thriftserver is None):
        missing.append(f"pyspark at {spark_home} lacks its Jackson or Thrift server jars: reinstall it ({PIP_LINE})")
    if missing or spark_home is None or iceberg is None or thriftserver is None:
        raise StandinError("missing pieces:\n  " + "\n  ".join(missing or ["the Iceberg runtime jar"]))
    return Parts(spark_home, iceberg, jackson, thriftserver)


# -- processes --------------------------------------------------------------------------------------
def recorded(pid_file: Path, marker: str) -> int | None:
    """The PID in pid_file while that process is alive and its command line carries marker."""
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if marker in command and state != "Z" else None


def stop_recorded(pid_file: Path, marker: str, name: str, seconds: float = 15.0) -> None:
    """SIGTERM (Spark runs its shutdown hooks), SIGKILL after `seconds`. Neither spark-submit
    (it execs Java) nor nginx (master_process off) leaves another process behind."""
    pid = recorded(pid_file, marker)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + seconds
        while recorded(pid_file, marker) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if recorded(pid_file, marker) == pid:
            log(f"{name} (pid {pid}) ignored SIGTERM for {seconds:g}s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _start(command: Sequence[str], log_file: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen(list(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, read from /proc."""
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order
                ordered = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((str(ipaddress.ip_address(ordered)), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


class Front:
    """The stand-in's nginx, the HTTPS front the connector talks to. Tests stop it to make the
    warehouse unreachable (connections refused) and start it again; a front started by this
    process is reaped here, or it would linger as a zombie."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.conf = state / "run" / "nginx.conf"
        self.pid_file = state / "run" / "nginx.pid"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def running(self) -> int | None:
        return recorded(self.pid_file, str(self.conf))

    def start(self, port: int) -> subprocess.Popen[bytes]:
        # master_process off and daemon off (in the conf): one process, the one recorded
        process = _start(["nginx", "-p", str(self.state / "run"), "-e", str(self.state / "nginx-error.log"),
                          "-c", str(self.conf)], self.state / "nginx.out", self.state / "run")
        self._children[process.pid] = process
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise StandinError(f"nginx exited at once (see {self.state / 'nginx-error.log'})")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return process
            except OSError:
                if time.monotonic() > deadline:
                    raise StandinError(f"nginx does not accept connections on 127.0.0.1:{port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        pid = self.running()
        stop_recorded(self.pid_file, str(self.conf), "nginx")
        child = self._children.pop(pid, None) if pid else None
        if child is not None:
            child.wait(timeout=15)


_NGINX_CONF = """\
# Written by {here}/dbx_standin.py. One process in the foreground: the recorded PID is all there is.
master_process off;
daemon off;
{user}pid {run}/nginx.master.pid;
error_log {state}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {state}/nginx-access.log;
  client_body_temp_path {run}/tmp/body;
  proxy_temp_path {run}/tmp/proxy;
  fastcgi_temp_path {run}/tmp/fastcgi;
  uwsgi_temp_path {run}/tmp/uwsgi;
  scgi_temp_path {run}/tmp/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {state}/tls/srv.pem;
    ssl_certificate_key {state}/tls/srv.key;
    # Any /sql/... path, warehouse or cluster style, reaches the Thrift endpoint with the token.
    location /sql/ {{
      if ($http_authorization != "Bearer {token}") {{
        add_header WWW-Authenticate 'Bearer realm="dbx-standin"' always;
        return 403 'dbx-standin: invalid access token\\n';
      }}
      proxy_pass http://127.0.0.1:{thrift_port}/cliservice/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # The Thrift Server (authentication NONE) wants Basic credentials of any kind.
      proxy_set_header Authorization "Basic {basic}";
      proxy_read_timeout 900s;
      proxy_send_timeout 900s;
      # Spark not answering: 501, which the connector does not retry (it sleeps 60 s per retry).
      error_page 502 504 =501 @spark_down;
    }}
    location @spark_down {{ return 501 'dbx-standin: the Spark Thrift Server is not answering\\n'; }}
    location / {{ return 404 'dbx-standin: use an http_path under /sql/, e.g. {http_path}\\n'; }}
  }}
}}
"""


class Standin:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.front = Front(config.state)

    @property
    def _spark_pid_file(self) -> Path:
        return self.config.state / "run" / "spark.pid"

    def start(self) -> None:
        """TLS material, jars, Spark, nginx; then wait for a real query through all of them."""
        started = time.monotonic()
        parts = find_parts()
        state = self.config.state
        for folder in ("run/tmp/body", "run/tmp/proxy", "run/tmp/fastcgi", "run/tmp/uwsgi", "run/tmp/scgi",
                       "tls", "jars", "iceberg"):
            (state / folder).mkdir(parents=True, exist_ok=True)
        self.config.save()
        self._tls()
        jars = self._jars(parts)
        try:
            spark = self._start_spark(parts, jars)
            self._write_nginx_conf()
            self.front.start(self.config.port)
            self._wait(spark)
            self._check_loopback_only()
        except BaseException as exc:
            if isinstance(exc, StandinError):
                self._tail_logs()
            self.stop()
            raise
        log(f"up in {time.monotonic() - started:.1f}s: https://localhost:{self.config.port}{HTTP_PATH}, "
            f"Thrift port {self.config.thrift_port}, catalogs {','.join(self.config.catalogs)}, state in {state}")

    def stop(self) -> None:
        self.front.stop()
        stop_recorded(self._spark_pid_file, self.config.spark_marker, "the Spark Thrift Server")

    def _tls(self) -> None:
        """A throwaway CA and a certificate for localhost and 127.0.0.1, made by openssl."""
        tls = self.config.state / "tls"
        if (tls / "srv.pem").exists():
            return

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=bridge dbx-standin test CA",
                "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "srv.key", "-out", "srv.csr")
        (tls / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                                     "basicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
                "-extfile", "ext.cnf", "-out", "srv.pem")

    def _jars(self, parts: Parts) -> list[Path]:
        from dbx_standin_jars import loopback_thrift_jar, relocated_jackson_jar

        jackson = self.config.state / "jars" / "iceberg-shaded-jackson.jar"
        loopback = self.config.state / "jars" / "loopback-thrift-http.jar"
        if not jackson.exists():
            relocated_jackson_jar(jackson, parts.jackson_jars)
        if not loopback.exists():
            loopback_thrift_jar(loopback, parts.thriftserver_jar)
        return [loopback, parts.iceberg_jar, jackson]  # the patched class first, so it wins

    def _start_spark(self, parts: Parts, jars: list[Path]) -> subprocess.Popen[bytes]:
        state, run = self.config.state, self.config.state / "run"
        conf: list[str] = []

        def setting(key: str, value: str) -> None:
            conf.extend(["--conf", f"{key}={value}"])

        # Every listener on loopback, IPv4 only (so the check below reads one table), small heap.
        setting("spark.driver.extraJavaOptions", f"{self.config.spark_marker} -Dderby.system.home={state}/derby "
                "-Djava.net.preferIPv4Stack=true -XX:+UseSerialGC")
        setting("spark.driver.bindAddress", "127.0.0.1")
        setting("spark.driver.host", "127.0.0.1")
        setting("spark.ui.enabled", "false")
        setting("spark.sql.shuffle.partitions", "2")
        setting("spark.sql.warehouse.dir", str(state / "spark-warehouse"))
        # As a Databricks SQL warehouse: UTC sessions, ANSI mode, `${...}` left as text.
        setting("spark.sql.session.timeZone", "UTC")
        setting("spark.sql.ansi.enabled", "true")
        setting("spark.sql.variable.substitute", "false")
        # Iceberg: UPDATE, DELETE and MERGE on catalogs whose names may have hyphens.
        setting("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        for catalog in self.config.catalogs:
            prefix = f"spark.sql.catalog.{catalog}"
            setting(prefix, "org.apache.iceberg.spark.SparkCatalog")
            setting(f"{prefix}.type", "hadoop")
            setting(f"{prefix}.warehouse", str(state / "iceberg" / catalog))
            setting(f"{prefix}.default-namespace", "default")
            setting(f"{prefix}.cache-enabled", "false")  # one session's writes visible to the next
        setting("spark.sql.defaultCatalog", self.config.catalogs[0])
        hive = ["hive.server2.transport.mode=http", "hive.server2.thrift.http.path=cliservice",
                f"hive.server2.thrift.http.port={self.config.thrift_port}", "hive.server2.thrift.bind.host=127.0.0.1"]
        command = [str(parts.spark_home / "bin" / "spark-submit"),
                   "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2", "--name", "dbx-standin",
                   "--master", "local[2]", "--driver-memory", self.config.memory,
                   "--driver-class-path", ":".join(str(j) for j in jars), *conf,
                   *[arg for pair in hive for arg in ("--hiveconf", pair)], "spark-internal"]
        env = {**os.environ, "SPARK_HOME": str(parts.spark_home), "SPARK_LOCAL_IP": "127.0.0.1",
               "SPARK_CONF_DIR": str(run), "PYSPARK_PYTHON": sys.executable}
        env.pop("SPARK_DIST_CLASSPATH", None)
        # spark-submit execs Java: the recorded PID is the JVM; cwd holds Derby's metastore_db.
        process = _start(command, state / "spark.log", run, env)
        self._spark_pid_file.write_text(f"{process.pid}\n")
        return process

    def _write_nginx_conf(self) -> None:
        import base64

        c = self.config
        # As root, nginx hands its temp folders to `nobody` unless told otherwise; in a user
        # namespace (unshare -rn) that user is not mapped and the chown fails. Nothing here needs
        # another user.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.front.conf.write_text(_NGINX_CONF.format(
            here=HERE, run=c.state / "run", state=c.state, port=c.port, thrift_port=c.thrift_port, token=c.token,
            basic=base64.b64encode(b"token:x").decode(), http_path=HTTP_PATH, user=user))

    def _wait(self, spark: subprocess.Popen[bytes]) -> None:
        """A real query, with the real connector and the shim, through TLS and nginx; then each
        catalog gets its `default` schema (Iceberg hadoop catalogs start empty)."""
        import logging

        import dbx_standin_compat
        from databricks import sql

        logging.getLogger("databricks").setLevel(logging.CRITICAL)  # it logs every refused attempt
        dbx_standin_compat.install()
        c = self.config
        deadline = time.monotonic() + c.timeout
        last = "nothing tried yet"
        # The Thrift port first: cheap, and the connector would sleep between its own retries.
        while True:
            if spark.poll() is not None:
                raise StandinError(f"the Spark Thrift Server exited with status {spark.returncode}")
            try:
                socket.create_connection(("127.0.0.1", c.thrift_port), timeout=2).close()
                break
            except OSError as exc:
                last = f"Thrift port {c.thrift_port}: {exc}"
            if time.monotonic() > deadline:
                raise StandinError(f"no answer within {c.timeout:g}s; last: {last}")
            time.sleep(0.25)
        args = {"server_hostname": "localhost", "http_path": HTTP_PATH, "access_token": c.token, "_port": c.port,
                "_tls_trusted_ca_file": str(c.ca), "_retry_stop_after_attempts_count": 1, "_socket_timeout": 60,
                "enable_telemetry": False}
        while True:
            if spark.poll() is not None:
                raise StandinError(f"the Spark Thrift Server exited with status {spark.returncode}")
            try:
                with sql.connect(**args) as connection, connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchall()
                    for catalog in c.catalogs:
                        cursor.execute(f"CREATE NAMESPACE IF NOT EXISTS `{catalog}`.`default`")
                return
            except Exception as exc:  # anything means "not ready yet"
                last = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if time.monotonic() > deadline:
                raise StandinError(f"no successful query within {c.timeout:g}s; last: {last}")
            time.sleep(0.5)

    def _check_loopback_only(self) -> None:
        """Refuse to go on if Spark or nginx listens beyond loopback: the Thrift Server trusts any
        caller, and the patched class (dbx_standin_jars.py) is what keeps it on 127.0.0.1."""
        for pid_file, marker, name in ((self._spark_pid_file, self.config.spark_marker, "Spark"),
                                       (self.front.pid_file, str(self.front.conf), "nginx")):
            pid = recorded(pid_file, marker)
            if pid is None:
                raise StandinError(f"{name} is not running")
            wide = [f"{a}:{p}" for a, p in listening_sockets(pid) if not is_loopback(a)]
            if wide:
                raise StandinError(f"{name} listens beyond loopback ({', '.join(wide)}); stopped")

    def _tail_logs(self) -> None:
        for name, lines in (("spark.log", 40), ("nginx-error.log", 10)):
            path = self.config.state / name
            if path.exists():
                log(f"---- last lines of {path}")
                print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]), file=sys.stderr)


# -- network namespace ------------------------------------------------------------------------------
def namespace_command() -> list[str] | None:
    """How to make a private network namespace here, or None (then: free loopback ports)."""
    if os.environ.get(NO_NETNS) == "1" or not shutil.which("unshare"):
        return None
    for command in (["unshare", "-n"], ["unshare", "-rn"]):  # as root; as a user (user namespace)
        if subprocess.run([*command, "true"], capture_output=True).returncode == 0:
            return command
    return None


def loopback_up() -> None:
    """`ip link set lo up` without iproute2: a new network namespace starts with lo down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def only_loopback_interface() -> bool:
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- commands ---------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, state: Path, private_network: bool) -> Config:
    # In a private namespace the warehouse's own port 443 (no `port` option needed, as with a
    # real one); elsewhere whatever is free.
    port, thrift_port = (443, 10001) if private_network else (free_port(), free_port())
    token = os.environ.get("DBX_STANDIN_TOKEN") or "dapi" + secrets.token_hex(16)
    return Config(state, parse_catalogs(args.catalogs), port, thrift_port, token, args.memory, args.timeout)


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM (a CI timeout, kill) unwinds like an error, so the stand-in is stopped."""
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_command(command: list[str], env: dict[str, str]) -> int:
    """The command's exit status. Meanwhile SIGTERM is passed on to it, and Ctrl-C (which the
    terminal sends to the command too) is left to it, so it ends its own way before the
    stand-in stops."""
    child = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, ignored)


def command_run(args: argparse.Namespace) -> int:
    if not args.command:
        raise StandinError("run: give the command to run after --")
    if not args.in_namespace:
        namespace = namespace_command()
        if namespace is not None:
            log(f"private network namespace: {' '.join(namespace)}")
            argv = [sys.executable, str(Path(__file__).resolve()), "run", "--in-namespace", "--catalogs", args.catalogs,
                    "--memory", args.memory, "--timeout", str(args.timeout), "--", *args.command]
            os.execvp(namespace[0], [*namespace, *argv])
        why = f"{NO_NETNS}=1" if os.environ.get(NO_NETNS) == "1" else "no network namespace can be made here"
        log(f"{why}: listening on free ports of 127.0.0.1")
    else:
        loopback_up()
        if not only_loopback_interface():
            raise StandinError("--in-namespace, but this network namespace has other interfaces than lo")
    given = os.environ.get("DBX_STANDIN_DIR")
    state = Path(given) if given else Path(tempfile.mkdtemp(prefix="bridge-dbx-standin-"))
    standin = Standin(_config(args, state, private_network=args.in_namespace))
    try:
        with _terminated_as_exit():
            # Twice: on a loaded machine a first start can miss its window.
            for attempt in (1, 2):
                try:
                    standin.start()
                    break
                except StandinError as exc:
                    if attempt == 2:
                        raise
                    log(f"start failed ({exc}); trying once more")
        return _run_command(args.command, {**os.environ, **standin.config.settings()})
    finally:
        standin.stop()
        if not given and os.environ.get("BRIDGE_STANDIN_KEEP") != "1":
            shutil.rmtree(state, ignore_errors=True)


def command_up(args: argparse.Namespace) -> int:
    """Start and leave running; print the settings as `export` lines (also in <state>/env.sh)."""
    state = Path(os.environ.get("DBX_STANDIN_DIR") or tempfile.mkdtemp(prefix="bridge-dbx-standin-"))
    if (state / "run" / "config.json").exists() and recorded(state / "run" / "spark.pid", f"-Dbridge.standin.dir={state}"):
        raise StandinError(f"already running from {state}: run `down` first")
    standin = Standin(_config(args, state, private_network=only_loopback_interface()))
    standin.start()
    lines = "".join(f"export {k}={v}\n" for k, v in standin.config.settings().items())
    (state / "env.sh").write_text(lines)
    print(lines, end="")
    return 0


def command_down(args: argparse.Namespace) -> int:
    given = args.dir or os.environ.get("DBX_STANDIN_DIR")
    if not given:
        raise StandinError("down: which stand-in? set DBX_STANDIN_DIR or pass --dir")
    state = Path(given)
    if not (state / "run" / "config.json").exists():
        log(f"nothing to stop in {state}")
        return 0
    Standin(Config.load(state)).stop()
    (state / "env.sh").unlink(missing_ok=True)
    log(f"stopped; state kept in {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))  # dbx_standin_compat, dbx_standin_jars
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("run", "up"):
        p = sub.add_parser(name)
        p.add_argument("--catalogs", default=os.environ.get("DBX_STANDIN_CATALOGS", "main"),
                       help="comma-separated Iceberg catalogs, the first the default (DBX_STANDIN_CATALOGS)")
        p.add_argument("--memory", default="1g", help="Spark driver heap")
        p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the first query")
    sub.choices["run"].add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    sub.choices["run"].add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("down").add_argument("--dir", help="the state dir `up` printed (DBX_STANDIN_DIR)")
    args = parser.parse_args(argv)
    if args.action == "run" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        return {"run": command_run, "up": command_up, "down": command_down}[args.action](args)
    except StandinError as exc:
        log(f"ERROR: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
