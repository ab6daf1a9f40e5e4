"""The Databricks stand-in itself (tests/standins/databricks): its connector shim and its jars,
offline; and, while it runs, what the other Databricks tests take from it for granted."""

from __future__ import annotations

import datetime
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

STANDIN = Path(__file__).parent / "standins" / "databricks"
sys.path.insert(0, str(STANDIN))

import dbx_standin  # noqa: E402
import dbx_standin_compat as compat  # noqa: E402
import dbx_standin_jars as jars  # noqa: E402
from databricks.sql.thrift_api.TCLIService import ttypes as T  # noqa: E402

# Its own settings, as `dbx_standin.py run` exports them: these tests are about the stand-in itself.
on_standin = pytest.mark.skipif(not os.environ.get("DBX_STANDIN_DIR"),
                                reason="the local stand-in is not running (make test-databricks starts it)")


def named(name: str, kind: str, value: str | None) -> Any:
    return T.TSparkParameter(name=name, type=kind, value=None if value is None else T.TSparkParameterValue(stringValue=value))


# -- the shim, offline -----------------------------------------------------------------------------
def test_databricks_shim_inlines_named_parameters_as_typed_literals() -> None:
    sql = "SELECT :s, :n, :d, :when, :tags, :missing, ':s', `:s`, x::INT, col:path -- :s\n/* :s */"
    tags = T.TSparkParameter(name="tags", type="ARRAY", arguments=[
        T.TSparkParameterValueArg(type="STRING", value="a'b"), T.TSparkParameterValueArg(type="VOID")])
    params = [named("s", "STRING", "it's \\ ${HOME}"), named("n", "INT", None), named("d", "DECIMAL(3,2)", "1.25"),
              named("when", "TIMESTAMP", "2026-01-02 03:04:05+00:00"), tags]
    assert compat.inline_parameters(sql, params) == (
        "SELECT 'it\\'s \\\\ ${HOME}', CAST(NULL AS INT), CAST('1.25' AS DECIMAL(3,2)), "
        "CAST('2026-01-02 03:04:05+00:00' AS TIMESTAMP), array('a\\'b', NULL), :missing, ':s', `:s`, x::INT, "
        "col:path -- :s\n/* :s */")


def test_databricks_shim_answers_no_feature_flags_without_a_request() -> None:
    """The connector would ask https://<host>:443 whatever port it was given."""
    from databricks.sql.common.feature_flag import FeatureFlagsContext

    was_installed = compat.installed()
    compat.install()
    try:
        assert FeatureFlagsContext._refresh_flags is compat._no_feature_flags
    finally:
        if not was_installed:  # other tests here talk to no stand-in
            compat.uninstall()
            assert FeatureFlagsContext._refresh_flags is not compat._no_feature_flags

    class Context:
        class _state:  # noqa: N801 - the connector's attribute name
            flags = None

    compat._no_feature_flags(Context())
    assert Context._state.flags == {}


def test_databricks_shim_refuses_what_it_does_not_bind() -> None:
    with pytest.raises(NotImplementedError, match="only named parameters"):
        compat.inline_parameters("SELECT ?", [T.TSparkParameter(ordinal=True, type="INT", value=None)])
    with pytest.raises(NotImplementedError, match="MAP"):
        compat.inline_parameters("SELECT :m", [T.TSparkParameter(name="m", type="MAP", arguments=[])])


def test_databricks_shim_drops_using_delta_only_in_code() -> None:
    assert compat.rewrite_statement("CREATE TABLE t (a INT) USING delta TBLPROPERTIES ('x' = 'USING DELTA')") == (
        "CREATE TABLE t (a INT)  TBLPROPERTIES ('x' = 'USING DELTA')")


@pytest.mark.parametrize(("text", "kind", "value"), [
    ('["a","b,c","it\'s","x]y"]', pa.list_(pa.string()), ["a", "b,c", "it's", "x]y"]),
    ("[]", pa.list_(pa.string()), []),
    ('[null,"null",""]', pa.list_(pa.string()), [None, "null", ""]),
    ("[[1,2],null,[]]", pa.list_(pa.list_(pa.int64())), [[1, 2], None, []]),
    ("[true,false]", pa.list_(pa.bool_()), [True, False]),
    ("[2026-01-02]", pa.list_(pa.date32()), [datetime.date(2026, 1, 2)]),
])
def test_databricks_shim_decodes_the_servers_array_text(text: str, kind: pa.DataType, value: list[Any]) -> None:
    assert compat.decode_array(text, kind) == value


def test_databricks_shim_refuses_an_array_text_it_cannot_tell_apart() -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        compat.decode_array('["a",b"]', pa.list_(pa.string()))  # the one string `a",b`, or garbage


# -- the jars, offline ------------------------------------------------------------------------------
def test_databricks_standin_loopback_class_is_a_class_file_that_calls_set_host_then_set_port() -> None:
    helper = jars.ClassFile.parse(jars.loopback_helper_class())
    members = {helper.member(i) for i, (tag, _) in enumerate(helper.entries) if tag == jars.METHODREF}
    connector = "org/sparkproject/jetty/server/ServerConnector"
    assert members == {(connector, "setHost", "(Ljava/lang/String;)V"), (connector, "setPort", "(I)V")}
    assert "127.0.0.1" in [helper.utf8(i) for i, (tag, _) in enumerate(helper.entries) if tag == jars.UTF8]


def test_databricks_standin_patch_replaces_the_one_set_port_call(tmp_path: Path) -> None:
    pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (make test-databricks installs it)")
    [server_jar] = (Path(pyspark.__file__).parent / "jars").glob("spark-hive-thriftserver_2.12-*.jar")
    out = tmp_path / "loopback.jar"
    jars.loopback_thrift_jar(out, server_jar)
    with zipfile.ZipFile(out) as jar, zipfile.ZipFile(server_jar) as original:
        patched = jar.read(jars.THRIFT_HTTP_CLASS + ".class")
        before = original.read(jars.THRIFT_HTTP_CLASS + ".class")
    klass = jars.ClassFile.parse(patched)
    bind = klass.find(jars.METHODREF, "bridge/standin/Loopback", "bind", "(Lorg/sparkproject/jetty/server/ServerConnector;I)V")
    assert bytes([0xB8]) + bind.to_bytes(2, "big") in klass.rest
    assert len(klass.rest) == len(jars.ClassFile.parse(before).rest)  # nothing after the pool moved


def test_databricks_standin_reads_listening_addresses_as_loopback_or_not() -> None:
    assert dbx_standin.is_loopback("127.0.0.1") and dbx_standin.is_loopback("::1")
    assert dbx_standin.is_loopback("::ffff:127.0.0.1")
    assert not dbx_standin.is_loopback("0.0.0.0") and not dbx_standin.is_loopback("::")


# -- the running stand-in ---------------------------------------------------------------------------
@on_standin
def test_databricks_standin_listens_on_loopback_only() -> None:
    """The Thrift Server trusts any caller: the patched class keeps it, and nginx, on 127.0.0.1."""
    state = Path(os.environ["DBX_STANDIN_DIR"])
    config = dbx_standin.Config.load(state)
    spark = dbx_standin.recorded(state / "run" / "spark.pid", config.spark_marker)
    nginx = dbx_standin.Front(state).running()
    assert spark and nginx
    spark_ports = dbx_standin.listening_sockets(spark)
    assert ("127.0.0.1", config.thrift_port) in spark_ports
    assert all(dbx_standin.is_loopback(address) for address, _ in spark_ports + dbx_standin.listening_sockets(nginx))


def _connect(**extra: Any) -> Any:
    from databricks import sql

    settings = {"server_hostname": os.environ["DBX_STANDIN_HOST"], "http_path": os.environ["DBX_STANDIN_HTTP_PATH"],
                "access_token": os.environ["DBX_STANDIN_TOKEN"], "_port": int(os.environ["DBX_STANDIN_PORT"])}
    return sql.connect(**{**settings, **extra}, _retry_stop_after_attempts_count=1)


@on_standin
def test_databricks_standin_refuses_a_wrong_token() -> None:
    from databricks.sql.exc import RequestError

    with pytest.raises(RequestError):
        _connect(access_token="dapi-wrong").close()


@on_standin
def test_databricks_standin_results_longer_than_a_fetch_arrive_whole() -> None:
    with _connect() as connection, connection.cursor(arraysize=1000) as cursor:
        cursor.execute("SELECT id FROM range(2500)")
        assert [r[0] for r in cursor.fetchall()] == list(range(2500))


@on_standin
def test_databricks_standin_follows_connect_catalog_schema_and_session_time_zone() -> None:
    last = os.environ["DBX_STANDIN_CATALOGS"].split(",")[-1]  # not the default one, where there are two
    with _connect(catalog=last, schema="default",
                  session_configuration={"spark.sql.session.timeZone": "America/Bogota"}) as connection, \
            connection.cursor() as cursor:
        cursor.execute("SELECT current_catalog(), current_database(), TIMESTAMP '2026-01-02 03:04:05'")
        catalog, schema, when = cursor.fetchone()
    assert (catalog, schema) == (last, "default")
    assert when == datetime.datetime(2026, 1, 2, 8, 4, 5, tzinfo=datetime.timezone.utc)  # 03:04:05 at UTC-5
