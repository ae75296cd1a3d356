"""Sinks behind a fault proxy in front of moto: a long S3 outage, a troubled CloudWatch, then recovery.

The outage is "long" in the sense that matters: dozens of invokes pass, the circuit breaker opens
again and again, and memory (32 KiB here) holds only a small part of the backlog, so most of it
waits on disk only and is read back when S3 returns. CloudWatch keeps its pace meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.faults.process import ExtensionProcess, assert_reconciled
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.timeout(180)

BUCKET = "capture-outage"
GROUP = "/aws/capture-ext/faults-fn"


async def send(ext: ExtensionProcess, prefix: str, invokes: int, per_invoke: int, acked: list[str]) -> list[dict]:
    """Invokes that each post records; returns every /v1/health read, all of which must reconcile."""
    reads = []
    for n in range(invokes):
        request_id = await ext.invoke()
        ids = [f"{prefix}-{n}-{i}" for i in range(per_invoke)]
        body = [{"input": {"question": "why?", "pad": "p" * 200}, "output": "because", "inference_id": i} for i in ids]
        assert await ext.post(body) == 202
        acked += ids
        await ext.done(request_id)
        await ext.api.wait_idle(timeout=30)
        health = await ext.health()
        assert_reconciled(health)
        reads.append(health)
    return reads


async def catch_up(ext: ExtensionProcess, sink: str) -> dict[str, Any]:
    for _ in range(200):
        await ext.cycle()
        health = await ext.health()
        assert_reconciled(health)
        if health["sinks"][sink]["buffered"] == health["sinks"][sink]["spooled"] == 0:
            return health
        await asyncio.sleep(0.1)  # let the (short, configured) breaker pause pass
    raise AssertionError(f"{sink} never caught up: {health['sinks'][sink]}")


def cloudwatch_ids(aws: Any) -> list[str]:
    return [m["inference_id"] for messages in aws.all_log_messages(GROUP).values() for m in messages]


def s3_ids(aws: Any) -> tuple[list[str], list[str]]:
    objects = aws.read_all_jsonl(BUCKET)
    return list(objects), [r["inference_id"] for records in objects.values() for r in records]


async def test_a_long_s3_outage_and_a_troubled_cloudwatch_lose_nothing(tmp_path: Path, aws: Any, moto_server) -> None:
    aws.create_bucket(BUCKET)
    proxy = FaultProxy(moto_server.endpoint)
    endpoint = await proxy.start()
    env = {
        **moto_server.env(),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CAPTURE_SINKS": "s3_jsonl,cloudwatch",
        "CAPTURE_S3_BUCKET": BUCKET,
        "CAPTURE_LOG_GROUP": GROUP,
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_FLUSH_MAX_RECORDS": "20",
        "CAPTURE_BUFFER_MAX_BYTES": str(32 * 1024),
        "CAPTURE_FLUSH_MAX_BYTES": str(8 * 1024),
        "CAPTURE_BREAKER_MAX_S": "0.2",
        "CAPTURE_RETRY_MAX_ATTEMPTS": "2",
    }
    ext = await ExtensionProcess(tmp_path, env).start()
    acked: list[str] = []
    try:
        # 1. S3 answers 503 SlowDown, 500 and resets for a long stretch; CloudWatch is fine.
        proxy.inject("slowdown", "s3", retry_after_s=0.05)
        proxy.inject("internal", "s3")
        reads = await send(ext, "outage", invokes=30, per_invoke=10, acked=acked)
        last = reads[-1]["sinks"]
        assert last["cloudwatch"]["delivered"] == len(acked)  # no effect on the other sink
        assert last["s3_jsonl"]["delivered"] == 0
        assert max(r["sinks"]["s3_jsonl"]["spooled"] for r in reads) > 0  # most of it on disk only
        assert proxy.hits.get("slowdown", 0) > 0

        # 2. S3 is back: the backlog is read back from disk and delivered.
        proxy.heal("s3")
        health = await catch_up(ext, "s3_jsonl")
        assert health["sinks"]["s3_jsonl"]["delivered"] == len(acked)
        assert health["store"]["loaded"] > 0

        # 3. CloudWatch throttles, resets, and once applies a write whose answer is lost.
        proxy.inject("throttle", "logs", times=3, operation="PutLogEvents")
        proxy.inject("reset_after", "logs", times=2, operation="PutLogEvents")
        proxy.inject("reset", "logs", times=2, operation="PutLogEvents")
        await send(ext, "cw", invokes=10, per_invoke=10, acked=acked)
        health = await catch_up(ext, "cloudwatch")  # the counted faults run out on the way
        assert health["sinks"]["cloudwatch"]["retried"] > 0
        assert proxy.hits["throttle"] == 3 and proxy.hits["reset_after"] == 2 and proxy.hits["reset"] == 2
        code, _ = await ext.shutdown(2000)
        assert code == 0, ext.log()
    finally:
        await ext.close()
        await proxy.stop()

    keys, in_s3 = s3_ids(aws)
    assert Counter(in_s3) == Counter(set(acked))  # every record once: retries overwrite their own keys
    assert len(keys) == len(set(keys))
    in_cw = cloudwatch_ids(aws)
    assert set(in_cw) == set(acked)
    duplicated = {i for i, n in Counter(in_cw).items() if n > 1}
    lost_answers = {
        json.loads(e["message"])["inference_id"]
        for body in proxy.applied_but_failed
        for e in json.loads(body)["logEvents"]
    }
    assert duplicated <= lost_answers  # duplicates only where a write was applied but its answer lost
