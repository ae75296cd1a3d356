"""s3_jsonl against moto over HTTP: layout, content read back, idempotent retries, failures."""

from __future__ import annotations

import gzip
import logging
import re
from datetime import UTC, datetime

import pytest

from capture_ext.models import Outcome
from capture_ext.sinks.s3_jsonl import S3JsonlSink
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.conftest import BUCKET, MakeContext, ids
from tests.functional.sinks.proxy import AwsProxy, s3_error
from tests.unit.sinks.records import ENV_ID, make_batch, make_records

START = datetime(2026, 11, 22, 3, 58, 0, tzinfo=UTC)
KEY = re.compile(
    r"^inference-capture/jsonl/function=qa-fn/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/" + ENV_ID + r"-(\d{8})\.jsonl\.gz$"
)


async def test_batch_spanning_two_hours_lands_in_two_partitions(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper
) -> None:
    records = make_records(300, START, step_s=1.0)  # 03:58:00 .. 04:02:59
    sink = S3JsonlSink(make_ctx("s3_jsonl"))
    try:
        result = await sink.write_batch(make_batch(records, batch_sequence=7))
    finally:
        await sink.close(1.0)

    assert result.outcome is Outcome.OK
    written = aws.read_all_jsonl(BUCKET)
    assert sorted(written) == [
        f"inference-capture/jsonl/function=qa-fn/dt=2026-11-22/hour=03/{ENV_ID}-00000007.jsonl.gz",
        f"inference-capture/jsonl/function=qa-fn/dt=2026-11-22/hour=04/{ENV_ID}-00000007.jsonl.gz",
    ]
    for key, lines in written.items():
        hour = KEY.match(key).group(2)  # type: ignore[union-attr]
        assert all(line["captured_at"][11:13] == hour for line in lines)
    lines = [line for objs in written.values() for line in objs]
    assert ids(lines) == ids(records)
    assert sorted(lines, key=lambda r: r["sequence"]) == records  # every field survives the round trip
    assert sink.stats["objects"] == 2 and sink.stats["records"] == 300


async def test_retrying_the_same_batch_overwrites_its_objects(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper
) -> None:
    records = make_records(120, START, step_s=2.0)
    batch = make_batch(records, batch_sequence=3)
    sink = S3JsonlSink(make_ctx("s3_jsonl"))
    first = await sink.write_batch(batch)
    keys_after_first = aws.list_keys(BUCKET)
    bodies_after_first = [aws.read_object(BUCKET, k) for k in keys_after_first]
    second = await sink.write_batch(batch)
    await sink.close(1.0)

    assert first.is_ok and second.is_ok
    assert aws.list_keys(BUCKET) == keys_after_first  # one object per key, no duplicates
    assert [aws.read_object(BUCKET, k) for k in keys_after_first] == bodies_after_first  # byte-identical
    lines = [line for objs in aws.read_all_jsonl(BUCKET).values() for line in objs]
    assert ids(lines) == ids(records) and len(lines) == len(records)


async def test_failing_partition_is_retried_alone_and_arrives_once(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, proxy: AwsProxy
) -> None:
    """503 SlowDown on one partition: only its records are named (by position); the retry completes the set."""
    records = make_records(300, START, step_s=1.0)
    batch = make_batch(records, batch_sequence=9)
    hour_04 = {r["inference_id"] for r in records if r["captured_at"][11:13] == "04"}
    proxy.faults.append(
        lambda call: s3_error("SlowDown", 503) if "hour%3D04" in call.path or "hour=04" in call.path else None
    )
    sink = S3JsonlSink(make_ctx("s3_jsonl", endpoint=proxy.endpoint))

    first = await sink.write_batch(batch)
    assert first.outcome is Outcome.RETRYABLE
    assert first.failed_indices == tuple(i for i, r in enumerate(records) if r["inference_id"] in hour_04)
    assert "SlowDown" in (first.error or "")
    assert len(aws.list_keys(BUCKET)) == 1

    proxy.faults.clear()  # the service recovers
    second = await sink.write_batch(batch.subset(first.failed_indices, attempt=2))
    # A dispatcher that resends the whole batch must not duplicate anything either.
    third = await sink.write_batch(batch)
    await sink.close(1.0)

    assert second.is_ok and third.is_ok
    written = aws.read_all_jsonl(BUCKET)
    assert len(written) == 2
    lines = [line for objs in written.values() for line in objs]
    assert len(lines) == len(records) and ids(lines) == ids(records)


async def test_missing_bucket_is_fatal_with_one_clear_log_line(
    make_ctx: MakeContext, aws_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    sink = S3JsonlSink(make_ctx("s3_jsonl", CAPTURE_S3_BUCKET="no-such-bucket"))
    batch = make_batch(make_records(5, START))
    with caplog.at_level(logging.ERROR):
        first = await sink.write_batch(batch)
        second = await sink.write_batch(batch)
    await sink.close(1.0)

    assert first.outcome is Outcome.FATAL and second.outcome is Outcome.FATAL
    assert "no-such-bucket" in (first.error or "") and "does not exist" in (first.error or "")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "no-such-bucket" in r.getMessage()]
    assert len(errors) == 1  # once per cause, not once per batch


async def test_access_denied_is_fatal_and_names_the_permission(
    make_ctx: MakeContext, bucket: str, proxy: AwsProxy
) -> None:
    proxy.faults.append(lambda call: s3_error("AccessDenied", 403, "Access Denied"))
    sink = S3JsonlSink(make_ctx("s3_jsonl", endpoint=proxy.endpoint))
    result = await sink.write_batch(make_batch(make_records(3, START)))
    await sink.close(1.0)

    assert result.outcome is Outcome.FATAL
    assert "s3:PutObject" in (result.error or "") and f"arn:aws:s3:::{BUCKET}/inference-capture/jsonl/*" in (
        result.error or ""
    )


async def test_unreachable_endpoint_is_retryable(make_ctx: MakeContext, aws_env: dict[str, str]) -> None:
    from capture_ext.testing.net import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    sink = S3JsonlSink(make_ctx("s3_jsonl", endpoint=dead))
    result = await sink.write_batch(make_batch(make_records(3, START)))
    await sink.close(1.0)
    assert result.outcome is Outcome.RETRYABLE
    assert result.failed_ids == ()  # nothing got through: the whole batch


async def test_objects_are_gzip_json_lines_with_metadata(make_ctx: MakeContext, bucket: str, aws: AwsHelper) -> None:
    sink = S3JsonlSink(make_ctx("s3_jsonl", CAPTURE_S3_PREFIX="/custom/prefix/"))
    await sink.write_batch(make_batch(make_records(4, START.replace(minute=30)), batch_sequence=12))
    await sink.close(1.0)

    (key,) = aws.list_keys(BUCKET)
    assert key == f"custom/prefix/jsonl/function=qa-fn/dt=2026-11-22/hour=03/{ENV_ID}-00000012.jsonl.gz"
    head = aws.client("s3").head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "application/gzip"
    assert head["Metadata"] == {"batch-id": f"{ENV_ID}-00000012", "records": "4"}
    assert gzip.decompress(aws.read_object(BUCKET, key)).count(b"\n") == 4


async def test_write_after_close_is_fatal(make_ctx: MakeContext, bucket: str) -> None:
    sink = S3JsonlSink(make_ctx("s3_jsonl"))
    await sink.close(1.0)
    await sink.close(1.0)  # idempotent
    assert (await sink.write_batch(make_batch(make_records(1, START)))).outcome is Outcome.FATAL
