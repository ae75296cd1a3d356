"""SHUTDOWN with a large backlog, a slow S3 and a 1.0 s budget.

Lambda SIGKILLs the process at the deadline; the test does the same and checks that it was never
needed: the extension delivers what fits, leaves the rest in the spool, and exits 0 on its own.
The next start in the same environment delivers the rest, each record exactly once in S3.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.faults.process import ExtensionProcess, assert_reconciled
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.timeout(180)

BUCKET = "capture-shutdown"


async def test_shutdown_with_one_second_delivers_what_fits_and_keeps_the_rest(
    tmp_path: Path, aws: Any, moto_server
) -> None:
    aws.create_bucket(BUCKET)
    proxy = FaultProxy(moto_server.endpoint)
    endpoint = await proxy.start()
    env = {
        **moto_server.env(),
        "AWS_ENDPOINT_URL": endpoint,
        "CAPTURE_SINKS": "s3_jsonl",
        "CAPTURE_S3_BUCKET": BUCKET,
        "CAPTURE_FLUSH_INTERVAL_S": "60",
        "CAPTURE_FLUSH_MAX_RECORDS": "50",
    }
    acked: list[str] = []
    first = await ExtensionProcess(tmp_path, env, "first").start()
    try:
        # A function that has served a while: one size-triggered flush has warmed the S3 client.
        request_id = await first.invoke()
        assert await first.post([{"input": 1, "inference_id": f"warm-{i}"} for i in range(50)]) == 202
        acked += [f"warm-{i}" for i in range(50)]
        await first.done(request_id)
        await first.cycle()
        assert (await first.health())["delivered"]["s3_jsonl"] == 50

        proxy.inject("delay", "s3", delay_s=0.15)  # 60 batches x 150 ms: far more than the budget
        request_id = await first.invoke()
        for n in range(30):
            ids = [f"r{n}-{i}" for i in range(100)]
            assert await first.post([{"input": {"q": "x" * 100}, "output": 1, "inference_id": i} for i in ids]) == 202
            acked += ids
        await first.done(request_id)
        await first.api.wait_idle()
        code, _ = await first.shutdown(1000)
        assert code == 0, "SIGKILLed at the deadline\n" + first.log()
        assert "kept in the spool" in first.log()
    finally:
        await first.close()
        proxy.heal()
    delivered_first = len(aws.list_keys(BUCKET))
    assert 1 < delivered_first < 61  # some fitted in the budget, not all
    assert any(p.suffix == ".seg" for p in (tmp_path / "spool").iterdir())

    second = await ExtensionProcess(tmp_path, env, "second").start()
    try:
        health = await second.health()
        assert_reconciled(health)
        assert health["replayed"] > 0 and health["sinks"]["s3_jsonl"]["spooled"] == health["replayed"]
        for _ in range(20):
            await second.cycle()
            health = await second.health()
            assert_reconciled(health)
            if health["sinks"]["s3_jsonl"]["spooled"] == health["sinks"]["s3_jsonl"]["buffered"] == 0:
                break
        code, _ = await second.shutdown(2000)
        assert code == 0, second.log()
    finally:
        await second.close()
        await proxy.stop()
    records = [r["inference_id"] for rs in aws.read_all_jsonl(BUCKET).values() for r in rs]
    assert Counter(records) == Counter(set(acked))
    assert list((tmp_path / "spool").iterdir()) == []
