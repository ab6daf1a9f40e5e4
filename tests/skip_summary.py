"""A pytest plugin: at the end of a run, the skipped tests by what they need, with the command
that runs them ("SQL Server: set BRIDGE_TEST_MSSQL_URL", "Databricks: make test-databricks"...).

A skip reason is matched against each group's words in order; a reason no group knows is shown
as it is, so a new kind of skip is never hidden.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class SkipGroup:
    name: str
    words: tuple[str, ...]  # any of these in the reason (case-insensitive)
    how: str  # what runs them


GROUPS = (
    SkipGroup("Container image", ("make test-container",), "make test-container (Docker)"),
    SkipGroup("Databricks", ("databricks", "stand-in"),
              "make test-databricks (the in-repo stand-in), or BRIDGE_TEST_DATABRICKS_HOST/_HTTP_PATH/_TOKEN/_CATALOG "
              "for a real workspace"),
    SkipGroup("SQL Server, what this server refuses", ("bulk load", "read_committed_snapshot", "bulk copy"),
              "a SQL Server that allows it (the CI workflow's SQL Server 2022 service)"),
    SkipGroup("SQL Server", ("bridge_test_mssql_url", "tds server", "sql server"),
              "set BRIDGE_TEST_MSSQL_URL=mssql://user:password@host:1433/database (tests/sqlserver/setup.py "
              "prepares a server)"),
    SkipGroup("mssql-python", ("mssql-python",), "pip install mssql-python, and on Debian/Ubuntu apt-get install "
              "libltdl7 libkrb5-3 libgssapi-krb5-2"),
    SkipGroup("Local Spark", ("spark", "java"), "install Java 17 and `pip install -e '.[spark]'` (make test does)"),
    SkipGroup("Long soak", ("bridge_stress_long",), "BRIDGE_STRESS_LONG=1 make test"),
)
OTHER = "Other"


def group_of(reason: str) -> SkipGroup | None:
    lowered = reason.lower()
    return next((g for g in GROUPS if any(word in lowered for word in g.words)), None)


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def summarize(reasons: list[str]) -> list[str]:
    """One line per group, the largest first: "  SQL Server (412): set BRIDGE_TEST_MSSQL_URL=…"."""
    counts: Counter[str] = Counter()
    how: dict[str, str] = {}
    for reason in reasons:
        group = group_of(reason)
        name = group.name if group else f"{OTHER}: {reason}"
        counts[name] += 1
        how[name] = group.how if group else "see the reason"
    return [f"  {name} ({count}): {how[name]}" for name, count in counts.most_common()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if isinstance(r, pytest.TestReport)]
    if not skipped:
        return
    terminalreporter.write_sep("-", f"{len(skipped)} skipped, by what they need and how to run them")
    for line in summarize([_reason(r) for r in skipped]):
        terminalreporter.write_line(line)
