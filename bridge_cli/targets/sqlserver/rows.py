"""Arrow batches as the Python values a driver sends: column by column, converting only what needs it.

Most columns go straight through `to_pylist()`. Arrow does the zone work without Python: an instant
written to a zone-less type becomes UTC wall time by a cast. Only a few types need a per-value step,
and the driver names them (e.g. pymssql sends `bytes` as text unless they are a `bytearray`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bridge_cli.prefetch import read_ahead
from bridge_cli.targets import ApplyPlan, TargetColumn
from bridge_cli.targets.sqlserver.verify import base_type

if TYPE_CHECKING:
    import pyarrow as pa

Convert = Callable[[Any], Any]
# A driver's per-value conversions, by target base type and Arrow type; None: no Python work.
ConverterFor = Callable[[TargetColumn, "pa.DataType"], "Convert | None"]


def fixed_offset(value: dt.datetime) -> dt.datetime:
    """DATETIMEOFFSET keeps the instant and its offset; a zone-less value is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.replace(tzinfo=dt.timezone(value.utcoffset() or dt.timedelta(0)))


def prepare_array(array: pa.Array, column: TargetColumn) -> pa.Array:
    """Arrow-side conversions that need no Python per value."""
    import pyarrow as pa

    kind = base_type(column)
    if pa.types.is_timestamp(array.type) and array.type.tz is not None and kind != "datetimeoffset":
        # SQL Server DATETIME2 / DATETIME have no zone: store the instant as UTC wall time.
        return array.cast(pa.timestamp(array.type.unit))
    return array


Prepare = Callable[["pa.Array", TargetColumn], "pa.Array"]


def python_columns(
    batch: pa.RecordBatch, columns: Sequence[TargetColumn], converter_for: ConverterFor,
    prepare: Prepare = prepare_array,
) -> list[list[Any]]:
    result = []
    for array, column in zip(batch.columns, columns, strict=True):
        array = prepare(array, column)
        values = array.to_pylist()
        convert = converter_for(column, array.type)
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        result.append(values)
    return result


def numbered_rows(
    batch: pa.RecordBatch, columns: Sequence[TargetColumn], first_row: int, converter_for: ConverterFor
) -> list[tuple[Any, ...]]:
    """Rows as tuples, each led by its staging order number (first_row, first_row + 1, ...)."""
    values = python_columns(batch, columns, converter_for)
    return list(zip(range(first_row, first_row + batch.num_rows), *values, strict=True))


class RowLoad:
    """A load that sends Python rows: each batch numbered and converted, then `write_rows`."""

    converter: ConverterFor

    def __init__(self, driver: Any, connection: Any, plan: ApplyPlan, stage: str) -> None:
        self.driver = driver
        self.connection = connection
        self.plan = plan
        self.stage = stage

    def write(self, batches: Iterable[pa.RecordBatch], first_row: int) -> None:
        # The next batch is converted in a thread while this one is on the wire: the drivers let go
        # of the GIL while they wait for the server.
        for rows in read_ahead(self._rows(batches, first_row)):
            self.write_rows(rows)

    def _rows(self, batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[list[tuple[Any, ...]]]:
        for batch in batches:
            yield numbered_rows(batch, self.plan.columns, first_row, self.converter)
            first_row += batch.num_rows

    def write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError
