"""Prepare a SQL Server for bridge's tests, and print the BRIDGE_TEST_MSSQL_URL that reaches it.

    MSSQL_ADMIN_URL='mssql://sa:Admin-Pass-1@127.0.0.1:1433/master' \\
        python tests/sqlserver/setup.py [--database bridge_test] [--login bridge] [--password …] [--wait 120]

It waits for the server to accept a login (a fresh SQL Server container takes 10-30 s), then makes,
each only if missing: the database; a SQL login that owns it (the tests create and drop schemas and
tables) with ALTER ANY CONNECTION and VIEW SERVER STATE (the connection-fault tests KILL a session;
on Babelfish, which has no server-level GRANT, sysadmin); READ_COMMITTED_SNAPSHOT, which one test
needs (where the server refuses, e.g. Babelfish, it says so and goes on); and, signed in as that
login, the `bridge` schema the ledger lives in. Run twice, it changes nothing. The last line of its output is
`BRIDGE_TEST_MSSQL_URL=mssql://…`, ready for `>> "$GITHUB_ENV"` or `export`.

The CI workflow runs it against SQL Server 2022; the TDS server built here (Babelfish) passes it too.
Names are checked and bracket-quoted; the password travels as a parameter where T-SQL allows one,
and CREATE LOGIN (which takes no parameter) gets it as an escaped literal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlparse

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise SystemExit(f"setup: {what} {value!r}: use letters, digits and _ (at most 64)")
    return "[" + value + "]"


def _literal(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


def _connect(admin: dict[str, Any], database: str, wait: float) -> Any:
    import pymssql

    deadline = time.monotonic() + wait
    while True:
        try:
            return pymssql.connect(server=admin["host"], port=str(admin["port"]), user=admin["user"],
                                   password=admin["password"], database=database, autocommit=True, login_timeout=10)
        except pymssql.Error as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"setup: cannot sign in to {admin['host']}:{admin['port']} as {admin['user']}: "
                                 f"{' '.join(str(exc).split())[:300]}") from None
            time.sleep(2)


def _admin_url(url: str) -> dict[str, Any]:
    parts = urlparse(url)
    if parts.scheme != "mssql" or not parts.hostname or not parts.username:
        raise SystemExit("setup: MSSQL_ADMIN_URL must look like mssql://sa:password@host:1433/master")
    return {"host": parts.hostname, "port": parts.port or 1433, "user": unquote(parts.username),
            "password": unquote(parts.password or ""), "query": dict(parse_qsl(parts.query))}


def _one(cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    cursor.execute(sql, params) if params else cursor.execute(sql)
    row = cursor.fetchone()
    return row[0] if row else None


def prepare(admin: dict[str, Any], database: str, login: str, password: str, wait: float) -> list[str]:
    """Make what is missing; return one line per step saying what it found or did."""
    done: list[str] = []
    db, who = _name(database, "database"), _name(login, "login")
    connection = _connect(admin, "master", wait)
    cursor = connection.cursor()
    if _one(cursor, "SELECT COUNT(*) FROM sys.databases WHERE name = %s", (database,)):
        done.append(f"database {database}: exists")
    else:
        cursor.execute(f"CREATE DATABASE {db}")
        done.append(f"database {database}: created")
    if _one(cursor, "SELECT COUNT(*) FROM sys.server_principals WHERE name = %s", (login,)):
        done.append(f"login {login}: exists (its password is not changed)")
    else:
        cursor.execute(f"CREATE LOGIN {who} WITH PASSWORD = {_literal(password)}")
        done.append(f"login {login}: created")
    # The connection-fault tests KILL a session and read sys.dm_exec_requests: two server
    # permissions. Babelfish has no GRANT at server level; there its sysadmin role is the way.
    try:
        cursor.execute(f"GRANT ALTER ANY CONNECTION, VIEW SERVER STATE TO {who}")
        done.append(f"login {login}: ALTER ANY CONNECTION, VIEW SERVER STATE")
    except Exception as exc:
        if not _one(cursor, "SELECT IS_SRVROLEMEMBER('sysadmin', %s)", (login,)):
            cursor.execute(f"ALTER SERVER ROLE sysadmin ADD MEMBER {who}")
        done.append(f"login {login}: sysadmin (the server refused the GRANT: {_short(exc)})")
    # The tests create and drop schemas and tables: the login owns the database (it is dbo there).
    # This works on SQL Server and Babelfish alike, where db_owner membership does not.
    if _one(cursor, "SELECT SUSER_SNAME(owner_sid) FROM sys.databases WHERE name = %s", (database,)) == login:
        done.append(f"database {database}: owned by {login}")
    else:
        cursor.execute(f"ALTER AUTHORIZATION ON DATABASE::{db} TO {who}")
        done.append(f"database {database}: now owned by {login}")
    try:
        cursor.execute(f"ALTER DATABASE {db} SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE")
        done.append("READ_COMMITTED_SNAPSHOT: on")
    except Exception as exc:  # Babelfish has no ALTER DATABASE: the one test that needs it skips
        done.append(f"READ_COMMITTED_SNAPSHOT: not set, the server refused: {_short(exc)}")
    connection.close()

    connection = _connect({**admin, "user": login, "password": password}, database, wait)
    cursor = connection.cursor()
    if _one(cursor, "SELECT COUNT(*) FROM sys.schemas WHERE name = %s", ("bridge",)):
        done.append("schema bridge: exists")
    else:
        cursor.execute("CREATE SCHEMA [bridge]")
        done.append(f"schema bridge: created, as {login}")
    connection.close()
    return done


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def test_url(admin: dict[str, Any], database: str, login: str, password: str) -> str:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in admin["query"].items())
    return (f"mssql://{quote(login)}:{quote(password, safe='')}@{admin['host']}:{admin['port']}/{database}"
            + (f"?{query}" if query else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", default="bridge_test")
    parser.add_argument("--login", default="bridge")
    parser.add_argument("--password", default=os.environ.get("BRIDGE_TEST_MSSQL_PASSWORD", "Bridge-Test-1"))
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the server to take a login")
    args = parser.parse_args(argv)
    url = os.environ.get("MSSQL_ADMIN_URL")
    if not url:
        print("setup: set MSSQL_ADMIN_URL=mssql://sa:password@host:1433/master", file=sys.stderr)
        return 2
    admin = _admin_url(url)
    for line in prepare(admin, args.database, args.login, args.password, args.wait):
        print(f"setup: {line}", file=sys.stderr)
    print(f"BRIDGE_TEST_MSSQL_URL={test_url(admin, args.database, args.login, args.password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
