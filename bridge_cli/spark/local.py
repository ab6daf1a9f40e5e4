"""Spark on this machine: the source is exported from the profile's lake to Parquet (numbered in the
lake's read order), then bridge's staging entry point runs in a child process on a local
SparkSession, so that several cores write the stage at once.

The child is its own process group (a terminal's Ctrl-C reaches the worker, which decides) and asks
the kernel to kill it if the worker dies (kill -9 included), so no orphan keeps writing to a stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge_cli.errors import TransientError
from bridge_cli.events import Job
from bridge_cli.spark.settings import SparkSettings
from bridge_cli.spark.spec import (
    PARENT_ENV,
    PASSWORD_ENV,
    ROW,
    StageFailure,
    StageFigures,
    StageSpec,
    parse_output,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from bridge_cli.lakes import Lake, SourceColumn

_CANCEL_GRACE_SECONDS = 10.0


def spark_readable(batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
    """The batch as Spark 3.5 reads it from Parquet, led by its order numbers: TIME has no Spark
    type, so it goes as text (SQL Server converts it back, to the microsecond)."""
    import pyarrow as pa

    arrays = [pa.array(range(first_row, first_row + batch.num_rows), pa.int64())]
    for array in batch.columns:
        if pa.types.is_time(array.type):
            array = array.cast(pa.string())
        elif pa.types.is_dictionary(array.type):
            array = array.cast(array.type.value_type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, [ROW, *batch.schema.names])


def export_parquet(batches: Iterable[pa.RecordBatch], folder: Path, on_batch: Callable[[int], None]) -> int:
    """Write the batches to one Parquet file (row groups of a batch each, so that Spark can split it
    across partitions); return the rows written."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    writer: Any = None
    rows = 0
    try:
        for batch in batches:
            ready = spark_readable(batch, rows + 1)
            if writer is None:
                writer = pq.ParquetWriter(folder / "part-00000.parquet", ready.schema)
            writer.write_batch(ready)
            rows += batch.num_rows
            on_batch(rows)
    finally:
        if writer is not None:
            writer.close()
    return rows


class LocalLauncher:
    def __init__(self, config: SparkSettings) -> None:
        self.config = config

    def start(self, spec: StageSpec, job: Job, columns: list[SourceColumn], lake: Lake,
              on_wait: Callable[[], None]) -> LocalRun:
        assert job.source is not None
        folder = self.config.work_dir / f"{job.event_id}-{uuid.uuid4().hex[:8]}"
        try:
            source = lake.read_source(job.source, [c.name for c in columns], 50_000)
            exported = export_parquet(_closing(source), folder / "source", lambda rows: on_wait())
            conf = dict(spec.spark_conf)
            if self.config.jars:
                conf.setdefault("spark.jars", ",".join(self.config.jars))
            parquet = str(folder / "source") if exported else None
            local_spec = dataclasses.replace(spec, table=None, parquet=parquet, spark_conf=conf)
            return LocalRun(self.config, local_spec, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


class LocalRun:
    def __init__(self, config: SparkSettings, spec: StageSpec, folder: Path) -> None:
        self.folder = folder
        self.link = str(folder / "spark.log")
        self.empty = spec.parquet is None  # nothing exported: nothing to start
        self.process: subprocess.Popen[bytes] | None = None
        if self.empty:
            return
        spec_file = folder / "spec.json"
        spec_file.write_text(spec.to_json(), encoding="utf-8")
        env = dict(os.environ)
        env[PARENT_ENV] = str(os.getpid())
        env["PYSPARK_PYTHON"] = config.python
        if config.jdbc.password is not None:
            env[PASSWORD_ENV] = config.jdbc.password
        self._stdout = open(folder / "result.txt", "wb")  # noqa: SIM115 - the child writes it
        self._stderr = open(self.link, "wb")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [config.python, "-m", "bridge_cli.spark.job", str(spec_file)],
                stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransientError(f"cannot start the local Spark job with {config.python}: {exc}") from None

    def poll(self) -> StageFigures | StageFailure | None:
        if self.process is None:
            return StageFigures(0, (), {}) if self.empty else StageFailure("not started", False)
        code = self.process.poll()
        if code is None:
            return None
        self._close_files()
        answer = parse_output((self.folder / "result.txt").read_text(encoding="utf-8", errors="replace"))
        if answer is not None:
            return answer
        return StageFailure(f"the Spark job exited with code {code} without an answer: {self._last_error()}", False)

    def _last_error(self) -> str:
        try:
            lines = Path(self.link).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        meaningful = [line.strip() for line in lines if "Error" in line or "Exception" in line]
        return (meaningful[-1] if meaningful else (lines[-1].strip() if lines else "no output"))[:500]

    def cancel(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, _CANCEL_GRACE_SECONDS), (signal.SIGKILL, 30.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # the JVM is in the child's group
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left (the JVM)

    def cleanup(self) -> None:
        self._close_files()
        # The log stays when the run failed (its path is in the event's message); else all goes.
        answer = None
        with contextlib.suppress(OSError):
            answer = parse_output((self.folder / "result.txt").read_text(encoding="utf-8", errors="replace"))
        if isinstance(answer, StageFigures) or self.empty:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            shutil.rmtree(self.folder / "source", ignore_errors=True)

    def _close_files(self) -> None:
        for handle in (getattr(self, "_stdout", None), getattr(self, "_stderr", None)):
            if handle is not None and not handle.closed:
                handle.close()


def _closing(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
