"""Built-in local sinks for development and tests: ``file`` and ``stdout``.

``stdout`` is also useful on Lambda: the extension's stdout lands in the function's CloudWatch
log group, so one JSON line per record is captured at no extra cost.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

import orjson

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Batch, SinkContext, SinkRegistrar, WriteResult
from capture_ext.variables import EnvConfig, not_blank, setting


@dataclass(frozen=True, slots=True)
class FileConfig(EnvConfig):
    """The ``file`` sink's settings."""

    directory: str = setting(
        "CAPTURE_FILE_DIR", "/tmp/capture-ext/files", "Directory of the `file` sink (JSON Lines).", not_blank
    )


class _ClosableSink:
    name = ""

    def __init__(self) -> None:
        self.closed = False

    async def start(self) -> None:
        return None

    async def close(self, timeout_s: float) -> None:
        self.closed = True


class FileSink(_ClosableSink):
    """JSON Lines, one file per batch: ``<dir>/<batch_id>.jsonl``, rewritten whole on retry."""

    name = "file"

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    async def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def path_for(self, batch: Batch) -> str:
        return os.path.join(self.directory, f"{batch.batch_id}.jsonl")

    def _write(self, batch: Batch) -> None:
        path = self.path_for(batch)
        # Unique per write: a write cut off by the deadline keeps running in its thread, and must not
        # share a temporary file with the retry that follows it.
        temporary = f"{path}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
        payload = b"".join(orjson.dumps(record, default=str) + b"\n" for record in batch.records)
        # A retry of a partial failure carries fewer records: keep what the file already has.
        if batch.attempt > 1 and os.path.exists(path):
            with open(path, "rb") as existing:
                known = {orjson.loads(line).get("inference_id") for line in existing if line.strip()}
            payload = b"".join(
                orjson.dumps(r, default=str) + b"\n" for r in batch.records if r.get("inference_id") not in known
            )
            with open(path, "ab") as out:
                out.write(payload)
            return
        with open(temporary, "wb") as out:
            out.write(payload)
        os.replace(temporary, path)

    async def write_batch(self, batch: Batch) -> WriteResult:
        if self.closed:
            return WriteResult.fatal("file sink is closed")
        try:
            await asyncio.to_thread(self._write, batch)
        except PermissionError as exc:
            return WriteResult.fatal(f"cannot write to {self.directory}: {exc}")
        except OSError as exc:
            return WriteResult.retryable(f"cannot write to {self.directory}: {exc}")
        return WriteResult.ok()


class StdoutSink(_ClosableSink):
    """One JSON line per record on stdout."""

    name = "stdout"

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        super().__init__()
        self.stream = stream

    async def write_batch(self, batch: Batch) -> WriteResult:
        if self.closed:
            return WriteResult.fatal("stdout sink is closed")
        stream = self.stream or sys.stdout.buffer
        try:
            stream.write(b"".join(orjson.dumps(r, default=str) + b"\n" for r in batch.records))
            stream.flush()
        except OSError as exc:
            return WriteResult.retryable(f"stdout write failed: {exc}")
        return WriteResult.ok()


def _file_sink(ctx: SinkContext, config: FileConfig | None = None) -> FileSink:
    return FileSink((config or FileConfig.from_env(ctx.env)).directory)


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    register("file", _file_sink, variables=FileConfig.variables())
    register("stdout", lambda ctx: StdoutSink())
