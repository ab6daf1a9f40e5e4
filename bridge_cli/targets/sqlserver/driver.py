"""The seam between the SQL Server target and a driver (pymssql or mssql-python).

The target speaks driver-neutral T-SQL through DB-API cursors; a driver connects, sorts its own
errors into transient and permanent, and knows how to load Arrow batches into a staging table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bridge_cli.errors import BridgeError, PermanentError
from bridge_cli.targets import ApplyPlan
from bridge_cli.targets.sqlserver.connect_options import ConnectSpec

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class DriverCapabilities:
    methods: tuple[str, ...]            # write methods besides `auto`, fastest first
    fallback: str                       # the method `auto` falls back to
    bulk_on_own_connection: bool        # the bulk load cannot see the session's temp table
    bulk_types: frozenset[str] | None   # base types `auto` sends through bulk (None: every type)
    server_numbered: frozenset[str] = frozenset()  # methods whose stage numbers rows itself (IDENTITY)


class StageLoad(Protocol):
    def write(self, batches: Iterable[pa.RecordBatch], first_row: int) -> None:
        """Send the batches; their rows are numbered first_row, first_row + 1, ... in the stage."""
        ...


class Driver(Protocol):
    name: str
    capabilities: DriverCapabilities
    spec: ConnectSpec

    def connect(self) -> Any:
        """A DB-API connection in autocommit mode with bounded lock waits."""
        ...

    def errors(self) -> tuple[type[BaseException], ...]:
        """The exception classes this driver raises."""
        ...

    def sort_error(self, exc: BaseException, what: str) -> BridgeError: ...

    def is_duplicate_key(self, exc: BaseException) -> bool: ...

    def sql(self, text: str) -> str:
        """bridge's T-SQL uses %s placeholders; the driver's own style."""
        ...

    def load(self, method: str, connection: Any, plan: ApplyPlan, stage: str) -> StageLoad: ...

    def needs_shared_stage(self, method: str, plan: ApplyPlan) -> bool:
        """Whether this load must go into a permanent stage rather than the session's temp table
        (besides a load on a connection of its own)."""
        ...


PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


def failure_of_path(exc: BaseException, what: str) -> PermanentError:
    """A native panic (a BaseException from Rust) or any other crash inside a load: a failure of that
    load path, never a dead worker."""
    return PermanentError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
