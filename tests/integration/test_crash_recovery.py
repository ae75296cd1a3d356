"""SIGKILL at random points of a record stream; the next process delivers every acknowledged record.

Each seed varies the kill moment (while records are posted, during a flush, while idle), the flush
policy, the memory bound (so that some trials hold batches on disk only), the fsync policy and the
spool size (small ones rotate segments every few KiB).
``CAPTURE_KILL_TRIALS=100`` runs more seeds than the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path

import aiohttp
import pytest

from tests.faults.process import ExtensionProcess, assert_reconciled
from tests.helpers import read_file_sink

TRIALS = int(os.environ.get("CAPTURE_KILL_TRIALS", "8"))

pytestmark = pytest.mark.timeout(120)


def delivered(out: Path) -> list[str]:
    return [r["inference_id"] for r in read_file_sink(out)]


@pytest.mark.parametrize("seed", range(TRIALS))
async def test_every_acknowledged_record_is_delivered_after_a_sigkill(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    out = tmp_path / "out"
    env = {
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": str(out),
        "CAPTURE_FLUSH_INTERVAL_S": rng.choice(["0", "60"]),
        "CAPTURE_FLUSH_MAX_RECORDS": str(rng.choice([7, 40, 1000])),
        "CAPTURE_BUFFER_MAX_BYTES": str(rng.choice([16 * 1024, 64 * 1024 * 1024])),
        "CAPTURE_FLUSH_MAX_BYTES": str(8 * 1024),
        "CAPTURE_SPOOL_FSYNC": rng.choice(["never", "flush", "always"]),
        # Small spools rotate segments every few KiB, so kills land just after rotations too.
        "CAPTURE_SPOOL_MAX_BYTES": str(rng.choice([16 * 1024, 64 * 1024, 128 * 1024 * 1024])),
    }
    acked: list[str] = []
    first = await ExtensionProcess(tmp_path, env, "first").start()

    async def stream() -> None:
        sent = 0
        while True:
            request_id = await first.invoke()
            for _ in range(rng.randint(1, 4)):
                size = rng.randint(1, 25)
                ids = [f"s{seed}-{sent + i}" for i in range(size)]
                sent += size
                body = [{"input": {"question": "q", "n": i}, "output": "a", "inference_id": i} for i in ids]
                if await first.post(body) == 202:
                    acked.extend(ids)
            await first.done(request_id)
            await first.api.wait_idle()

    try:
        task = asyncio.create_task(stream())
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        first.kill()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, TimeoutError, OSError):
            await task
    finally:
        await first.close()

    second = await ExtensionProcess(tmp_path, env, "second").start()
    try:
        health = await second.health()
        assert_reconciled(health)
        await second.cycle()  # the first invoke flushes what was adopted
        health = await second.health()
        assert_reconciled(health)
        code, _ = await second.shutdown(2000)
        assert code == 0, second.log()
    finally:
        await second.close()

    got = delivered(out)
    missing = set(acked) - set(got)
    assert not missing, f"seed {seed}: {len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # Replayed batches keep their ids, so they land in the same files: not even a duplicate.
    assert len(got) == len(set(got))
    assert list((tmp_path / "spool").iterdir()) == []  # all delivered: nothing left on disk


async def test_records_acknowledged_right_after_a_rotation_survive_a_sigkill(tmp_path: Path) -> None:
    """Regression (the review's reproduction): with a 16 KiB spool two flushed invokes rotate the
    segment; three more records are acknowledged, then SIGKILL. The restart sealed them as batch 1
    again, so they overwrote batch 1's output and batch 1's records were gone from the sink."""
    out = tmp_path / "out"
    env = {
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": str(out),
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_SPOOL_MAX_BYTES": "16384",
    }
    first = await ExtensionProcess(tmp_path, env, "first").start()
    acked: list[str] = []
    try:
        for invoke in range(2):
            request_id = await first.invoke()
            ids = [f"flushed-{invoke}-{i}" for i in range(4)]
            body = [{"input": {"question": "q" * 300}, "output": "a", "inference_id": i} for i in ids]
            assert await first.post(body) == 202
            acked += ids
            await first.done(request_id)
            await first.api.wait_idle()
        segments = sorted(p.name for p in (tmp_path / "spool").iterdir() if p.suffix == ".seg")
        assert len(segments) == 1 and not segments[0].endswith("-000001.seg"), f"no rotation: {segments}"
        late = [f"late-{i}" for i in range(3)]
        assert await first.post([{"input": "q", "inference_id": i} for i in late]) == 202
        acked += late
        first.kill()
    finally:
        await first.close()

    second = await ExtensionProcess(tmp_path, env, "second").start()
    try:
        await second.cycle()
        assert_reconciled(await second.health())
        code, _ = await second.shutdown(2000)
        assert code == 0, second.log()
    finally:
        await second.close()
    got = delivered(out)
    assert set(acked) <= set(got), f"lost: {sorted(set(acked) - set(got))}"
    assert len(got) == len(set(got))
