"""cloudwatch against moto, with every PutLogEvents request checked against the AWS limits.

moto stores what it gets without enforcing sizes, so the proxy records each request and the
tests check count, bytes (+26 per event), order and span on what was really sent.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from capture_ext.models import Outcome
from capture_ext.sinks._serialize import dumps
from capture_ext.sinks.cloudwatch import MAX_MESSAGE_BYTES, CloudWatchSink
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.conftest import LOG_GROUP, MakeContext, ids
from tests.functional.sinks.proxy import AwsProxy, json_error
from tests.unit.sinks.records import ENV_ID, iso, make_batch, make_record, make_records


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def tiny_record(sequence: int, at: datetime) -> dict:
    return {"inference_id": f"{sequence:08x}", "captured_at": iso(at)}


def assert_within_limits(proxy: AwsProxy) -> list[dict]:
    """Every PutLogEvents request obeys the documented limits; returns all events sent."""
    sent: list[dict] = []
    requests = proxy.of("PutLogEvents")
    assert requests, "no PutLogEvents request was made"
    for call in requests:
        events = call.json()["logEvents"]
        assert 1 <= len(events) <= 10_000
        assert sum(len(e["message"].encode()) + 26 for e in events) <= 1_048_576
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] < 24 * 3600 * 1000
        assert all(len(e["message"].encode()) + 26 <= 256 * 1024 for e in events)
        sent.extend(events)
    return sent


async def _write(make_ctx: MakeContext, proxy: AwsProxy, records: list[dict], **variables: str):
    sink = CloudWatchSink(make_ctx("cloudwatch", endpoint=proxy.endpoint, **variables))
    try:
        return await sink.write_batch(make_batch(records)), sink
    finally:
        await sink.close(1.0)


async def test_many_small_events_are_split_into_10000_event_requests(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    start = _now() - timedelta(minutes=30)
    # Tiny events (~75 bytes): the 10,000-event limit binds long before the byte limit.
    records = [tiny_record(i, start + timedelta(milliseconds=i)) for i in range(25_000)]
    result, sink = await _write(make_ctx, proxy, records)

    assert result.is_ok
    sent = assert_within_limits(proxy)
    assert [len(c.json()["logEvents"]) for c in proxy.of("PutLogEvents")] == [10_000, 10_000, 5_000]
    assert len(sent) == 25_000
    streams = aws.all_log_messages(LOG_GROUP)
    stored = [m for messages in streams.values() for m in messages]
    assert ids(stored) == ids(records)
    assert sink.stats["events"] == 25_000 and sink.stats["requests"] == 3


async def test_events_at_the_size_limit_fill_requests_exactly(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    """Events of exactly 256 KiB (message + 26 bytes): four make exactly 1,048,576 bytes."""
    start = _now() - timedelta(minutes=5)
    records = [make_record(i, start + timedelta(seconds=i)) for i in range(10)]
    for r in records:
        r["input"]["context"] = ""
        r["input"]["context"] = "x" * (MAX_MESSAGE_BYTES - len(dumps(r)))
        assert len(dumps(r)) == MAX_MESSAGE_BYTES
    result, sink = await _write(make_ctx, proxy, records)

    assert result.is_ok
    sent = assert_within_limits(proxy)
    requests = [c.json()["logEvents"] for c in proxy.of("PutLogEvents")]
    assert [len(r) for r in requests] == [4, 4, 2]
    assert sum(len(e["message"].encode()) + 26 for e in requests[0]) == 1_048_576
    stored = [m for ms in aws.all_log_messages(LOG_GROUP).values() for m in ms]
    assert ids(stored) == ids(records) and len(sent) == 10
    assert sink.stats["truncated"] == 0


async def test_oversize_event_is_truncated_visibly_not_dropped(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    start = _now() - timedelta(minutes=1)
    big = make_record(0, start)
    big["input"]["context"] = "é" * (400 * 1024)  # 800 KB of UTF-8
    small = make_record(1, start + timedelta(seconds=1))
    result, sink = await _write(make_ctx, proxy, [big, small])

    assert result.is_ok
    assert_within_limits(proxy)
    stored = {m["inference_id"]: m for ms in aws.all_log_messages(LOG_GROUP).values() for m in ms}
    assert set(stored) == {big["inference_id"], small["inference_id"]}
    cut = stored[big["inference_id"]]
    assert cut["truncated"] is True and cut["original_bytes"] > 800 * 1024
    assert cut["captured_at"] == big["captured_at"] and cut["payload_prefix"].startswith('{"inference_id"')
    assert "truncated" not in stored[small["inference_id"]]
    assert sink.stats["truncated"] == 1


async def test_out_of_order_events_over_more_than_a_day_are_sorted_and_split(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    base = _now() - timedelta(hours=40)
    offsets_h = [30, 0.5, 12, 39, 1, 25, 6, 0, 38, 24.5]  # shuffled, spanning 39 hours
    records = [make_record(i, base + timedelta(hours=h)) for i, h in enumerate(offsets_h)]
    result, _ = await _write(make_ctx, proxy, records)

    assert result.is_ok
    sent = assert_within_limits(proxy)
    assert len(sent) == len(records)
    streams = aws.all_log_messages(LOG_GROUP)
    days = sorted({(base + timedelta(hours=h)).strftime("%Y/%m/%d") for h in offsets_h})
    assert sorted(streams) == [f"{day}/qa-fn/{ENV_ID}" for day in days]
    for stream, messages in streams.items():
        assert all(m["captured_at"][:10].replace("-", "/") == stream[:10] for m in messages)
        stamps = [m["captured_at"] for m in messages]
        assert stamps == sorted(stamps)
    assert ids([m for ms in streams.values() for m in ms]) == ids(records)


async def test_events_older_than_14_days_are_clamped_and_kept(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    old = make_record(0, _now() - timedelta(days=20))
    result, sink = await _write(make_ctx, proxy, [old])
    assert result.is_ok and sink.stats["clamped"] == 1
    (stream,) = aws.log_streams(LOG_GROUP)
    (event,) = aws.log_events(LOG_GROUP, stream)
    assert json.loads(event["message"])["captured_at"] == old["captured_at"]  # the truth stays in the message
    assert event["timestamp"] > (time.time() - 14 * 24 * 3600) * 1000


async def test_group_is_created_when_missing_and_allowed(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    records = make_records(3, _now() - timedelta(seconds=10))
    result, _ = await _write(make_ctx, proxy, records)
    assert result.is_ok
    assert [c.operation for c in proxy.calls] == [
        "CreateLogStream",  # fails: no group yet
        "CreateLogGroup",
        "CreateLogStream",
        "PutLogEvents",
    ]
    assert aws.client("logs").describe_log_groups()["logGroups"][0]["logGroupName"] == LOG_GROUP


async def test_existing_group_and_stream_are_tolerated(make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy) -> None:
    records = make_records(2, _now() - timedelta(seconds=10))
    aws.create_log_group(LOG_GROUP)
    stream = f"{records[0]['captured_at'][:10].replace('-', '/')}/qa-fn/{ENV_ID}"
    aws.client("logs").create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    result, _ = await _write(make_ctx, proxy, records)
    assert result.is_ok
    assert [m["inference_id"] for m in aws.all_log_messages(LOG_GROUP)[stream]] == [r["inference_id"] for r in records]


async def test_missing_group_without_create_is_fatal(
    make_ctx: MakeContext, aws_env: dict[str, str], proxy: AwsProxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        result, _ = await _write(make_ctx, proxy, make_records(2, _now()), CAPTURE_LOG_GROUP_CREATE="0")
    assert result.outcome is Outcome.FATAL
    assert LOG_GROUP in (result.error or "") and "logs:CreateLogGroup" in (result.error or "")
    assert sum(LOG_GROUP in r.getMessage() for r in caplog.records) == 1


async def test_missing_group_without_permission_is_fatal(
    make_ctx: MakeContext, aws_env: dict[str, str], proxy: AwsProxy
) -> None:
    proxy.faults.append(
        lambda call: (
            json_error("AccessDeniedException", 400, "not authorized to perform: logs:CreateLogGroup")
            if call.operation == "CreateLogGroup"
            else None
        )
    )
    result, _ = await _write(make_ctx, proxy, make_records(2, _now()))
    assert result.outcome is Outcome.FATAL
    assert "lacks permission logs:CreateLogGroup" in (result.error or "") and LOG_GROUP in (result.error or "")


async def test_throttling_is_retryable_and_names_unsent_records(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    start = _now() - timedelta(minutes=10)
    records = [tiny_record(i, start + timedelta(milliseconds=i)) for i in range(15_000)]
    seen: list[int] = []

    def throttle_second_put(call):
        if call.operation != "PutLogEvents":
            return None
        seen.append(1)
        return json_error("ThrottlingException", 400, "Rate exceeded") if len(seen) == 2 else None

    proxy.faults.append(throttle_second_put)
    sink = CloudWatchSink(make_ctx("cloudwatch", endpoint=proxy.endpoint))
    batch = make_batch(records)
    first = await sink.write_batch(batch)
    assert first.outcome is Outcome.RETRYABLE and "ThrottlingException" in (first.error or "")
    assert first.failed_indices == tuple(range(10_000, len(records)))  # by position: ids may repeat

    second = await sink.write_batch(batch.subset(first.failed_indices, attempt=2))
    await sink.close(1.0)
    assert second.is_ok
    stored = [m for ms in aws.all_log_messages(LOG_GROUP).values() for m in ms]
    assert len(stored) == len(records) and ids(stored) == ids(records)  # each record exactly once


async def test_rejected_events_are_counted_and_retried_with_a_fresh_timestamp(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    """A group retention shorter than an event's age makes CloudWatch reject it as expired."""
    records = make_records(4, _now() - timedelta(minutes=1))

    def expire_first(call, status, body):
        if call.operation != "PutLogEvents" or len(proxy.of("PutLogEvents")) > 1:
            return body
        answer = json.loads(body or b"{}")
        answer["rejectedLogEventsInfo"] = {"expiredLogEventEndIndex": 1}
        return json.dumps(answer).encode()

    proxy.rewrites.append(expire_first)
    sink = CloudWatchSink(make_ctx("cloudwatch", endpoint=proxy.endpoint))
    batch = make_batch(records)
    first = await sink.write_batch(batch)
    assert first.outcome is Outcome.RETRYABLE
    assert first.failed_indices == (0, 1)
    assert sink.stats["rejected"] == 2

    second = await sink.write_batch(batch.subset(first.failed_indices, attempt=2))
    await sink.close(1.0)
    assert second.is_ok
    retried = proxy.of("PutLogEvents")[-1].json()["logEvents"]
    assert all(e["timestamp"] >= (time.time() - 60) * 1000 for e in retried)  # restamped to "now"


async def test_stream_deleted_under_the_sink_is_recreated_and_resent(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    records = make_records(3, _now() - timedelta(seconds=30))
    sink = CloudWatchSink(make_ctx("cloudwatch", endpoint=proxy.endpoint))
    assert (await sink.write_batch(make_batch(records))).is_ok
    (stream,) = aws.log_streams(LOG_GROUP)
    aws.client("logs").delete_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)

    more = make_records(2, _now() - timedelta(seconds=5), first_sequence=3)
    result = await sink.write_batch(make_batch(more, batch_sequence=2))
    await sink.close(1.0)
    assert result.is_ok
    assert [c.operation for c in proxy.calls][-3:] == ["PutLogEvents", "CreateLogStream", "PutLogEvents"]
    assert [m["inference_id"] for m in aws.all_log_messages(LOG_GROUP)[stream]] == [r["inference_id"] for r in more]


async def test_group_deleted_without_create_permission_is_fatal(
    make_ctx: MakeContext, aws: AwsHelper, proxy: AwsProxy
) -> None:
    aws.create_log_group(LOG_GROUP)
    sink = CloudWatchSink(make_ctx("cloudwatch", endpoint=proxy.endpoint, CAPTURE_LOG_GROUP_CREATE="0"))
    assert (await sink.write_batch(make_batch(make_records(1, _now())))).is_ok
    aws.client("logs").delete_log_group(logGroupName=LOG_GROUP)
    result = await sink.write_batch(make_batch(make_records(2, _now()), batch_sequence=2))
    await sink.close(1.0)
    assert result.outcome is Outcome.FATAL and "CAPTURE_LOG_GROUP_CREATE=0" in (result.error or "")
