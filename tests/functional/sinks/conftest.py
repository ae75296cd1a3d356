"""Fixtures of the sink functional tests: a moto-backed context factory and the fault proxy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from capture_ext.models import SinkContext
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.proxy import AwsProxy
from tests.unit.sinks.records import ENV_ID, FUNCTION

BUCKET = "capture-bucket"
LOG_GROUP = "/aws/capture-ext/qa-fn"

MakeContext = Callable[..., SinkContext]


@pytest.fixture
def bucket(aws: AwsHelper) -> str:
    return aws.create_bucket(BUCKET)


@pytest.fixture
def make_ctx(aws_env: dict[str, str]) -> MakeContext:
    """``make_ctx(name, endpoint=None, **CAPTURE_vars)`` → a SinkContext against moto (or a proxy)."""

    def make(name: str, endpoint: str | None = None, **variables: str) -> SinkContext:
        env = dict(aws_env)
        env.update({"AWS_LAMBDA_FUNCTION_NAME": FUNCTION, "CAPTURE_S3_BUCKET": BUCKET, "CAPTURE_LOG_GROUP": LOG_GROUP})
        env.update(variables)
        if endpoint:
            env["AWS_ENDPOINT_URL"] = endpoint
        return SinkContext(
            name=name,
            env=env,
            function_name=FUNCTION,
            environment_id=ENV_ID,
            region="us-east-1",
            logger=logging.getLogger(f"capture_ext.sinks.{name}"),
        )

    return make


@pytest.fixture
async def proxy(aws_env: dict[str, str]) -> AsyncIterator[AwsProxy]:
    server = AwsProxy(aws_env["AWS_ENDPOINT_URL"])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def ids(records: Any) -> list[str]:
    return sorted(r["inference_id"] for r in records)
