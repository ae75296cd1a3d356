"""firehose against moto (DirectPut → S3): limits per request, partial failures, fatal errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from capture_ext.models import Outcome
from capture_ext.sinks.firehose import FirehoseSink
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.conftest import BUCKET, MakeContext, ids
from tests.functional.sinks.proxy import AwsProxy, json_error
from tests.unit.sinks.records import make_batch, make_record, make_records

STREAM = "capture-stream"
START = datetime(2026, 11, 22, 4, 0, 0, tzinfo=UTC)


def delivered(aws: AwsHelper) -> list[dict]:
    """Every record Firehose delivered to S3 (moto writes one object per call, lines concatenated)."""
    lines: list[dict] = []
    for key in aws.list_keys(BUCKET, "firehose/"):
        lines += [json.loads(line) for line in aws.read_object(BUCKET, key).splitlines()]
    return lines


def assert_within_limits(proxy: AwsProxy) -> None:
    for call in proxy.of("PutRecordBatch"):
        import base64

        blobs = [base64.b64decode(r["Data"]) for r in call.json()["Records"]]
        assert 1 <= len(blobs) <= 500
        assert sum(len(b) for b in blobs) <= 4 * 1024 * 1024
        assert all(len(b) <= 1000 * 1024 and b.endswith(b"\n") for b in blobs)


async def test_records_are_split_into_500_record_requests_and_delivered(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, proxy: AwsProxy
) -> None:
    aws.create_delivery_stream(STREAM, BUCKET)
    records = make_records(1_200, START)
    sink = FirehoseSink(make_ctx("firehose", endpoint=proxy.endpoint, CAPTURE_FIREHOSE_STREAM=STREAM))
    result = await sink.write_batch(make_batch(records))
    await sink.close(1.0)

    assert result.is_ok
    assert [len(c.json()["Records"]) for c in proxy.of("PutRecordBatch")] == [500, 500, 200]
    assert_within_limits(proxy)
    got = delivered(aws)
    assert len(got) == 1_200 and ids(got) == ids(records)


async def test_large_records_respect_the_4_mib_request_limit_and_truncate_oversize(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, proxy: AwsProxy
) -> None:
    aws.create_delivery_stream(STREAM, BUCKET)
    records = [make_record(i, START) for i in range(10)]
    for r in records[:9]:
        r["input"]["context"] = "y" * (900 * 1024)  # 9 × 900 KiB: at most 4 per request
    records[9]["input"]["context"] = "z" * (1200 * 1024)  # over the 1,000 KiB record limit
    sink = FirehoseSink(make_ctx("firehose", endpoint=proxy.endpoint, CAPTURE_FIREHOSE_STREAM=STREAM))
    result = await sink.write_batch(make_batch(records))
    await sink.close(1.0)

    assert result.is_ok
    assert_within_limits(proxy)
    assert [len(c.json()["Records"]) for c in proxy.of("PutRecordBatch")] == [4, 4, 2]
    got = {r["inference_id"]: r for r in delivered(aws)}
    assert sorted(got) == ids(records)
    assert got[records[9]["inference_id"]]["truncated"] is True
    assert sink.stats["truncated"] == 1


async def test_only_records_that_failed_are_reported_for_retry(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, proxy: AwsProxy
) -> None:
    aws.create_delivery_stream(STREAM, BUCKET)
    records = make_records(700, START)
    failing = {3, 250, 499, 650}

    def fail_some(call, status, body):
        if call.operation != "PutRecordBatch" or len(proxy.of("PutRecordBatch")) > 2:
            return body
        answer = json.loads(body)
        offset = 0 if len(proxy.of("PutRecordBatch")) == 1 else 500
        for slot in range(len(answer["RequestResponses"])):
            if slot + offset in failing:
                answer["RequestResponses"][slot] = {
                    "ErrorCode": "ServiceUnavailableException",
                    "ErrorMessage": "Slow down.",
                }
        answer["FailedPutCount"] = sum(1 for e in answer["RequestResponses"] if "ErrorCode" in e)
        return json.dumps(answer).encode()

    proxy.rewrites.append(fail_some)
    sink = FirehoseSink(make_ctx("firehose", endpoint=proxy.endpoint, CAPTURE_FIREHOSE_STREAM=STREAM))
    batch = make_batch(records)
    first = await sink.write_batch(batch)
    assert first.outcome is Outcome.RETRYABLE
    assert first.failed_indices == tuple(sorted(failing))

    second = await sink.write_batch(batch.subset(first.failed_indices, attempt=2))
    await sink.close(1.0)
    assert second.is_ok
    assert [len(c.json()["Records"]) for c in proxy.of("PutRecordBatch")][-1] == len(failing)


async def test_missing_delivery_stream_is_fatal(make_ctx: MakeContext, aws_env: dict[str, str]) -> None:
    sink = FirehoseSink(make_ctx("firehose", CAPTURE_FIREHOSE_STREAM="nope"))
    result = await sink.write_batch(make_batch(make_records(2, START)))
    await sink.close(1.0)
    assert result.outcome is Outcome.FATAL and "'nope' does not exist" in (result.error or "")


async def test_service_unavailable_is_retryable_for_the_whole_batch(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, proxy: AwsProxy
) -> None:
    aws.create_delivery_stream(STREAM, BUCKET)
    proxy.faults.append(lambda call: json_error("ServiceUnavailableException", 500, "Slow down."))
    sink = FirehoseSink(make_ctx("firehose", endpoint=proxy.endpoint, CAPTURE_FIREHOSE_STREAM=STREAM))
    result = await sink.write_batch(make_batch(make_records(600, START)))
    await sink.close(1.0)
    assert result.outcome is Outcome.RETRYABLE and result.failed_ids == ()
    assert len(proxy.of("PutRecordBatch")) == 1  # no hammering once the service pushes back
