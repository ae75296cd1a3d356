"""Request planning against the PutLogEvents and PutRecordBatch limits, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capture_ext.sinks import cloudwatch, firehose
from capture_ext.sinks.cloudwatch import LogEvent, plan_requests, rejected_indices, to_events
from tests.unit.sinks.records import iso, make_record

NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def event(ts: int, size: int) -> LogEvent:
    return LogEvent(ts, "m", size, {})


def test_count_limit() -> None:
    sizes = [len(r) for r in plan_requests([event(NOW_MS, 30) for _ in range(20_001)])]
    assert sizes == [10_000, 10_000, 1]


def test_byte_limit_counts_the_26_byte_overhead() -> None:
    # 262,144 = max event incl. overhead: exactly four fill 1,048,576 bytes, a fifth does not fit.
    requests = plan_requests([event(NOW_MS, 262_144) for _ in range(9)])
    assert [len(r) for r in requests] == [4, 4, 1]
    assert all(sum(e.size for e in r) <= cloudwatch.MAX_REQUEST_BYTES for r in requests)


def test_span_limit() -> None:
    day = 24 * 3600 * 1000
    stamps = [NOW_MS, NOW_MS + day - 1, NOW_MS + day, NOW_MS + day + 5, NOW_MS + 3 * day]
    requests = plan_requests([event(t, 100) for t in stamps])
    assert [[e.timestamp for e in r] for r in requests] == [stamps[:2], stamps[2:4], stamps[4:]]
    assert all(r[-1].timestamp - r[0].timestamp < day for r in requests)


def test_to_events_sorts_clamps_and_truncates() -> None:
    records = [
        make_record(0, NOW - timedelta(minutes=1)),
        make_record(1, NOW - timedelta(minutes=3)),
        make_record(2, NOW - timedelta(days=30)),
        make_record(3, NOW + timedelta(hours=5)),
        make_record(4, NOW - timedelta(minutes=2)),
    ]
    records[4]["input"]["context"] = "x" * 300_000
    events, truncated, clamped = to_events(records, NOW_MS)
    assert [e.record["sequence"] for e in events] == [2, 1, 4, 0, 3]
    assert truncated == 1 and clamped == 2
    assert events[0].timestamp > NOW_MS - cloudwatch.MAX_AGE_MS
    assert events[-1].timestamp < NOW_MS + cloudwatch.MAX_AHEAD_MS
    assert all(e.size == len(e.message.encode()) + 26 <= 262_144 for e in events)


def test_to_events_restamps_previously_rejected_ids() -> None:
    record = make_record(0, NOW - timedelta(days=3))
    (ev,), _, clamped = to_events([record], NOW_MS, restamp={record["inference_id"]})
    assert ev.timestamp == NOW_MS and clamped == 1


def test_equal_timestamps_keep_batch_order() -> None:
    records = [{"inference_id": str(i), "captured_at": iso(NOW)} for i in range(5)]
    events, _, _ = to_events(records, NOW_MS)
    assert [e.record["inference_id"] for e in events] == ["0", "1", "2", "3", "4"]


def test_rejected_indices() -> None:
    assert rejected_indices(None, 5) == set()
    assert rejected_indices({"tooNewLogEventStartIndex": 3}, 5) == {3, 4}
    assert rejected_indices({"tooOldLogEventEndIndex": 1, "expiredLogEventEndIndex": 2}, 5) == {0, 1, 2}
    # tooOldLogEventEndIndex is exclusive (the API reference): events 0 and 1 were too old, 2 was stored.
    assert rejected_indices({"tooOldLogEventEndIndex": 2}, 5) == {0, 1}


def test_firehose_planning() -> None:
    small = [b"x" * 100] * 1_001
    assert [len(r) for r in firehose.plan_requests(small)] == [500, 500, 1]
    big = [b"x" * (1000 * 1024)] * 9
    requests = firehose.plan_requests(big)
    assert [len(r) for r in requests] == [4, 4, 1]
    assert all(sum(len(big[i]) for i in r) <= firehose.MAX_REQUEST_BYTES for r in requests)


def test_firehose_record_is_newline_terminated_and_capped() -> None:
    record = make_record(0, NOW)
    record["input"]["context"] = "q" * 2_000_000
    blob, cut = firehose.encode(record)
    assert cut and blob.endswith(b"\n") and len(blob) <= firehose.MAX_RECORD_BYTES
