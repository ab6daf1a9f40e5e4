"""Test only: lets the real, unmodified databricks-sql-connector 4.x talk to the stand-in's Spark
3.5 Thrift Server (README.md beside this file).

    import dbx_standin_compat
    dbx_standin_compat.install()   # once per process, before the first connect; idempotent

Importing changes nothing. `install()` replaces two connector methods. The first,
`FeatureFlagsContext._refresh_flags`, would fetch the connector's feature flags from
`https://<host>/api/...` on port 443 whatever port it was given: where the stand-in is not on 443
(no network namespace) that reaches whatever listens on the machine's 443, token included, or
waits 30 s for a refused connection in every process. The stand-in has no flags, so the shim
answers "none" at once, which also keeps the connector's telemetry off (a flag turns it on).

The second, `ThriftDatabricksClient.make_request`, through which every Thrift call passes, is
wrapped to adapt the open-source server's answers to what a Databricks warehouse sends. Each
adaptation exists because without it the connector refuses the server or bridge would see
something a warehouse never sends:

- OpenSession: the server speaks HiveServer2's protocol V10, below the connector's minimum
  (SPARK_CLI_SERVICE_PROTOCOL_V2), so it is reported as SPARK_CLI_SERVICE_PROTOCOL_V8, the
  lowest version at which the connector sends native parameters. `connect(catalog=, schema=)`
  travels in a Databricks-only field the server ignores: it becomes HiveServer2's `use:database`.
  `session_configuration` keys become `set:hiveconf:<key>`, which Spark applies as session SQL
  configuration (the shim remembers the session time zone from it; the server's own is UTC).
- ExecuteStatement: Spark 3.5 cannot bind parameters over Thrift, so each `:name` marker outside
  string literals, quoted identifiers and comments becomes a typed literal
  (`CAST('<escaped>' AS <TYPE>)`, `array(...)`, `NULL`). `USING DELTA` is dropped: the
  stand-in's tables are Iceberg.
- GetResultSetMetadata and FetchResults: the server sends column-based row sets; a warehouse
  sends Arrow, with zone-aware TIMESTAMPs and ARRAY columns as Arrow lists (bridge reads
  `primary_keys` that way). Results are re-encoded as Arrow IPC batches. ARRAY element types come
  from a `DESCRIBE QUERY` side query, since the Thrift schema only says "array".
- FetchResults: HiveServer2 always answers hasMoreRows=False, which makes the connector stop
  after the first batch and silently drop the rest of a large result; a full batch is reported
  as "more may follow" (the next fetch returns no rows). The server also leaves out
  `resultSetMetadata`, which the connector reads on every fetch.

Not supported (our tests do not need them): positional `?` parameters and MAP parameters raise;
MAP and STRUCT result columns arrive as the server's text; `SET TIME ZONE` statements are not
followed (use `session_configuration`).
"""

from __future__ import annotations

import datetime
import decimal
import re
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from databricks.sql.backend.thrift_backend import ThriftDatabricksClient
from databricks.sql.common.feature_flag import FeatureFlagsContext
from databricks.sql.thrift_api.TCLIService import ttypes as T

__all__ = ["install", "uninstall", "installed", "inline_parameters", "rewrite_statement", "decode_array"]

_MARK = "_bridge_standin_compat"
_lock = threading.Lock()
_original: Any = None  # the connector's own make_request while installed
_original_flags: Any = None  # and its own FeatureFlagsContext._refresh_flags
# Per operation and per session state, keyed by Thrift GUID bytes. Plain dicts: single get/set/pop
# calls are atomic, and each operation is used by one thread at a time.
_statements: dict[bytes, tuple[Any, str]] = {}  # operation -> (session handle, statement)
_plans: dict[bytes, tuple[pa.Schema, list[tuple[str, pa.DataType]]]] = {}  # operation -> result plan
_zones: dict[bytes, str] = {}  # session -> session time zone
_ZONE_KEY = "spark.sql.session.timeZone"


def install() -> None:
    """Replace the two connector methods (idempotent)."""
    global _original, _original_flags
    with _lock:
        current = ThriftDatabricksClient.make_request
        if getattr(current, _MARK, False):
            return
        _original, _original_flags = current, FeatureFlagsContext._refresh_flags
        setattr(_make_request, _MARK, True)
        ThriftDatabricksClient.make_request = _make_request  # type: ignore[method-assign]
        FeatureFlagsContext._refresh_flags = _no_feature_flags  # type: ignore[method-assign]


def uninstall() -> None:
    global _original, _original_flags
    with _lock:
        if _original is not None and installed():
            ThriftDatabricksClient.make_request = _original  # type: ignore[method-assign]
            FeatureFlagsContext._refresh_flags = _original_flags  # type: ignore[method-assign]
        _original = _original_flags = None


def installed() -> bool:
    return bool(getattr(ThriftDatabricksClient.make_request, _MARK, False))


def _no_feature_flags(self: Any) -> None:
    """What the connector does when its flag request fails, minus the request: no flags."""
    self._state.flags = {}


# -- parameters -------------------------------------------------------------------------------------
def _string(value: str) -> str:
    """A Spark string literal: backslash is Spark's escape character, so it is escaped first."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_TYPE = re.compile(r"[A-Z_]+(\(\s*\d+\s*(,\s*\d+\s*)?\))?")


def _literal(parameter: Any) -> str:
    """A TSparkParameter (or an ARRAY element, TSparkParameterValueArg) as a Spark expression."""
    kind = (parameter.type or "STRING").strip().upper()
    if kind == "VOID":
        return "NULL"
    if kind == "ARRAY":
        return "array(" + ", ".join(_literal(a) for a in parameter.arguments or []) + ")"
    if not _TYPE.fullmatch(kind) or kind == "MAP":
        raise NotImplementedError(f"dbx_standin_compat: parameters of type {parameter.type!r} are not supported")
    value = parameter.value
    if isinstance(parameter, T.TSparkParameter):
        value = value.stringValue if value is not None else None
    if value is None:
        return f"CAST(NULL AS {kind})"
    return _string(value) if kind == "STRING" else f"CAST({_string(value)} AS {kind})"


def _segments(sql: str) -> Iterator[tuple[bool, str]]:
    """(is_code, text) pieces of a statement: string literals, quoted identifiers and comments
    are not code, so markers and keywords inside them are left alone."""
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" and c != "`" else 1
            end = min(j + 1, n)
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            end = n if j < 0 else j + 2
        else:
            i += 1
            continue
        if start < i:
            yield True, sql[start:i]
        yield False, sql[i:end]
        i = start = end
    if start < n:
        yield True, sql[start:]


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # not `::` casts, not `column:path`


def inline_parameters(sql: str, parameters: list[Any]) -> str:
    """Replace each :name marker by its parameter's literal. A marker without a parameter stays,
    and Spark reports a syntax error where Databricks says UNBOUND_SQL_PARAMETER."""
    if any(not p.name for p in parameters):
        raise NotImplementedError("dbx_standin_compat: only named parameters are supported (bridge uses :name)")
    literals = {p.name: _literal(p) for p in parameters}
    return "".join(
        _NAMED.sub(lambda m: literals.get(m.group(1), m.group(0)), text) if code else text
        for code, text in _segments(sql)
    )


_USING_DELTA = re.compile(r"\bUSING\s+DELTA\b", re.I)


def rewrite_statement(sql: str) -> str:
    """`USING DELTA` dropped: the catalog's own format (Iceberg) is used instead."""
    if not _USING_DELTA.search(sql):
        return sql
    return "".join(_USING_DELTA.sub("", text) if code else text for code, text in _segments(sql))


# -- results as Arrow -------------------------------------------------------------------------------
_PRIMITIVES = {
    T.TTypeId.BOOLEAN_TYPE: pa.bool_(), T.TTypeId.TINYINT_TYPE: pa.int8(), T.TTypeId.SMALLINT_TYPE: pa.int16(),
    T.TTypeId.INT_TYPE: pa.int32(), T.TTypeId.BIGINT_TYPE: pa.int64(), T.TTypeId.FLOAT_TYPE: pa.float32(),
    T.TTypeId.DOUBLE_TYPE: pa.float64(), T.TTypeId.STRING_TYPE: pa.string(), T.TTypeId.VARCHAR_TYPE: pa.string(),
    T.TTypeId.CHAR_TYPE: pa.string(), T.TTypeId.BINARY_TYPE: pa.binary(), T.TTypeId.DATE_TYPE: pa.date32(),
    T.TTypeId.TIMESTAMP_TYPE: pa.timestamp("us", tz="UTC"), T.TTypeId.NULL_TYPE: pa.null(),
}
# Element types named in DESCRIBE QUERY's `array<...>` (Spark's catalogString).
_ELEMENTS = {
    "boolean": pa.bool_(), "tinyint": pa.int8(), "smallint": pa.int16(), "int": pa.int32(), "bigint": pa.int64(),
    "float": pa.float32(), "double": pa.float64(), "string": pa.string(), "date": pa.date32(),
}


def _array_type(catalog_string: str) -> pa.DataType | None:
    """`array<string>`, `array<array<int>>` ... as an Arrow list; None for what the shim does not
    decode (maps, structs, decimals, timestamps inside arrays)."""
    if catalog_string.startswith("array<") and catalog_string.endswith(">"):
        inner = catalog_string[len("array<"):-1]
        element = _array_type(inner) if inner.startswith("array<") else _ELEMENTS.get(inner)
        return pa.list_(element) if element is not None else None
    return None


def decode_array(text: str, kind: pa.DataType) -> list[Any]:
    """Decode the server's rendering of an ARRAY value (Spark's HiveResult.toHiveString):
    `["a","b"]`, `[1,null]`. Strings are quoted but not escaped, so a string ends at the first
    quote followed by `,` or `]`; a value containing such a pair cannot be told apart and raises
    ValueError rather than being guessed."""
    try:
        value, end = _decode(text, 0, kind)
        if end != len(text):
            raise ValueError(f"trailing text at {end}")
        return value
    except (ValueError, IndexError) as exc:
        raise ValueError(f"dbx_standin_compat: cannot decode {text[:200]!r} as {kind} ({exc})") from None


def _decode(text: str, i: int, kind: pa.DataType) -> tuple[Any, int]:
    if text.startswith("null", i) and (i + 4 == len(text) or text[i + 4] in ",]"):
        return None, i + 4
    if pa.types.is_list(kind):
        if text[i] != "[":
            raise ValueError(f"expected '[' at {i}")
        values: list[Any] = []
        i += 1
        if text[i] == "]":
            return values, i + 1
        while True:
            value, i = _decode(text, i, kind.value_type)
            values.append(value)
            if text[i] == "]":
                return values, i + 1
            if text[i] != ",":
                raise ValueError(f"expected ',' at {i}")
            i += 1
    if pa.types.is_string(kind):
        if text[i] != '"':
            raise ValueError(f"expected '\"' at {i}")
        j = i + 1
        while True:
            j = text.index('"', j)
            if j + 1 == len(text) or text[j + 1] in ",]":
                return text[i + 1:j], j + 1
            j += 1
    j = i
    while j < len(text) and text[j] not in ",]":
        j += 1
    token = text[i:j]
    if pa.types.is_boolean(kind):
        return {"true": True, "false": False}[token], j
    if pa.types.is_integer(kind):
        return int(token), j
    if pa.types.is_floating(kind):
        return float(token), j
    return datetime.date.fromisoformat(token), j  # date, the one other element type decoded


def _plan(schema: Any, exact: list[str] | None, zone: str) -> tuple[pa.Schema, list[tuple[str, pa.DataType]]]:
    """The Arrow schema sent to the connector and, per column, how to convert it: `plain`,
    `array` (decoded into an Arrow list) or `text` (the server's rendering as it is)."""
    fields, plan = [], []
    for n, column in enumerate(sorted(schema.columns, key=lambda c: c.position)):
        type_id = column.typeDesc.types[0].primitiveEntry.type
        mode = "plain"
        if type_id == T.TTypeId.DECIMAL_TYPE:
            qualifiers = column.typeDesc.types[0].primitiveEntry.typeQualifiers.qualifiers
            kind = pa.decimal128(qualifiers["precision"].i32Value, qualifiers["scale"].i32Value)
        elif type_id == T.TTypeId.TIMESTAMP_TYPE:
            kind = pa.timestamp("us", tz=zone)  # a warehouse sends instants in the session time zone
        elif type_id == T.TTypeId.ARRAY_TYPE and exact and n < len(exact) and _array_type(exact[n]):
            kind, mode = _array_type(exact[n]), "array"
        elif type_id in _PRIMITIVES:
            kind = _PRIMITIVES[type_id]
        else:  # maps, structs, intervals, arrays the shim does not decode
            kind, mode = pa.string(), "text"
        fields.append(pa.field(column.columnName, kind))
        plan.append((mode, kind))
    return pa.schema(fields), plan


def _values(column: Any) -> tuple[str, Any]:
    """The one filled member of a TColumn union: (its name, the TxxxColumn)."""
    for name in ("boolVal", "byteVal", "i16Val", "i32Val", "i64Val", "doubleVal", "stringVal", "binaryVal"):
        member = getattr(column, name)
        if member is not None:
            return name, member
    raise ValueError("dbx_standin_compat: an empty TColumn")


def _arrow_column(column: Any, mode: str, kind: pa.DataType) -> pa.Array:
    name, member = _values(column)
    nulls = member.nulls or b""
    values = [None if i >> 3 < len(nulls) and nulls[i >> 3] & (1 << (i & 7)) else v
              for i, v in enumerate(member.values)]
    if mode == "array":
        return pa.array([None if v is None else decode_array(v, kind) for v in values], type=kind)
    if mode == "text" or pa.types.is_string(kind):
        return pa.array(values, type=pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(values))
    if pa.types.is_decimal(kind):
        return pa.array([None if v is None else decimal.Decimal(v) for v in values], type=kind)
    if pa.types.is_timestamp(kind):
        # wall-clock text in the session time zone
        naive = pa.array(values, type=pa.string()).cast(pa.timestamp("us"))
        return pc.assume_timezone(naive, kind.tz, ambiguous="earliest", nonexistent="earliest")
    if name == "stringVal":
        return pa.array(values, type=pa.string()).cast(kind)  # DATE
    return pa.array(values, type=kind)


def _array_types(client: Any, session: Any, statement: str) -> list[str] | None:
    """The exact column types of a query (DESCRIBE QUERY), run on the same session past the shim;
    None for what is not a query (SHOW, DESCRIBE ...)."""
    request = T.TExecuteStatementReq(sessionHandle=session, statement="DESCRIBE QUERY " + statement)
    try:
        done = _original(client, client._client.ExecuteStatement, request)
        handle = done.operationHandle
    except Exception:
        return None
    try:
        rows = _original(client, client._client.FetchResults, T.TFetchResultsReq(
            operationHandle=handle, orientation=T.TFetchOrientation.FETCH_NEXT, maxRows=10_000))
        if rows.results is None or not rows.results.columns:
            return None
        return [str(t) for t in _values(rows.results.columns[1])[1].values]
    except Exception:
        return None
    finally:
        _original(client, client._client.CloseOperation, T.TCloseOperationReq(operationHandle=handle))


# -- the wrapped method -----------------------------------------------------------------------------
def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _make_request(self: Any, method: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(request, T.TOpenSessionReq):
        configuration = request.configuration or {}
        request.configuration = {"set:hiveconf:" + k: v for k, v in configuration.items()}
        namespace = request.initialNamespace
        if namespace is not None and (namespace.catalogName or namespace.schemaName):
            parts = [p for p in (namespace.catalogName, namespace.schemaName) if p]
            request.configuration["use:database"] = ".".join(_quote(p) for p in parts)
    elif isinstance(request, T.TExecuteStatementReq) and request.statement:
        if request.parameters:
            request.statement = inline_parameters(request.statement, request.parameters)
            request.parameters = None
        request.statement = rewrite_statement(request.statement)

    response = _original(self, method, request, *args, **kwargs)

    if isinstance(response, T.TOpenSessionResp):
        response.serverProtocolVersion = T.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V8
        response.canUseMultipleCatalogs = True
        if response.sessionHandle is not None:
            zone = (request.configuration or {}).get("set:hiveconf:" + _ZONE_KEY, "UTC")
            _zones[response.sessionHandle.sessionId.guid] = zone
    elif isinstance(response, T.TExecuteStatementResp) and response.operationHandle is not None:
        _statements[response.operationHandle.operationId.guid] = (request.sessionHandle, request.statement)
    elif isinstance(response, T.TGetResultSetMetadataResp) and response.schema is not None:
        operation = request.operationHandle.operationId.guid
        session, statement = _statements.get(operation, (None, ""))
        types = [c.typeDesc.types[0].primitiveEntry.type for c in response.schema.columns]
        exact = _array_types(self, session, statement) if session and T.TTypeId.ARRAY_TYPE in types else None
        zone = _zones.get(session.sessionId.guid, "UTC") if session else "UTC"
        schema, plan = _plan(response.schema, exact, zone)
        _plans[operation] = (schema, plan)
        response.resultFormat = T.TSparkRowSetType.ARROW_BASED_SET
        response.arrowSchema = schema.serialize().to_pybytes()
    elif isinstance(response, T.TFetchResultsResp) and response.results is not None:
        rows = response.results
        planned = _plans.get(request.operationHandle.operationId.guid)
        if planned is None:  # the connector always asks for the metadata first; never guess the types
            raise RuntimeError("dbx_standin_compat: rows fetched before their result metadata")
        schema, plan = planned
        columns = [_arrow_column(c, mode, kind) for c, (mode, kind) in zip(rows.columns or [], plan, strict=False)]
        if len(columns) < len(plan):  # DDL and DML declare a `Result` column and send none
            columns = [pa.array([], type=kind) for _, kind in plan]
        batch = pa.RecordBatch.from_arrays(columns, schema=schema)
        rows.arrowBatches = [T.TSparkArrowBatch(batch=batch.serialize().to_pybytes(), rowCount=batch.num_rows)]
        rows.columns = None
        if request.maxRows and batch.num_rows >= request.maxRows:
            response.hasMoreRows = True
        if response.resultSetMetadata is None:
            response.resultSetMetadata = T.TGetResultSetMetadataResp(
                status=response.status, resultFormat=T.TSparkRowSetType.ARROW_BASED_SET)
    elif isinstance(response, T.TCloseOperationResp):
        _statements.pop(request.operationHandle.operationId.guid, None)
        _plans.pop(request.operationHandle.operationId.guid, None)
    elif isinstance(response, T.TCloseSessionResp):
        _zones.pop(request.sessionHandle.sessionId.guid, None)
    return response
