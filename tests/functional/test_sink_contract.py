"""Every built-in sink runs the public sink contract kit, exactly as a plugin author would.

Sinks are built through their registered entry points (``get_plugin_manager()``), so these
tests also prove the built-ins are picked up the same way third-party plugins are. AWS sinks
write to moto in server mode over HTTP, through a proxy that can answer like a throttling or
denying AWS; other breakages remove the resource the sink writes to.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from capture_ext.core.plugins import get_plugin_manager
from capture_ext.models import Outcome, Record, Sink, SinkFactory
from capture_ext.testing.aws import AwsHelper
from capture_ext.testing.contract import SinkContract
from tests.functional.sinks.proxy import AwsProxy, json_error, s3_error


@cache
def builtin(name: str) -> SinkFactory:
    """The factory registered for ``name`` by the installed built-in plugins."""
    plugins = get_plugin_manager()
    factories = plugins.sink_factories()
    assert name in factories, f"built-in sink {name!r} is not registered: {plugins.errors}"
    assert plugins.sink_owner(name).startswith("builtin_"), plugins.sink_owner(name)
    return factories[name]


# -- local sinks -------------------------------------------------------------------------------
class TestFileSink(SinkContract):
    sink_name = "file"
    breakages = ("directory_replaced_by_a_file",)

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "capture"

    def make_sink(self) -> Sink:
        return builtin("file")(self.context("file", env={"CAPTURE_FILE_DIR": str(self.directory)}))

    async def read_back(self) -> list[Record]:
        return [
            json.loads(line)
            for path in sorted(self.directory.glob("*.jsonl"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]

    async def break_sink(self, breakage: str) -> Outcome:
        self.saved = self.directory.with_name("saved")
        self.directory.rename(self.saved)
        self.directory.write_text("not a directory")
        return Outcome.RETRYABLE

    async def heal_sink(self, breakage: str) -> None:
        self.directory.unlink()
        self.saved.rename(self.directory)


class _BrokenPipe:
    """A stdout whose reader went away."""

    class buffer:
        @staticmethod
        def write(data: bytes) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        @staticmethod
        def flush() -> None:
            raise BrokenPipeError(32, "Broken pipe")


class TestStdoutSink(SinkContract):
    sink_name = "stdout"
    idempotent = False  # a stream cannot take a line back: at-least-once, deduplicate on inference_id
    breakages = ("broken_pipe",)

    @pytest.fixture(autouse=True)
    def _capture(self, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capture = capsysbinary
        self.monkeypatch = monkeypatch
        self.lines: list[bytes] = []

    def make_sink(self) -> Sink:
        return builtin("stdout")(self.context("stdout"))

    async def read_back(self) -> list[Record]:
        self.lines += self.capture.readouterr().out.splitlines()
        return [json.loads(line) for line in self.lines if line.strip()]

    async def break_sink(self, breakage: str) -> Outcome:
        self.monkeypatch.setattr(sys, "stdout", _BrokenPipe())
        return Outcome.RETRYABLE

    async def heal_sink(self, breakage: str) -> None:
        self.monkeypatch.undo()


# -- AWS sinks (moto server mode) -------------------------------------------------------------
class _AwsContract(SinkContract):
    """Sinks talk to moto through a fault-injecting proxy; read-back goes to moto directly."""

    bucket = "capture-contract"
    #: breakage -> (AWS error code, HTTP status) the proxy answers every call with.
    faults: dict[str, tuple[str, int]] = {}

    @pytest.fixture(autouse=True)
    async def _aws(self, aws: AwsHelper, aws_env: dict[str, str]) -> AsyncIterator[None]:
        self.aws = aws
        self.proxy = AwsProxy(aws_env["AWS_ENDPOINT_URL"])
        endpoint = await self.proxy.start()
        self.env = {**aws_env, "AWS_ENDPOINT_URL": endpoint, "CAPTURE_S3_BUCKET": self.bucket}
        self.prepare()
        try:
            yield
        finally:
            await self.proxy.stop()

    def prepare(self) -> None:
        self.aws.create_bucket(self.bucket)

    def make_sink(self) -> Sink:
        assert self.sink_name
        return builtin(self.sink_name)(self.context(self.sink_name, env=self.env))

    def error(self, code: str, status: int) -> web.Response:
        return json_error(code, status)

    async def break_sink(self, breakage: str) -> Outcome:
        code, status = self.faults[breakage]
        self.proxy.faults.append(lambda call: self.error(code, status))
        return Outcome.RETRYABLE if breakage == "throttled" else Outcome.FATAL

    async def heal_sink(self, breakage: str) -> None:
        self.proxy.faults.clear()

    def delete_bucket(self) -> None:
        s3 = self.aws.client("s3")
        for key in self.aws.list_keys(self.bucket):
            s3.delete_object(Bucket=self.bucket, Key=key)
        s3.delete_bucket(Bucket=self.bucket)


class _S3Contract(_AwsContract):
    breakages = ("bucket_deleted", "throttled", "access_denied")
    faults = {"throttled": ("SlowDown", 503), "access_denied": ("AccessDenied", 403)}

    def error(self, code: str, status: int) -> web.Response:
        return s3_error(code, status)

    async def break_sink(self, breakage: str) -> Outcome:
        if breakage != "bucket_deleted":
            return await super().break_sink(breakage)
        self.delete_bucket()
        return Outcome.FATAL  # NoSuchBucket: a configuration error, retrying cannot help

    async def heal_sink(self, breakage: str) -> None:
        if breakage != "bucket_deleted":
            return await super().heal_sink(breakage)
        self.aws.create_bucket(self.bucket)


class TestS3JsonlSink(_S3Contract):
    sink_name = "s3_jsonl"

    async def read_back(self) -> list[Record]:
        return [r for records in self.aws.read_all_jsonl(self.bucket).values() for r in records]


class TestS3ParquetSink(_S3Contract):
    sink_name = "s3_parquet"

    async def read_back(self) -> list[Record]:
        rows: list[dict[str, Any]] = []
        for key in self.aws.list_keys(self.bucket):
            rows += self.aws.read_parquet(self.bucket, key).to_pylist()
        for row in rows:  # payload columns are JSON text by design
            for column in ("input", "output", "metadata"):
                row[column] = None if row[column] is None else json.loads(row[column])
        return rows


class TestCloudWatchSink(_AwsContract):
    sink_name = "cloudwatch"
    idempotent = False  # PutLogEvents cannot overwrite: at-least-once, events carry inference_id
    breakages = ("log_group_deleted", "throttled", "access_denied")
    faults = {"throttled": ("ThrottlingException", 400), "access_denied": ("AccessDeniedException", 400)}
    group = "/aws/capture-ext/contract-fn"

    def prepare(self) -> None:
        # Not created by the sink, so that deleting it is a breakage the sink cannot repair.
        self.env |= {"CAPTURE_LOG_GROUP": self.group, "CAPTURE_LOG_GROUP_CREATE": "0"}
        self.aws.create_log_group(self.group)

    async def break_sink(self, breakage: str) -> Outcome:
        if breakage != "log_group_deleted":
            return await super().break_sink(breakage)
        self.aws.client("logs").delete_log_group(logGroupName=self.group)
        return Outcome.FATAL

    async def heal_sink(self, breakage: str) -> None:
        if breakage != "log_group_deleted":
            return await super().heal_sink(breakage)
        self.aws.create_log_group(self.group)

    async def read_back(self) -> list[Record]:
        try:
            streams = self.aws.all_log_messages(self.group)
        except self.aws.client("logs").exceptions.ResourceNotFoundException:
            return []
        return [message for messages in streams.values() for message in messages]


class TestFirehoseSink(_AwsContract):
    sink_name = "firehose"
    idempotent = False  # PutRecordBatch has no idempotency key: at-least-once
    breakages = ("delivery_stream_deleted", "throttled", "access_denied")
    faults = {"throttled": ("ServiceUnavailableException", 503), "access_denied": ("AccessDeniedException", 400)}
    stream = "capture-contract"

    def prepare(self) -> None:
        self.aws.create_bucket(self.bucket)
        self.aws.create_delivery_stream(self.stream, self.bucket, prefix="firehose/")
        self.env["CAPTURE_FIREHOSE_STREAM"] = self.stream

    async def read_back(self) -> list[Record]:
        return [r for records in self.aws.read_all_jsonl(self.bucket, "firehose/").values() for r in records]

    async def break_sink(self, breakage: str) -> Outcome:
        if breakage != "delivery_stream_deleted":
            return await super().break_sink(breakage)
        self.aws.client("firehose").delete_delivery_stream(DeliveryStreamName=self.stream)
        return Outcome.FATAL

    async def heal_sink(self, breakage: str) -> None:
        if breakage != "delivery_stream_deleted":
            return await super().heal_sink(breakage)
        self.aws.create_delivery_stream(self.stream, self.bucket, prefix="firehose/")


def test_every_builtin_sink_runs_the_contract() -> None:
    """A new built-in sink without a contract class here fails this test."""
    plugins = get_plugin_manager()
    builtins = {name for name in plugins.sink_factories() if plugins.sink_owner(name).startswith("builtin_")}
    classes = [SinkContract]
    for cls in classes:
        classes += cls.__subclasses__()
    covered = {cls.sink_name for cls in classes}
    assert builtins, plugins.errors
    assert builtins <= covered, f"built-in sinks without a contract test: {sorted(builtins - covered)}"
