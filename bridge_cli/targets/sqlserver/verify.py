"""Verified staging: what was sent is checked against what landed, before anything is applied.

A bulk load that reports success while writing values into the wrong columns (seen with a TDS
server) must never reach a target table. The check is cheap: one aggregate query over the stage,
compared with the same figures taken from the Arrow batches while they were sent:
- the row count, and the order column's range (every row once);
- the NULL count of every column (a shifted column changes them);
- MIN / MAX of every integer and bit column (keys are usually here; a shifted key is not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge_cli.targets import ApplyPlan, TargetColumn
from bridge_cli.targets.sqlserver.tsql import ROW, q

if TYPE_CHECKING:
    import pyarrow as pa

    from bridge_cli.spark.spec import StageFigures

INTEGER_TYPES = frozenset({"tinyint", "smallint", "int", "bigint", "bit"})


def base_type(column: TargetColumn) -> str:
    return column.type.split("(")[0].split()[0].lower()


def _ranged(column: TargetColumn, arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    return base_type(column) in INTEGER_TYPES and (pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type))


@dataclass
class StageCheck:
    """Figures of the rows sent to a stage, accumulated batch by batch."""

    plan: ApplyPlan
    rows: int = 0
    nulls: list[int] = field(default_factory=list)
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # column index -> (min, max)
    _ranged: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.nulls = [0 for _ in self.plan.columns]

    @classmethod
    def from_figures(cls, plan: ApplyPlan, figures: StageFigures) -> StageCheck:
        """The figures another process (a Spark run) took of what it sent."""
        if len(figures.nulls) != len(plan.columns) and figures.rows:
            raise ValueError(f"figures for {len(figures.nulls)} columns, plan has {len(plan.columns)}")
        check = cls(plan, rows=figures.rows, ranges=dict(figures.ranges))
        if figures.rows:
            check.nulls = list(figures.nulls)
        return check

    def add(self, batch: pa.RecordBatch) -> None:
        import pyarrow.compute as pc

        if self.rows == 0:
            self._ranged = {
                i for i, c in enumerate(self.plan.columns) if _ranged(c, batch.schema.field(i).type)
            }
        self.rows += batch.num_rows
        for i, array in enumerate(batch.columns):
            self.nulls[i] += array.null_count
            if i in self._ranged and array.null_count < len(array):
                low_high = pc.min_max(array)
                low, high = int(low_high["min"].as_py()), int(low_high["max"].as_py())
                if i in self.ranges:
                    old_low, old_high = self.ranges[i]
                    low, high = min(low, old_low), max(high, old_high)
                self.ranges[i] = (low, high)

    def query(self, stage: str) -> str:
        parts = ["COUNT_BIG(*)", f"MIN({q(ROW)})", f"MAX({q(ROW)})"]
        parts += [f"COUNT_BIG(*) - COUNT_BIG({q(c.name)})" for c in self.plan.columns]
        for i in sorted(self.ranges):
            name = q(self.plan.columns[i].name)
            parts += [f"MIN(CAST({name} AS BIGINT))", f"MAX(CAST({name} AS BIGINT))"]
        return f"SELECT {', '.join(parts)} FROM {stage}"

    def differences(self, row: tuple[Any, ...], first_row: int = 1) -> list[str]:
        """What differs between the stage's figures (the row `query` returned) and what was sent."""
        found: list[str] = []
        count, low, high = _ints(row[:3])
        if count != self.rows:
            found.append(f"{count} rows staged, {self.rows} sent")
        elif self.rows and (low, high) != (first_row, first_row + self.rows - 1):
            found.append(f"order column spans {low}..{high}, sent {first_row}..{first_row + self.rows - 1}")
        width = len(self.plan.columns)
        for i, (column, nulls) in enumerate(zip(self.plan.columns, _ints(row[3 : 3 + width]), strict=True)):
            if nulls != self.nulls[i]:
                found.append(f"column {column.name}: {nulls} NULLs staged, {self.nulls[i]} sent")
        at = 3 + width
        for i in sorted(self.ranges):
            got = tuple(_ints(row[at : at + 2]))
            at += 2
            sent = self.ranges[i]
            if got != sent:
                found.append(f"column {self.plan.columns[i].name}: range {got[0]}..{got[1]} staged, "
                             f"{sent[0]}..{sent[1]} sent")
        return found


def _ints(values: tuple[Any, ...]) -> list[int | None]:
    """Aggregates as the server returned them (a driver may hand back Decimal or bool)."""
    return [None if v is None else int(v) for v in values]
