"""A partial failure retried through the dispatcher never rewrites an object from a subset.

Regression: retries picked records by client ``inference_id``. Ids are not unique; when a batch
spanned two hours and an id appeared in both, a failure of one hour's PUT made the retry carry
the other hour's record with that id too, and that hour's object (already written whole) was
rewritten from the retry alone. The real S3 sink, the real dispatcher and store, moto over HTTP.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.dispatcher import Dispatcher
from capture_ext.core.ledger import Ledger
from capture_ext.core.store import Store
from capture_ext.sinks.s3_jsonl import S3JsonlSink
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.conftest import BUCKET, MakeContext
from tests.functional.sinks.proxy import AwsProxy, s3_error
from tests.unit.sinks.records import ENV_ID, make_records

START = datetime(2026, 11, 22, 4, 59, 50, tzinfo=UTC)


async def test_a_retry_after_one_partition_failed_rewrites_no_object_from_a_subset(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, proxy: AwsProxy
) -> None:
    records = make_records(20, START, step_s=1.0)  # 04:59:50 .. 05:00:09: two partitions
    for index, record in enumerate(records):
        record["inference_id"] = f"client-id-{index % 3}"  # a client that reuses ids
    failed_once: list[str] = []

    def fail_hour_04_once(call):
        if ("hour%3D04" in call.path or "hour=04" in call.path) and not failed_once:
            failed_once.append(call.path)
            return s3_error("SlowDown", 503)
        return None

    proxy.faults.append(fail_hour_04_once)
    sink = S3JsonlSink(make_ctx("s3_jsonl", endpoint=proxy.endpoint))
    ledger = Ledger()
    budget = MemoryBudget(10 * 1024 * 1024)
    buffer = RecordBuffer(ENV_ID, budget, 1000, 10 * 1024 * 1024)
    for record in records:
        buffer.add(record, 1000)
        ledger.received += 1
    store = Store(buffer, budget, sinks=["s3_jsonl"])
    dispatcher = Dispatcher({"s3_jsonl": sink}, ledger, store, 5, random.Random(0))
    store.seal()
    try:
        await dispatcher.flush(time.monotonic() + 20)
    finally:
        await sink.close(1.0)

    assert failed_once, "the fault never fired"
    written = aws.read_all_jsonl(BUCKET)
    by_hour = {key.split("hour=")[1][:2]: lines for key, lines in written.items()}
    assert sorted(by_hour) == ["04", "05"]
    assert [r["sequence"] for r in by_hour["04"]] == list(range(10))
    assert [r["sequence"] for r in by_hour["05"]] == list(range(10, 20))  # not just the retried ids
    health = ledger.health(0, dispatcher.backlog())["sinks"]["s3_jsonl"]
    assert health["delivered"] == 20 and health["reconciled"]
