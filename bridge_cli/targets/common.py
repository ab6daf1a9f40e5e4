"""SQL pieces every target adapter shares: the DELETE filter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge_cli.events import FilterValue
from bridge_cli.targets import TargetColumn

Filters = tuple[tuple[TargetColumn, FilterValue | tuple[FilterValue, ...]], ...]


def where_clause(filters: Filters, quote: Callable[[str], str], mark: str) -> tuple[str, list[Any]]:
    """`col = ?` per condition (a list means IN, null means IS NULL), values as parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for column, value in filters:
        name = quote(column.name)
        if isinstance(value, tuple):
            present = [v for v in value if v is not None]
            options = []
            if present:
                options.append(f"{name} IN ({', '.join(mark for _ in present)})")
                params.extend(present)
            if len(present) != len(value):
                options.append(f"{name} IS NULL")
            parts.append("(" + " OR ".join(options) + ")")
        elif value is None:
            parts.append(f"{name} IS NULL")
        else:
            parts.append(f"{name} = {mark}")
            params.append(value)
    return " AND ".join(parts), params

