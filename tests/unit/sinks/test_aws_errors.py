"""Error classification: which failures the dispatcher should retry, and the fatal log line."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from capture_ext.models import Outcome
from capture_ext.sinks._aws import ErrorReporter, endpoint_url, is_retryable

BUCKET_ARN = "arn:aws:s3:::my-bucket/inference-capture/jsonl/*"


def client_error(code: str, status: int, retry_after: str | None = None) -> ClientError:
    headers = {"retry-after": retry_after} if retry_after else {}
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        client_error("SlowDown", 503),
        client_error("ThrottlingException", 400),
        client_error("ServiceUnavailableException", 500),
        client_error("InternalError", 500),
        client_error("SomethingNew", 502),
        client_error("TooManyRequestsException", 429),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_transient_failures_are_retryable(exc: BaseException) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDenied", 403),
        client_error("AccessDeniedException", 400),
        client_error("NoSuchBucket", 404),
        client_error("ResourceNotFoundException", 400),
        client_error("InvalidAccessKeyId", 403),
        NoCredentialsError(),
    ],
)
def test_configuration_failures_are_fatal(exc: BaseException) -> None:
    assert not is_retryable(exc)


def test_retryable_result_carries_the_hint_and_ids() -> None:
    reporter = ErrorReporter("s3_jsonl", logging.getLogger("t"))
    result = reporter.result(
        client_error("SlowDown", 503, retry_after="1.5"), action="s3:PutObject", resource=BUCKET_ARN, failed_ids=["a"]
    )
    assert result.outcome is Outcome.RETRYABLE
    assert result.retry_after_s == 1.5 and result.failed_ids == ("a",)
    assert "SlowDown" in (result.error or "")


def test_access_denied_names_action_and_resource_once(caplog: pytest.LogCaptureFixture) -> None:
    reporter = ErrorReporter("s3_jsonl", logging.getLogger("t"))
    with caplog.at_level(logging.ERROR):
        results = [
            reporter.result(client_error("AccessDenied", 403), action="s3:PutObject", resource=BUCKET_ARN)
            for _ in range(3)
        ]
    assert {r.outcome for r in results} == {Outcome.FATAL}
    message = results[0].error or ""
    assert "lacks permission s3:PutObject on " + BUCKET_ARN in message and "AccessDenied" in message
    assert len(caplog.records) == 1 and caplog.records[0].getMessage() == message


def test_endpoint_url_prefers_the_service_specific_variable() -> None:
    env = {"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://s3"}
    assert endpoint_url(env, "S3") == "http://s3"
    assert endpoint_url(env, "CLOUDWATCH_LOGS") == "http://a"
    assert endpoint_url({**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, "S3") is None
    assert endpoint_url({}, "S3") is None


def test_importing_the_sinks_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import capture_ext.sinks.s3_jsonl, capture_ext.sinks.s3_parquet, capture_ext.sinks.cloudwatch,"
        " capture_ext.sinks.firehose\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'aioboto3', 'aiobotocore', 'botocore', 'boto3',"
        " 'pyarrow', 'aiohttp'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_builtin_sinks_register_through_entry_points() -> None:
    from capture_ext.core.plugins import get_plugin_manager

    factories = get_plugin_manager(load_entrypoints=True).sink_factories()
    assert {"s3_jsonl", "s3_parquet", "cloudwatch", "firehose"} <= set(factories)
