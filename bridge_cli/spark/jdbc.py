"""The JDBC side of a Spark staging run: driver class, URL and login properties for the profile's
SQL Server target.

Two drivers: `microsoft` (mssql-jdbc, bundled in the Databricks Runtime) and `jtds` (Debian's
libjtds-java; what runs here). The URL carries only host, port and database, each checked against a
strict pattern (a `;` would add driver properties); everything else goes as a connection property.
The password is never in the URL nor in these properties: the job adds it itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge_cli.errors import ConfigError

JDBC_DRIVERS = ("microsoft", "jtds")
DRIVER_CLASS = {
    "microsoft": "com.microsoft.sqlserver.jdbc.SQLServerDriver",
    "jtds": "net.sourceforge.jtds.jdbc.Driver",
}
_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
# The target's `encrypt:` level as each driver says it. jTDS: ssl=off|request|require; absent is
# `request`, as FreeTDS does for the single-process path (the TDS server here refuses jTDS logins
# without it). Microsoft: encrypt=true|false|strict; absent is the driver's own default.
_JTDS_SSL = {"strict": None, "mandatory": "require", "yes": "require", "true": "require",
             "optional": "request", "no": "off", "false": "off", None: "request"}
_MS_ENCRYPT = {"strict": "strict", "mandatory": "true", "yes": "true", "true": "true",
               "optional": "false", "no": "false", "false": "false"}
# Column types a driver cannot carry into a stage, and why (measured or documented).
_UNCARRIED = {
    # Measured on the TDS server here: a value over 4,000 characters goes as NTEXT and the batch is
    # refused ("Data type 0x63 has an invalid data length", error 8016).
    "jtds": "jTDS cannot carry (MAX) columns: it sends long values as NTEXT",
}


@dataclass(frozen=True, repr=False)
class JdbcTarget:
    driver: str            # microsoft | jtds
    driver_class: str
    url: str
    properties: dict[str, str]  # user and login options; never the password
    password: str | None

    def __repr__(self) -> str:  # never show the password
        return f"JdbcTarget({self.driver} {self.url})"

    def refuses(self, column_types: list[str]) -> str | None:
        """Why this driver cannot stage these target column types, or None."""
        why = _UNCARRIED.get(self.driver)
        if why is None:
            return None
        wide = [t for t in column_types if "(max)" in t.lower().replace(" ", "")]
        if wide:
            return f"{why} ({', '.join(sorted(set(wide)))})"
        return None


def _plain(value: Any, what: str, source: str) -> str:
    text = str(value)
    if not _PLAIN.fullmatch(text):
        raise ConfigError(f"{source}: {what} {text!r} cannot go in a JDBC URL (letters, digits, '.', '_', '-' only)")
    return text


def jdbc_target(
    target: Mapping[str, Any], target_source: str, spark: Mapping[str, Any], spark_source: str,
    default_driver: str,
) -> JdbcTarget:
    """`target` is the profile's sqlserver options; `spark` its spark section's."""
    driver = str(spark.get("jdbc_driver") or default_driver).lower()
    if driver not in JDBC_DRIVERS:
        raise ConfigError(f"{spark_source}.jdbc_driver: {driver!r} is not one of {', '.join(JDBC_DRIVERS)}")
    authentication = target.get("authentication")
    if (authentication not in (None, "SqlPassword")) or target.get("access_token"):
        raise ConfigError(
            f"{spark_source}: Spark staging signs in to SQL Server with a SQL login (user and password); "
            f"{target_source} uses {authentication or 'an access token'}"
        )
    host = _plain(target.get("host"), "host", target_source)
    database = _plain(target.get("database"), "database", target_source)
    port = _plain(target.get("port") or 1433, "port", target_source)
    url = str(spark.get("jdbc_url") or "")
    if not url:
        url = (f"jdbc:jtds:sqlserver://{host}:{port}/{database}" if driver == "jtds"
               else f"jdbc:sqlserver://{host}:{port};databaseName={database}")
    properties: dict[str, str] = {}
    if target.get("user"):
        properties["user"] = str(target["user"])
    encrypt = target.get("encrypt")
    level = None if encrypt is None else str(encrypt).lower()
    trust = str(target.get("trust_server_certificate", "")).lower()
    if driver == "jtds":
        ssl = _JTDS_SSL.get(level)
        if ssl is None:
            raise ConfigError(
                f"{spark_source}: jTDS cannot speak encrypt: {encrypt} (TDS 8); use jdbc_driver: microsoft"
            )
        properties["ssl"] = ssl
        if target.get("login_timeout"):
            properties["loginTimeout"] = str(target["login_timeout"])
    else:
        if level is not None:
            properties["encrypt"] = _MS_ENCRYPT[level]
        if trust in ("true", "yes"):
            properties["trustServerCertificate"] = "true"
        if target.get("login_timeout"):
            properties["loginTimeout"] = str(target["login_timeout"])
    extra = spark.get("jdbc_properties") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"{spark_source}.jdbc_properties: must be a mapping of JDBC connection properties")
    for key, value in extra.items():
        if str(key).lower() == "password":
            raise ConfigError(f"{spark_source}.jdbc_properties: the password comes from the target section, not here")
        properties[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    password = target.get("password")
    return JdbcTarget(driver, DRIVER_CLASS[driver], url, properties, None if password is None else str(password))
