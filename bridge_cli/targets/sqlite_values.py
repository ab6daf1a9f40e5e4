"""What the SQLite target can hold exactly: each staged batch is checked, column by column,
against the affinity of the target column it goes to, and a value the column would change
fails the event before anything is written.

What SQLite does with each kind of value (SQLite 3.40, checked by tests/test_sqlite_exact.py):

- A DECIMAL bound as text into a NUMERIC, INTEGER or REAL column is converted by SQLite's own
  text-to-double routine, which is not correctly rounded (4547731.314671 became
  4547731.3146710005), and whatever does not fit an INTEGER becomes a REAL of 15 to 17
  significant digits. So bridge binds the value itself: an integral one within int64 as an
  INTEGER (exact), any other as the nearest double, which is allowed only when it reads back as
  the same number (its shortest repr, or its exact binary value, equals the decimal: 0.10 and
  12.5 pass, 10**32 reads back as 1e+32 and passes, 1234567890123456.78 does not). Every decimal
  of at most 15 significant digits passes, so only longer ones are looked at one by one.
- A DOUBLE NaN is stored as NULL in every column: refused. +-Infinity is stored as REAL and read
  back as such: allowed.
- A DOUBLE into a TEXT column is stored as its text of 15 significant digits: refused when that
  text is another number.
- An integer into a REAL column above 2**53 may round; an unsigned one above 2**63 - 1 cannot
  be bound at all.

Everything else (text, dates, DECIMAL into TEXT or untyped columns, integers into integer
columns) is stored as it is sent.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from bridge_cli.errors import PermanentError
from bridge_cli.targets import TargetColumn

if TYPE_CHECKING:
    import pyarrow as pa

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_DIGITS = 15  # any decimal of at most 15 significant digits survives a double (DBL_DIG)
EXACT_FLOAT_INT = 2**53  # every integer up to this is a double


def affinity(declared: str) -> str:
    """The column affinity SQLite gives a declared type (https://sqlite.org/datatype3.html 3.1)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind.strip():
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def sqlite_rows(batch: pa.RecordBatch, columns: Sequence[TargetColumn]) -> list[tuple[Any, ...]]:
    """One batch as the tuples to bind, each column checked against its target column; a
    PermanentError naming the column and the first value it cannot hold exactly."""
    values = [_column(array, column) for array, column in zip(batch.columns, columns, strict=True)]
    return list(zip(*values, strict=True)) if values else []


def _column(array: pa.Array, column: TargetColumn) -> list[Any]:
    import pyarrow as pa

    kind = array.type
    where = affinity(column.type)
    if pa.types.is_decimal(kind):
        if where in ("TEXT", "BLOB"):
            return array.to_pylist()  # bound as its exact text, kept as text
        return _decimals(array, column, where)
    if pa.types.is_floating(kind):
        _refuse_nan(array, column)
        values = array.to_pylist()
        if where == "TEXT" and not _reals_render_exactly():
            _check_real_text(values, column)
        return values
    if pa.types.is_integer(kind):
        return _integers(array, column, where)
    return array.to_pylist()


def _refused(column: TargetColumn, value: str, why: str) -> PermanentError:
    return PermanentError(
        f"column {column.name}: {value} cannot be stored exactly by the SQLite target ({why}); "
        "nothing was written"
    )


def _decimals(array: pa.Array, column: TargetColumn, where: str) -> list[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    # Through text: Arrow's own decimal-to-double cast is not correctly rounded, its text-to-double
    # parse is (as Python's float() is).
    doubles = pc.cast(pc.cast(array, pa.string()), pa.float64())
    values: list[Any] = doubles.to_pylist()
    for i in _long_decimals(array.type, doubles, values):
        exact: Decimal | None = array[i].as_py()
        if exact is None:
            continue
        if where != "REAL" and exact == exact.to_integral_value() and INT64_MIN <= exact <= INT64_MAX:
            values[i] = int(exact)  # an INTEGER: exact
            continue
        double = values[i]
        if Decimal(double) != exact and Decimal(repr(double)) != exact:
            raise _refused(
                column, str(exact),
                f"DECIMAL values with more than {EXACT_DIGITS} significant digits become REAL: "
                f"this one would read back as {double!r}",
            )
    return values


def _long_decimals(kind: pa.DataType, doubles: pa.Array, values: list[Any]) -> Sequence[int]:
    """Where the values of more than 15 significant digits may be: at least 16 digits in the
    unscaled value, |d| >= 10**(15 - scale), found by their doubles (rounding is monotonic, so
    none is missed; a few just below are looked at too). Every one, when the scale is negative.
    No Python value is turned into an Arrow one here: the first such conversion imports pandas
    (about 50 MiB)."""
    import pyarrow.compute as pc

    if kind.scale < 0:
        return range(len(values))
    if kind.precision <= EXACT_DIGITS:
        return ()
    bound = float(Decimal(10) ** (EXACT_DIGITS - kind.scale))
    top = pc.max(pc.abs(doubles)).as_py()
    if top is None or top < bound:
        return ()
    return [i for i, value in enumerate(values) if value is not None and abs(value) >= bound]


def _refuse_nan(array: pa.Array, column: TargetColumn) -> None:
    import pyarrow.compute as pc

    if pc.any(pc.is_nan(array)).as_py():
        raise PermanentError(
            f"column {column.name}: NaN cannot be stored by the SQLite target (SQLite stores NaN as "
            "NULL); nothing was written"
        )


@cache
def _reals_render_exactly() -> bool:
    """Whether this SQLite turns a REAL into text that reads back as the same double (3.40 keeps
    15 significant digits)."""
    probe = 0.1 + 0.2  # 0.30000000000000004: 17 digits
    connection = sqlite3.connect(":memory:")
    try:
        (text,) = connection.execute("SELECT CAST(? AS TEXT)", [probe]).fetchone()
    finally:
        connection.close()
    return float(text) == probe


def _check_real_text(values: list[Any], column: TargetColumn) -> None:
    for value in values:
        if value is None or not math.isfinite(value):
            continue
        text = f"{value:.{EXACT_DIGITS}g}"
        if float(text) != value:
            raise _refused(
                column, repr(value),
                f"its {column.type or 'TEXT'} column keeps a DOUBLE as text of {EXACT_DIGITS} "
                f"significant digits: this one would read back as {text!r}",
            )


def _integers(array: pa.Array, column: TargetColumn, where: str) -> list[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    unsigned = pa.types.is_unsigned_integer(kind)
    if kind.bit_width < 53 or (where != "REAL" and not unsigned) or len(array) == array.null_count:
        return array.to_pylist()  # every value fits the column as it is
    span = pc.min_max(array).as_py()
    low, high = span["min"], span["max"]
    if high > INT64_MAX:  # uint64: Python's sqlite3 cannot bind it
        raise PermanentError(
            f"column {column.name}: {high} cannot be stored by the SQLite target (beyond its "
            "64-bit INTEGER); nothing was written"
        )
    values = array.to_pylist()
    if where == "REAL" and (high > EXACT_FLOAT_INT or low < -EXACT_FLOAT_INT):
        for value in values:
            if value is not None and float(value) != value:
                raise _refused(
                    column, str(value),
                    f"its {column.type} column keeps integers exactly only up to 2**53: this one "
                    f"would read back as {float(value)!r}",
                )
    return values
