"""Issue 10 §3: a real `bridge worker --metrics-port` process, scraped over HTTP as Prometheus
would, with real events; /healthz before and after the lake goes away."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests import test_cli_process
from tests.backends import Col, LocalPair
from tests.test_cli_process import bridge, cli_env, ok, stderr_of, wait_until

spawn = test_cli_process.spawn  # the fixture: `bridge` processes, killed at the end


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of a GET; 0 when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser: (name, labels) -> value."""
    code, body = get(port, "/metrics")
    assert code == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def people(local: LocalPair) -> None:
    local.create_source("lakecat.s.people", {"id": "int", "name": "text"},
                        [(1, "ana"), (2, "bruno"), (3, "carla")])
    local.create_target("dbo.people", [Col("id", "int", pk=True), Col("name")])


def submit(*args: str) -> str:
    return ok("submit", *args, "-q").stdout.strip()


def stop(worker: subprocess.Popen[str], tmp_path: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, stderr_of(tmp_path, 0)


def test_metrics_count_the_events_a_worker_finished_and_the_rows_it_wrote(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    people(local)
    port = free_port()
    worker = spawn("worker", "--poll-interval", "0.1", "--metrics-port", str(port))
    wait_until(lambda: get(port, "/healthz")[0] == 200, 60, "the metrics server")
    before = scrape(port)
    assert value(before, "bridge_events_finished_total", status="completed", operation="INSERT") == 0

    good = submit("insert", "--source", "lakecat.s.people", "--target", "dbo.people", "--pk", "id")
    bad = submit("insert", "--source", "lakecat.s.people", "--target", "dbo.missing", "--pk", "id")
    gone = submit("delete", "--target", "dbo.people", "--filter", '{"id": [1, 2]}')

    def all_finished() -> bool:
        samples = scrape(port)
        return sum(v for (name, _), v in samples.items() if name == "bridge_events_finished_total") == 3

    wait_until(all_finished, 60, "three finished events in /metrics", every=0.2)
    samples = scrape(port)
    assert value(samples, "bridge_events_finished_total", status="completed", operation="INSERT") == 1
    assert value(samples, "bridge_events_finished_total", status="failed", operation="INSERT") == 1
    assert value(samples, "bridge_events_finished_total", status="completed", operation="DELETE") == 1
    assert value(samples, "bridge_rows_written_total", target_table="dbo.people") == 3 + 2
    assert value(samples, "bridge_event_rows_count") == 2  # completed events only
    assert value(samples, "bridge_event_rows_sum") == 5
    assert value(samples, "bridge_event_duration_seconds_count") == 3
    assert value(samples, "bridge_event_retries_total") == 0
    assert value(samples, "bridge_claims_lost_total") == 0
    # The queue, as counted at a poll after the last event.
    wait_until(lambda: value(scrape(port), "bridge_queue_events", status="completed") == 2, 30,
               "the queue gauge")
    samples = scrape(port)
    assert value(samples, "bridge_queue_events", status="failed") == 1
    assert value(samples, "bridge_queue_events", status="pending") == 0
    assert value(samples, "bridge_oldest_pending_age_seconds") == 0
    now = datetime.now(timezone.utc).timestamp()
    assert now - 60 < value(samples, "bridge_last_successful_poll_timestamp_seconds") <= now + 1
    stop(worker, tmp_path)
    for event_id, status in ((good, "completed"), (bad, "failed"), (gone, "completed")):
        event = local.lake.get_event(event_id)
        assert event is not None and event.status == status


def test_metrics_port_from_the_profile_and_the_age_of_the_oldest_pending_event(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    # Pending but not due (as after a transient error), created an hour ago: the worker leaves it.
    waiting = submit("delete", "--target", "dbo.t", "--filter", '{"k": 1}')
    hour_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    local.set_event_fields(waiting, created_at=hour_ago, next_attempt_at=hour_ago + timedelta(days=1))
    port = free_port()
    worker = spawn("worker", "--poll-interval", "0.1", env=cli_env(BRIDGE_METRICS_PORT=str(port)))
    wait_until(lambda: value(scrape(port), "bridge_queue_events", status="pending") == 1
               if get(port, "/healthz")[0] == 200 else False, 60, "a poll counted in /metrics")
    age = value(scrape(port), "bridge_oldest_pending_age_seconds")
    assert 3600 <= age < 3600 + 600, age
    stop(worker, tmp_path)


def test_healthz_is_200_while_polls_succeed_and_503_when_the_lake_is_gone(
    local: LocalPair, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    port = free_port()
    worker = spawn("worker", "--poll-interval", "0.1", "--metrics-port", str(port))
    wait_until(lambda: get(port, "/healthz")[0] == 200, 60, "a healthy worker")
    assert get(port, "/healthz")[1].startswith("ok")
    # The event table's lake file goes away (a lost disk, a wrong mount): every poll fails.
    events_file = local.lake.catalog_path(local.lake.event_table.catalog)
    moved = events_file.with_name("moved.duckdb")
    events_file.rename(moved)
    wait_until(lambda: get(port, "/healthz")[0] == 503, 30, "/healthz to say 503")
    code, body = get(port, "/healthz")
    assert code == 503 and "last successful poll" in body, body
    assert worker.poll() is None  # the worker lives on, retrying
    moved.rename(events_file)  # back: healthy again
    wait_until(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz to say 200 again")
    assert get(port, "/nope")[0] == 404
    stop(worker, tmp_path)
    assert "does not exist" in stderr_of(tmp_path, 0)  # the failed polls were logged


def test_a_metrics_port_in_use_is_a_clear_error(local: LocalPair) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = bridge("worker", "--metrics-port", str(port))
    assert result.returncode == 5, result.stderr
    assert f"metrics port {port}: cannot listen" in result.stderr
