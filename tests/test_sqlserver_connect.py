"""connect_options: a profile's `target:` section -> exactly what pymssql / mssql-python connect with.

No server and no network: every test but the last two only builds arguments. Those two call a driver's
connect against 127.0.0.1 port 1 (nothing listens there) to show the arguments are accepted and the
failure carries no secret. The Entra ID tests contact no tenant: they check the connection string and
token struct that would be sent.
"""

from __future__ import annotations

import ast
import importlib.util
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from bridge_cli.errors import ConfigError
from bridge_cli.targets.sqlserver import connect_options
from bridge_cli.targets.sqlserver.connect_options import (
    DRIVERS,
    ENTRA_AUTHENTICATIONS,
    SQL_COPT_SS_ACCESS_TOKEN,
    ConnectSpec,
    connect_spec,
    odbc_value,
    token_struct,
)

SOURCE = "bridge.yaml: profiles.prod.target"
HOST = "sql.example.com"
PASSWORD = "Pa55-word!"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "sp~secret.value_42"
TENANT_ID = "99999999-8888-7777-6666-555555555555"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2RhdGFiYXNlLndpbmRvd3MubmV0LyJ9.c2lnbmF0dXJl"
HAS_MSSQL_PYTHON = importlib.util.find_spec("mssql_python") is not None


def spec_of(**options: Any) -> ConnectSpec:
    """pymssql unless named: `driver: auto` (the default) is tests/test_driver_choice.py's."""
    return connect_spec({"host": HOST, "database": "Sales", "driver": "pymssql", **options}, SOURCE)


def mp(**options: Any) -> ConnectSpec:
    return spec_of(driver="mssql-python", **options)


def refusal(**options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        spec_of(**options)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(SOURCE), message
    return message


# -- pymssql -------------------------------------------------------------------------------------


def test_pymssql_gets_the_kwargs_bridge_always_used() -> None:
    spec = spec_of(user="loader", password=PASSWORD)
    assert spec.driver == "pymssql" == DRIVERS[0]
    assert spec.kwargs == {
        "server": HOST, "port": "1433", "user": "loader", "password": PASSWORD, "database": "Sales",
        "login_timeout": 30, "timeout": 0, "appname": "bridge", "autocommit": True, "use_datetime2": True,
    }
    assert spec.connection_string is None and spec.attrs_before is None
    assert spec.where == f"{HOST}:1433" and spec.query_timeout == 0


def test_pymssql_options_and_text_numbers_from_environment_variables() -> None:
    spec = spec_of(port="14330", login_timeout="5", timeout=60, appname="nightly", tds_version="7.4",
                   user="loader", password=PASSWORD, authentication="sqlpassword")
    assert spec.kwargs["port"] == "14330"
    assert (spec.kwargs["login_timeout"], spec.kwargs["timeout"], spec.query_timeout) == (5, 60, 60)
    assert (spec.kwargs["appname"], spec.kwargs["tds_version"]) == ("nightly", "7.4")
    assert spec.where == f"{HOST}:14330"


@pytest.mark.parametrize(("encrypt", "encryption"), [
    ("mandatory", "require"), ("yes", "require"), ("true", "require"), (True, "require"), ("Mandatory", "require"),
    ("optional", "request"), ("no", "off"), ("false", "off"), (False, "off"),
])
def test_pymssql_encrypt_maps_to_freetds_encryption(encrypt: Any, encryption: str) -> None:
    assert spec_of(encrypt=encrypt).kwargs["encryption"] == encryption


def test_pymssql_without_encrypt_leaves_freetds_default() -> None:
    assert "encryption" not in spec_of().kwargs
    assert "encryption" not in spec_of(encrypt="").kwargs  # an unset ${VAR}


def test_pymssql_refuses_strict_encryption_and_points_to_mssql_python() -> None:
    message = refusal(encrypt="strict")
    assert f"{SOURCE}.encrypt" in message
    assert "pymssql (FreeTDS)" in message and "TDS 8" in message and "`driver: mssql-python`" in message


def test_pymssql_trust_server_certificate_true_is_what_freetds_does_anyway() -> None:
    assert spec_of(trust_server_certificate=True).kwargs == spec_of().kwargs
    assert spec_of(trust_server_certificate="yes", encrypt="yes").kwargs == spec_of(encrypt="yes").kwargs


def test_pymssql_refuses_trust_server_certificate_false_it_cannot_honour() -> None:
    message = refusal(trust_server_certificate="false")
    assert f"{SOURCE}.trust_server_certificate" in message
    assert "ca file" in message and "mssql-python" in message


@pytest.mark.parametrize("authentication", ENTRA_AUTHENTICATIONS)
def test_pymssql_refuses_entra_sign_in_with_the_hint(authentication: str) -> None:
    message = refusal(authentication=authentication, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert message == (
        f"{SOURCE}: Entra ID sign-in (authentication: {authentication}) needs `driver: mssql-python`; "
        "pymssql (FreeTDS) cannot do it"
    )


@pytest.mark.parametrize("key", ["access_token", "client_id", "client_secret", "tenant_id"])
def test_pymssql_refuses_entra_options_without_authentication(key: str) -> None:
    message = refusal(**{key: TOKEN})
    assert f"Entra ID sign-in ({key}) needs `driver: mssql-python`" in message
    assert TOKEN not in message


# -- mssql-python: the connection string of each sign-in ------------------------------------------


def test_mssql_python_sql_login_connection_string() -> None:
    spec = mp(user="loader", password=PASSWORD, login_timeout=7, timeout=90)
    assert spec.connection_string == f"Server={HOST},1433;Database=Sales;UID=loader;PWD={PASSWORD}"
    assert spec.kwargs == {"autocommit": True, "timeout": 7}
    assert spec.attrs_before is None and spec.query_timeout == 90
    assert spec.authentication == "SqlPassword"
    assert mp(user="loader", password=PASSWORD, authentication="SqlPassword").connection_string == spec.connection_string


def test_mssql_python_sql_login_needs_user_and_password() -> None:
    message = refusal(driver="mssql-python", user="loader")
    assert "missing password for a SQL login" in message


def test_entra_service_principal_connection_string_sent_no_tenant_contacted() -> None:
    spec = mp(authentication="ActiveDirectoryServicePrincipal", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
              tenant_id=TENANT_ID)
    assert spec.connection_string == (
        f"Server={HOST},1433;Database=Sales;UID={CLIENT_ID};PWD={CLIENT_SECRET};"
        "Authentication=ActiveDirectoryServicePrincipal"
    )
    assert TENANT_ID not in (spec.connection_string or "")  # the driver takes the tenant from the server
    assert spec.attrs_before is None and spec.authentication == "ActiveDirectoryServicePrincipal"


def test_entra_service_principal_missing_secret_named_no_tenant_contacted() -> None:
    message = refusal(driver="mssql-python", authentication="ActiveDirectoryServicePrincipal", client_id=CLIENT_ID)
    assert message == (
        f"{SOURCE}: missing client_secret for authentication: ActiveDirectoryServicePrincipal "
        "with `driver: mssql-python`"
    )


def test_entra_default_connection_string_sent_no_tenant_contacted() -> None:
    spec = mp(authentication="activedirectorydefault")
    assert spec.connection_string == f"Server={HOST},1433;Database=Sales;Authentication=ActiveDirectoryDefault"
    assert repr(spec) == f"ConnectSpec(mssql-python {HOST}:1433/Sales, auth=ActiveDirectoryDefault)"


def test_entra_default_refuses_user_and_password_no_tenant_contacted() -> None:
    message = refusal(driver="mssql-python", authentication="ActiveDirectoryDefault", user="u", password=PASSWORD)
    assert "user, password are not used with authentication: ActiveDirectoryDefault" in message
    assert "AZURE_CLIENT_ID" in message and PASSWORD not in message


def test_entra_managed_identity_connection_strings_sent_no_tenant_contacted() -> None:
    system = mp(authentication="ActiveDirectoryMsi")
    assert system.connection_string == f"Server={HOST},1433;Database=Sales;Authentication=ActiveDirectoryMsi"
    user_assigned = mp(authentication="ActiveDirectoryMsi", client_id=CLIENT_ID)
    assert user_assigned.connection_string == (
        f"Server={HOST},1433;Database=Sales;UID={CLIENT_ID};Authentication=ActiveDirectoryMsi"
    )
    message = refusal(driver="mssql-python", authentication="ActiveDirectoryMsi", client_secret=CLIENT_SECRET)
    assert "client_secret is not used with authentication: ActiveDirectoryMsi" in message


def test_entra_password_connection_string_sent_no_tenant_contacted() -> None:
    spec = mp(authentication="ActiveDirectoryPassword", user="loader@example.com", password=PASSWORD)
    assert spec.connection_string == (
        f"Server={HOST},1433;Database=Sales;UID=loader@example.com;PWD={PASSWORD};"
        "Authentication=ActiveDirectoryPassword"
    )
    message = refusal(driver="mssql-python", authentication="ActiveDirectoryPassword", user="loader@example.com")
    assert "missing password for authentication: ActiveDirectoryPassword" in message


def test_entra_access_token_struct_sent_no_tenant_contacted() -> None:
    spec = mp(access_token=TOKEN, port=1444)
    assert spec.connection_string == f"Server={HOST},1444;Database=Sales"
    assert spec.attrs_before is not None and list(spec.attrs_before) == [SQL_COPT_SS_ACCESS_TOKEN] == [1256]
    blob = spec.attrs_before[1256]
    data = TOKEN.encode("utf-16-le")
    assert isinstance(blob, bytes)
    assert blob[:4] == struct.pack("<I", len(data)) == len(TOKEN * 2).to_bytes(4, "little")
    assert blob[4:] == data and len(blob) == 4 + 2 * len(TOKEN)
    assert token_struct("ab") == b"\x04\x00\x00\x00a\x00b\x00"
    if HAS_MSSQL_PYTHON:  # the very bytes mssql-python's own helper builds
        from mssql_python.auth import AADAuth

        assert blob == AADAuth.get_token_struct(TOKEN)
    assert spec.authentication == "access_token" and spec.kwargs == {"autocommit": True, "timeout": 30}


def test_entra_access_token_refuses_other_sign_in_options_no_tenant_contacted() -> None:
    both = refusal(driver="mssql-python", access_token=TOKEN, authentication="ActiveDirectoryDefault")
    assert "access_token and authentication: ActiveDirectoryDefault" in both
    with_user = refusal(driver="mssql-python", access_token=TOKEN, user="loader", password=PASSWORD)
    assert "user, password are not used with access_token" in with_user
    assert TOKEN not in both + with_user and PASSWORD not in with_user


# -- mssql-python: encryption and the options it cannot take -------------------------------------


@pytest.mark.parametrize(("encrypt", "value"), [
    ("strict", "Strict"), ("mandatory", "Mandatory"), ("yes", "Mandatory"), ("true", "Mandatory"), (True, "Mandatory"),
    ("optional", "Optional"), ("no", "Optional"), ("false", "Optional"), (False, "Optional"),
])
def test_mssql_python_encrypt_mapping(encrypt: Any, value: str) -> None:
    spec = mp(authentication="ActiveDirectoryDefault", encrypt=encrypt)
    assert spec.connection_string == (
        f"Server={HOST},1433;Database=Sales;Authentication=ActiveDirectoryDefault;Encrypt={value}"
    )


def test_mssql_python_trust_server_certificate() -> None:
    base = f"Server={HOST},1433;Database=Sales;Authentication=ActiveDirectoryDefault"
    assert mp(authentication="ActiveDirectoryDefault").connection_string == base  # driver defaults
    assert mp(authentication="ActiveDirectoryDefault", trust_server_certificate="yes").connection_string == (
        base + ";TrustServerCertificate=Yes"
    )
    assert mp(authentication="ActiveDirectoryDefault", encrypt="yes", trust_server_certificate=False).connection_string == (
        base + ";Encrypt=Mandatory;TrustServerCertificate=No"
    )
    message = refusal(driver="mssql-python", encrypt="strict", trust_server_certificate=True)
    assert f"{SOURCE}.trust_server_certificate" in message and "strict" in message


@pytest.mark.parametrize("key", ["appname", "tds_version"])
def test_mssql_python_refuses_pymssql_only_options(key: str) -> None:
    message = refusal(driver="mssql-python", authentication="ActiveDirectoryDefault", **{key: "x"})
    assert f"{SOURCE}.{key}: not used with `driver: mssql-python`" in message


def test_mssql_python_escapes_values_with_braces_like_its_builder() -> None:
    password = 'p;w}d{ x"y'
    spec = mp(user="loader", password=password, database="Sales Data")
    assert spec.connection_string == (
        f'Server={HOST},1433;Database={{Sales Data}};UID=loader;PWD={{p;w}}}}d{{ x"y}}'
    )
    assert spec.connection_string.endswith('PWD={p;w}}d{ x"y}')
    assert odbc_value("a=b") == "{a=b}" and odbc_value("plain") == "plain" and odbc_value('q"uote') == 'q"uote'


@pytest.mark.skipif(not HAS_MSSQL_PYTHON, reason="mssql-python is not installed (an optional extra)")
def test_mssql_python_parser_reads_back_every_value() -> None:
    from mssql_python.connection_string_builder import _ConnectionStringBuilder
    from mssql_python.connection_string_parser import _ConnectionStringParser

    password = 'p;w}d{ x"y=}}'
    parser = _ConnectionStringParser(validate_keywords=True)  # refuses unknown and reserved (APP) keywords
    sql = mp(user="lo ader", password=password, database="Sales {2024}", encrypt="strict")
    assert parser._parse(sql.connection_string or "") == {
        "server": f"{HOST},1433", "database": "Sales {2024}", "uid": "lo ader", "pwd": password, "encrypt": "Strict",
    }
    sp = mp(authentication="ActiveDirectoryServicePrincipal", client_id=CLIENT_ID, client_secret=password,
            trust_server_certificate=True)
    assert parser._parse(sp.connection_string or "") == {
        "server": f"{HOST},1433", "database": "Sales", "uid": CLIENT_ID, "pwd": password,
        "authentication": "ActiveDirectoryServicePrincipal", "trustservercertificate": "Yes",
    }
    for value in (password, "plain", "a b", "{x}", "=", "}", ";;", 'q"uote'):
        assert odbc_value(value) == _ConnectionStringBuilder()._escape_value(value)


# -- errors: one line, naming the key ---------------------------------------------------------------


def test_missing_host_and_database() -> None:
    with pytest.raises(ConfigError) as caught:
        connect_spec({"driver": "mssql-python", "host": ""}, SOURCE)
    assert str(caught.value) == f"{SOURCE}: missing host, database for kind sqlserver"


def test_unknown_driver() -> None:
    message = refusal(driver="odbc")
    assert message == f"{SOURCE}.driver: 'odbc' is not one of auto, pymssql, mssql-python"


def test_unknown_authentication_lists_the_allowed_ones() -> None:
    message = refusal(driver="mssql-python", authentication="ActiveDirectoryInteractive")
    assert message.startswith(f"{SOURCE}.authentication: 'ActiveDirectoryInteractive' is not one of SqlPassword, ")
    assert all(name in message for name in ENTRA_AUTHENTICATIONS)
    assert refusal(authentication="Kerberos").startswith(f"{SOURCE}.authentication: 'Kerberos'")


@pytest.mark.parametrize(("key", "value"), [
    ("port", "abc"), ("port", 0), ("port", 70000), ("port", True), ("port", 1433.5),
    ("login_timeout", "ten"), ("login_timeout", -1), ("login_timeout", 1.5),
    ("timeout", "-1"), ("timeout", [1]),
    ("trust_server_certificate", "maybe"), ("trust_server_certificate", 1),
    ("encrypt", "sometimes"), ("encrypt", 2),
    ("user", {"name": "x"}),
])
@pytest.mark.parametrize("driver", DRIVERS)
def test_wrong_types_are_one_line_naming_the_key(driver: str, key: str, value: Any) -> None:
    message = refusal(**{"driver": driver, "user": "loader", "password": PASSWORD, key: value})
    assert message.startswith(f"{SOURCE}.{key}: "), message


# -- secrets -------------------------------------------------------------------------------------


def test_repr_and_where_never_show_a_secret() -> None:
    specs = [
        spec_of(user="loader", password=PASSWORD),
        mp(user="loader", password=PASSWORD),
        mp(authentication="ActiveDirectoryServicePrincipal", client_id=CLIENT_ID, client_secret=CLIENT_SECRET),
        mp(access_token=TOKEN),
    ]
    assert repr(specs[0]) == f"ConnectSpec(pymssql {HOST}:1433/Sales, auth=SqlPassword)"
    assert repr(specs[3]) == f"ConnectSpec(mssql-python {HOST}:1433/Sales, auth=access_token)"
    for spec in specs:
        for shown in (repr(spec), str(spec), spec.where, f"{spec!r}"):
            assert PASSWORD not in shown and CLIENT_SECRET not in shown and TOKEN not in shown


def test_scrub_takes_every_secret_out_of_a_driver_message() -> None:
    password = "p}w;rd"
    spec = mp(authentication="ActiveDirectoryServicePrincipal", client_id=CLIENT_ID, client_secret=password)
    assert password in spec.secrets and "{p}}w;rd}" in spec.secrets  # as typed and as sent
    message = f"login failed: PWD={{p}}}}w;rd}} for {CLIENT_ID}; secret {password}"
    assert spec.scrub(message) == f"login failed: PWD=*** for {CLIENT_ID}; secret ***"
    token_spec = mp(access_token=TOKEN)
    assert token_spec.secrets == (TOKEN,)
    assert token_spec.scrub(f"token {TOKEN} refused") == "token *** refused"
    assert spec_of(password="").secrets == () and spec_of().scrub("nothing to hide") == "nothing to hide"


def test_config_errors_never_carry_a_secret() -> None:
    # a secret pasted into the wrong option still does not reach the message
    with pytest.raises(ConfigError) as caught:
        spec_of(password="hunter2-long", encrypt="hunter2-long")
    assert "hunter2-long" not in str(caught.value) and f"{SOURCE}.encrypt: '***'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        spec_of(driver="mssql-python", access_token=TOKEN, authentication=TOKEN)
    assert TOKEN not in str(caught.value)


def test_module_imports_no_driver_or_cli_library() -> None:
    tree = ast.parse(Path(connect_options.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"typer", "rich", "pymssql", "mssql_python"}


# -- the drivers accept what was built (127.0.0.1 port 1: refused at once, nothing sent) ---------------


def test_pymssql_accepts_the_kwargs_and_its_error_has_no_password() -> None:
    import pymssql

    spec = connect_spec({"host": "127.0.0.1", "port": 1, "database": "Sales", "user": "loader",
                         "password": PASSWORD, "login_timeout": 2, "encrypt": "yes", "tds_version": "7.4"}, SOURCE)
    started = time.monotonic()
    with pytest.raises(pymssql.OperationalError) as caught:  # not TypeError / ValueError: every kwarg is known
        pymssql.connect(**spec.kwargs)
    assert time.monotonic() - started < 15
    assert PASSWORD not in spec.scrub(str(caught.value))


@pytest.mark.skipif(not HAS_MSSQL_PYTHON, reason="mssql-python is not installed (an optional extra)")
def test_mssql_python_connect_with_access_token_fails_fast_without_the_token() -> None:
    import mssql_python

    spec = connect_spec({"driver": "mssql-python", "host": "127.0.0.1", "port": 1, "database": "Sales",
                         "login_timeout": 2, "encrypt": "optional", "access_token": TOKEN}, SOURCE)
    started = time.monotonic()
    with pytest.raises(mssql_python.Error) as caught:
        mssql_python.connect(spec.connection_string, attrs_before=spec.attrs_before, **spec.kwargs)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert TOKEN not in message and TOKEN[:20] not in message
    assert elapsed < 15, elapsed
    if "Failed to load the driver" in message:  # the ODBC driver in the wheel needs libltdl7 (unixODBC)
        pytest.skip("mssql-python's ODBC driver cannot load here (install libltdl7): no connection was tried")
    assert "unable to establish connection" in message.lower() or "tcp provider" in message.lower(), message
