"""The `target:` options of a sqlserver profile, turned into exactly what each driver's connect call receives.

Pure: no driver is imported and nothing touches the network, so a profile is checked (and every refusal
explained) before any connection is tried. Options read, all optional except host and database::

    driver            auto (default: mssql-python where it loads, else pymssql; see driver_choice)
                      | pymssql | mssql-python
    host, port        port defaults to 1433
    database
    user, password    SQL login (or the Entra ID user for ActiveDirectoryPassword)
    login_timeout     seconds to connect and sign in (default 30)
    timeout           query timeout in seconds (default 0: none)
    appname           pymssql only (default "bridge"); mssql-python always sends APP=MSSQL-Python
    tds_version       pymssql only
    packet_size       mssql-python only: TDS packet size in bytes (512..32767)
    encrypt           strict | mandatory (yes, true) | optional | no (false); default: the driver's own
    trust_server_certificate   true | false (yes | no)
    authentication    SqlPassword | ActiveDirectoryServicePrincipal | ActiveDirectoryDefault
                      | ActiveDirectoryMsi | ActiveDirectoryPassword (Entra ID: mssql-python only)
    client_id, client_secret, tenant_id    Entra ID identities (see below)
    access_token      a token already acquired (e.g. with azure-identity), mssql-python only

pymssql (FreeTDS 1.5, through ``pymssql.connect``):

- ``encrypt`` maps onto connect's ``encryption`` argument, whose values are FreeTDS's ``off``,
  ``request`` and ``require``: mandatory/yes/true -> ``require``, optional -> ``request`` (encrypt if
  the server can), no/false -> ``off``; absent -> not passed (FreeTDS's default, ``request``).
  ``strict`` (TDS 8.0) is refused: connect accepts no value for it.
- ``trust_server_certificate``: connect has no argument for it. FreeTDS checks the server's certificate
  (chain and host name) only when freetds.conf names a ``ca file``; otherwise it checks nothing. So
  ``true`` is accepted as a description of what happens anyway (a ``ca file`` in freetds.conf would
  still be used: connect cannot switch it off), and ``false`` is refused, since connect cannot make
  FreeTDS validate: the certificate is only validated through freetds.conf, or with mssql-python.
- Entra ID sign-in of any kind (``authentication`` other than SqlPassword, ``access_token``,
  ``client_id``, ``client_secret``, ``tenant_id``) is refused with a pointer to mssql-python.

mssql-python (Microsoft's driver; ODBC Driver 18 inside its wheel):

- The connection string uses only keywords its parser allows: Server ("host,port"), Database, UID,
  PWD, Authentication, Encrypt, TrustServerCertificate. APP is reserved by the driver (it sends
  APP=MSSQL-Python and rejects another), so an explicit ``appname`` is refused; so is ``tds_version``.
  Values are escaped exactly as its ``_ConnectionStringBuilder`` does: a value holding ``;``, ``{``,
  ``}``, ``=`` or a space is wrapped in braces with each ``}`` doubled.
- ``encrypt``: strict -> Strict, mandatory/yes/true -> Mandatory, optional/no/false -> Optional
  (Optional is ODBC's "no": the login is encrypted, the data only if the server insists); absent ->
  the driver's default (Mandatory). ``trust_server_certificate`` -> TrustServerCertificate=Yes/No;
  ``true`` with ``strict`` is refused, since the driver always validates the certificate under TDS 8.
- ``authentication``:

  - absent / SqlPassword: UID=user, PWD=password (both required).
  - ActiveDirectoryServicePrincipal: UID=client_id, PWD=client_secret (both required); the ODBC
    driver signs in itself. There is no tenant keyword: the driver takes the tenant from the
    server's sign-in (STS) URL. ``tenant_id`` is accepted for the record but not sent.
  - ActiveDirectoryDefault: no UID/PWD; mssql-python asks azure-identity's DefaultAzureCredential,
    which reads AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET etc. from the environment.
  - ActiveDirectoryMsi: a managed identity through azure-identity; ``client_id`` names a
    user-assigned identity (UID=client_id); no password.
  - ActiveDirectoryPassword: UID=user, PWD=password (both required), signed in by the ODBC driver.
    (Microsoft deprecates this method; it fails for accounts under multi-factor sign-in.)
  - ``access_token``: no Authentication, UID or PWD; ``attrs_before = {1256: struct}``, the struct
    that ``mssql_python.auth.AADAuth.get_token_struct`` builds (4-byte little-endian length of the
    token's UTF-16-LE bytes, then those bytes). Not combined with ``authentication``.

  An option that a method does not use is refused, never dropped silently.
- ``kwargs`` are ``autocommit=True`` and ``timeout=login_timeout`` (mssql-python's ``timeout`` is the
  login timeout). Its query timeout is not a connect argument: set ``connection.timeout =
  spec.query_timeout`` after connecting.

Secrets (password, client_secret, access_token) never appear in ``repr(spec)``, in ``spec.where`` or
in a ConfigError raised here; ``spec.scrub`` takes them out of driver messages.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge_cli.errors import ConfigError
from bridge_cli.targets.sqlserver.driver_choice import AUTO, MSSQL_PYTHON, DriverChoice, choose_driver

DRIVERS = ("pymssql", "mssql-python")
SQL_PASSWORD = "SqlPassword"
ENTRA_AUTHENTICATIONS = (
    "ActiveDirectoryServicePrincipal",
    "ActiveDirectoryDefault",
    "ActiveDirectoryMsi",
    "ActiveDirectoryPassword",
)
AUTHENTICATIONS = (SQL_PASSWORD, *ENTRA_AUTHENTICATIONS)
SQL_COPT_SS_ACCESS_TOKEN = 1256  # mssql_python.constants.ConstantsDDBC.SQL_COPT_SS_ACCESS_TOKEN

SECRET_KEYS = ("password", "client_secret", "access_token")
ENTRA_KEYS = ("access_token", "client_id", "client_secret", "tenant_id")
ENCRYPT_VALUES = ("strict", "mandatory", "yes", "true", "optional", "no", "false")
# encrypt, normalised to one of four levels
_ENCRYPT_LEVEL = {
    "strict": "strict",
    "mandatory": "mandatory", "yes": "mandatory", "true": "mandatory",
    "optional": "optional",
    "no": "off", "false": "off",
}
# pymssql.connect(encryption=...): the FreeTDS levels pymssql accepts ('default', 'off', 'request', 'require')
_PYMSSQL_ENCRYPTION = {"mandatory": "require", "optional": "request", "off": "off"}
# ODBC Driver 18's Encrypt values (Mandatory = yes, Optional = no, Strict = TDS 8.0)
_ODBC_ENCRYPT = {"strict": "Strict", "mandatory": "Mandatory", "optional": "Optional", "off": "Optional"}
_FLAG_TEXT = {"true": True, "yes": True, "false": False, "no": False}

# For each mssql-python sign-in: the identity options it needs, and those it may take.
_IDENTITY_KEYS = ("user", "password", "client_id", "client_secret", "tenant_id")
_NEEDS: dict[str, tuple[str, ...]] = {
    SQL_PASSWORD: ("user", "password"),
    "ActiveDirectoryServicePrincipal": ("client_id", "client_secret"),
    "ActiveDirectoryDefault": (),
    "ActiveDirectoryMsi": (),
    "ActiveDirectoryPassword": ("user", "password"),
    "access_token": (),
}
_TAKES: dict[str, tuple[str, ...]] = {
    SQL_PASSWORD: ("user", "password"),
    "ActiveDirectoryServicePrincipal": ("client_id", "client_secret", "tenant_id"),
    "ActiveDirectoryDefault": (),
    "ActiveDirectoryMsi": ("client_id",),
    "ActiveDirectoryPassword": ("user", "password"),
    "access_token": (),
}
_UNUSED_HINT = {
    "ActiveDirectoryDefault": " (DefaultAzureCredential reads AZURE_CLIENT_ID, AZURE_TENANT_ID, "
    "AZURE_CLIENT_SECRET from the environment)",
    "ActiveDirectoryMsi": " (client_id names a user-assigned identity; a managed identity has no secret)",
    "access_token": " (the token already says who signs in)",
}


@dataclass(frozen=True, repr=False)
class ConnectSpec:
    """What one driver's connect call receives. repr never shows a secret."""

    driver: str  # "pymssql" | "mssql-python"
    # pymssql.connect(**kwargs); for mssql-python: the other kwargs of mssql_python.connect
    kwargs: dict[str, Any]
    connection_string: str | None  # mssql-python only (ODBC style "Server=...;Database=...;...")
    attrs_before: dict[int, Any] | None  # mssql-python only: {1256: token struct} for access_token
    secrets: tuple[str, ...]  # every secret value in play (and its escaped form), for scrubbing messages
    where: str  # "host:port" for messages
    database: str = ""
    authentication: str = SQL_PASSWORD  # the sign-in method, or "access_token"
    query_timeout: int = 0  # seconds; pymssql has it in kwargs, mssql-python needs connection.timeout = it
    choice: DriverChoice | None = None  # which driver and why (`auto` or named)

    def __repr__(self) -> str:
        return f"ConnectSpec({self.driver} {self.where}/{self.database}, auth={self.authentication})"

    def scrub(self, text: str) -> str:
        """`text` with every secret in play replaced by ***."""
        return _scrub(text, self.secrets)


def connect_spec(options: Mapping[str, Any], source: str, choice: DriverChoice | None = None) -> ConnectSpec:
    """`source` names the file/profile section for messages, e.g. "bridge.yaml: profiles.prod.target".
    `choice`: the driver already chosen; without it, `driver: auto` asks whether mssql-python loads
    (the only part of this module that touches anything: see driver_choice)."""
    secrets = _secrets(options)
    try:
        if choice is None:
            choice = choose_driver(options, source)
        return _connect_spec(options, source, secrets, choice)
    except ConfigError as exc:
        message = str(exc)
        scrubbed = _scrub(message, secrets)
        if scrubbed != message:
            raise ConfigError(scrubbed) from None
        raise


# -- building ----------------------------------------------------------------------------------


def _connect_spec(
    options: Mapping[str, Any], source: str, secrets: tuple[str, ...], choice: DriverChoice
) -> ConnectSpec:
    driver = choice.driver
    host = _text(options, "host", source)
    database = _text(options, "database", source)
    missing = [name for name, value in (("host", host), ("database", database)) if not value]
    if missing or host is None or database is None:
        raise ConfigError(f"{source}: missing {', '.join(missing)} for kind sqlserver")
    port = _integer(options, "port", 1433, source, low=1, high=65535)
    login_timeout = _integer(options, "login_timeout", 30, source)
    query_timeout = _integer(options, "timeout", 0, source)
    encrypt = _encrypt(options, source)
    trust = _flag(options, "trust_server_certificate", source)
    authentication = _authentication(options, source)
    pymssql_could_run = (authentication in (None, SQL_PASSWORD) and _text(options, "access_token", source) is None
                         and encrypt != "strict" and trust is not False)
    if choice.requested == AUTO and driver == MSSQL_PYTHON and pymssql_could_run:
        # A profile pymssql could run, naming no driver, means on mssql-python what it has always
        # meant on pymssql (FreeTDS): the login is encrypted, the data when the server requires it,
        # and no certificate is validated. mssql-python's own defaults (Mandatory, validated) would
        # refuse servers pymssql reaches; `trust_server_certificate: false` asks for validation.
        encrypt = "optional" if encrypt is None else encrypt
        trust = True if trust is None else trust
    where = f"{host}:{port}"

    if driver == "pymssql":
        kwargs = _pymssql_kwargs(options, source, host, port, database, login_timeout, query_timeout,
                                 encrypt, trust, authentication)
        return ConnectSpec(driver=driver, kwargs=kwargs, connection_string=None, attrs_before=None, secrets=secrets,
                           where=where, database=database, authentication=SQL_PASSWORD, query_timeout=query_timeout,
                           choice=choice)

    for key, what in (("appname", "mssql-python always sends APP=MSSQL-Python and refuses another"),
                      ("tds_version", "it is a pymssql (FreeTDS) setting; mssql-python negotiates TDS itself")):
        if _text(options, key, source) is not None:
            raise ConfigError(f"{source}.{key}: not used with `driver: mssql-python`: {what}")
    if encrypt == "strict" and trust:
        raise ConfigError(
            f"{source}.trust_server_certificate: true has no effect with encrypt: strict "
            "(under TDS 8 the driver always validates the server's certificate); remove one"
        )
    token = _text(options, "access_token", source)
    if token is not None and authentication is not None:
        raise ConfigError(
            f"{source}: access_token and authentication: {authentication} are two ways to sign in; give one"
        )
    method = "access_token" if token is not None else (authentication or SQL_PASSWORD)
    identity = _identity(options, source, method, "`driver: mssql-python`" if choice.requested == MSSQL_PYTHON
                         else "mssql-python (the driver `auto` chose)")

    pairs: list[tuple[str, str]] = [("Server", f"{host},{port}"), ("Database", database)]
    attrs_before: dict[int, Any] | None = None
    if method == "access_token" and token is not None:
        attrs_before = {SQL_COPT_SS_ACCESS_TOKEN: token_struct(token)}
    elif method in (SQL_PASSWORD, "ActiveDirectoryPassword"):
        pairs += [("UID", identity["user"]), ("PWD", identity["password"])]
    elif method == "ActiveDirectoryServicePrincipal":
        pairs += [("UID", identity["client_id"]), ("PWD", identity["client_secret"])]
    elif method == "ActiveDirectoryMsi" and "client_id" in identity:
        pairs.append(("UID", identity["client_id"]))
    if method in ENTRA_AUTHENTICATIONS:
        pairs.append(("Authentication", method))
    if encrypt is not None:
        pairs.append(("Encrypt", _ODBC_ENCRYPT[encrypt]))
    if trust is not None:
        pairs.append(("TrustServerCertificate", "Yes" if trust else "No"))
    packet_size = _integer(options, "packet_size", 0, source)
    if packet_size:  # TDS packet size in bytes (512..32767); the driver's default otherwise
        if not 512 <= packet_size <= 32767:
            raise ConfigError(f"{source}.packet_size: must be between 512 and 32767, got {packet_size}")
        pairs.append(("PacketSize", str(packet_size)))
    return ConnectSpec(
        driver=driver,
        kwargs={"autocommit": True, "timeout": login_timeout},
        connection_string=";".join(f"{key}={odbc_value(value)}" for key, value in pairs),
        attrs_before=attrs_before,
        secrets=secrets,
        where=where,
        database=database,
        authentication=method,
        query_timeout=query_timeout,
        choice=choice,
    )


def _pymssql_kwargs(
    options: Mapping[str, Any], source: str, host: str, port: int, database: str, login_timeout: int,
    query_timeout: int, encrypt: str | None, trust: bool | None, authentication: str | None,
) -> dict[str, Any]:
    entra = [key for key in ENTRA_KEYS if _text(options, key, source) is not None]
    if authentication not in (None, SQL_PASSWORD) or entra:
        what = f"authentication: {authentication}" if authentication not in (None, SQL_PASSWORD) else ", ".join(entra)
        raise ConfigError(
            f"{source}: Entra ID sign-in ({what}) needs `driver: mssql-python`; pymssql (FreeTDS) cannot do it"
        )
    kwargs: dict[str, Any] = {
        "server": host,
        "port": str(port),
        "user": _text(options, "user", source),
        "password": _text(options, "password", source),
        "database": database,
        "login_timeout": login_timeout,
        "timeout": query_timeout,
        "appname": _text(options, "appname", source) or "bridge",
        "autocommit": True,  # transactions are explicit and short
        "use_datetime2": True,  # microseconds survive parameter rendering
    }
    tds_version = _text(options, "tds_version", source)
    if tds_version is not None:
        kwargs["tds_version"] = tds_version
    if encrypt == "strict":
        raise ConfigError(
            f"{source}.encrypt: strict (TDS 8 strict encryption) is not possible with pymssql (FreeTDS): "
            "its connect() takes only off, request, require; use `driver: mssql-python`"
        )
    if encrypt is not None:
        kwargs["encryption"] = _PYMSSQL_ENCRYPTION[encrypt]
    # pymssql.connect() has no certificate options. FreeTDS validates the server's certificate only when
    # freetds.conf sets `ca file` (then chain and host name); without it nothing is checked. So `true`
    # describes what happens anyway and passes nothing; `false` cannot be honoured from here.
    if trust is False:
        raise ConfigError(
            f"{source}.trust_server_certificate: false cannot be honoured by pymssql (FreeTDS): its connect() "
            "cannot make it validate the server's certificate (only a `ca file` in freetds.conf does); "
            "remove the option, or use `driver: mssql-python` for a validated certificate"
        )
    return kwargs


def _identity(options: Mapping[str, Any], source: str, method: str, driver: str) -> dict[str, str]:
    """The identity options `method` uses, checked: none missing, none given that it would not use."""
    given = {key: value for key in _IDENTITY_KEYS if (value := _text(options, key, source)) is not None}
    label = "access_token" if method == "access_token" else f"authentication: {method}"
    unused = [key for key in given if key not in _TAKES[method]]
    if unused:
        verb = "is" if len(unused) == 1 else "are"
        raise ConfigError(
            f"{source}: {', '.join(unused)} {verb} not used with {label}{_UNUSED_HINT.get(method, '')}"
        )
    missing = [key for key in _NEEDS[method] if key not in given]
    if missing:
        what = "a SQL login" if method == SQL_PASSWORD else label
        raise ConfigError(f"{source}: missing {', '.join(missing)} for {what} with {driver}")
    return given


def token_struct(token: str) -> bytes:
    """The SQL_COPT_SS_ACCESS_TOKEN value, as mssql_python.auth.AADAuth.get_token_struct builds it."""
    data = token.encode("utf-16-le")
    return struct.pack(f"<I{len(data)}s", len(data), data)


def odbc_value(value: str) -> str:
    """A connection-string value escaped as mssql_python's _ConnectionStringBuilder._escape_value does."""
    if value and any(ch in value for ch in ";{}= "):
        return "{" + value.replace("}", "}}") + "}"
    return value


# -- reading options ---------------------------------------------------------------------------


def _text(options: Mapping[str, Any], key: str, source: str) -> str | None:
    """The option as text; None when absent or empty (an unset ${VAR} expands to "")."""
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, (Mapping, list, tuple, set)):
        raise ConfigError(f"{source}.{key}: expected a single value, got a {type(value).__name__}")
    text = str(value)
    if "\x00" in text:
        raise ConfigError(f"{source}.{key}: contains a NUL character")
    return text or None


def _integer(
    options: Mapping[str, Any], key: str, default: int, source: str, low: int = 0, high: int | None = None
) -> int:
    value = options.get(key)
    if value is None or value == "":
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{source}.{key}: {value!r} is not an integer {bounds}")
    return number


def _flag(options: Mapping[str, Any], key: str, source: str) -> bool | None:
    value = options.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _FLAG_TEXT:
        return _FLAG_TEXT[value.strip().lower()]
    raise ConfigError(f"{source}.{key}: {value!r} is not one of true, false, yes, no")


def _encrypt(options: Mapping[str, Any], source: str) -> str | None:
    value = options.get("encrypt")
    if value is None or value == "":
        return None
    if isinstance(value, bool):  # YAML reads yes/no/true/false as booleans
        return "mandatory" if value else "off"
    if isinstance(value, str) and value.strip().lower() in _ENCRYPT_LEVEL:
        return _ENCRYPT_LEVEL[value.strip().lower()]
    raise ConfigError(f"{source}.encrypt: {value!r} is not one of {', '.join(ENCRYPT_VALUES)}")


def _authentication(options: Mapping[str, Any], source: str) -> str | None:
    """The sign-in method in its canonical spelling (case does not matter), or None when absent."""
    value = _text(options, "authentication", source)
    if value is None:
        return None
    for name in AUTHENTICATIONS:
        if value.strip().lower() == name.lower():
            return name
    raise ConfigError(f"{source}.authentication: {value!r} is not one of {', '.join(AUTHENTICATIONS)}")


def _secrets(options: Mapping[str, Any]) -> tuple[str, ...]:
    """Every secret given, and its connection-string form where escaping changes it."""
    found: list[str] = []
    for key in SECRET_KEYS:
        value = options.get(key)
        if value is None or isinstance(value, (Mapping, list, tuple, set)):
            continue
        text = str(value)
        for form in (text, odbc_value(text)):
            if form and form not in found:
                found.append(form)
    return tuple(found)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: a secret may hold another
        if secret:
            text = text.replace(secret, "***")
    return text
