"""Lambda's own reset path: a function timeout resets the environment with a backlog and a slow S3.

The extension gets SHUTDOWN (reason ``timeout``), delivers what fits, leaves the rest in the spool
in ``/tmp`` (kept across a reset) and exits on its own; the extension of the next environment
adopts the spool and delivers the rest, each record once in S3.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from capture_ext.testing.net import free_port
from tests.e2e.fixtures.full_stack import REPO, install_extension
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.timeout(180)

BUCKET = "capture-reset"
HANDLER = """
import time
from capture_ext.client import capture_handler, get_client


@capture_handler
def handler(event, context):
    client = get_client()
    for i in range(event["n"]):
        client.capture(input={"i": i, "pad": "x" * 200}, output=i, inference_id=f"{event['tag']}-{i}")
    client.flush(2000)
    time.sleep(event.get("sleep_s", 0))
    return {"captured": event["n"]}
"""


async def test_a_timeout_reset_keeps_the_backlog_for_the_next_environment(
    lambda_emulator: Any, tmp_path: Path, aws: Any, moto_server: Any
) -> None:
    aws.create_bucket(BUCKET)
    proxy = FaultProxy(moto_server.endpoint)
    endpoint = await proxy.start()
    task = tmp_path / "task"
    task.mkdir()
    (task / "capfn.py").write_text(HANDLER)
    env = {
        **moto_server.env(),
        "AWS_ENDPOINT_URL": endpoint,
        "PYTHONPATH": str(REPO),
        "CAPTURE_SINKS": "s3_jsonl",
        "CAPTURE_S3_BUCKET": BUCKET,
        "CAPTURE_FLUSH_INTERVAL_S": "60",
        "CAPTURE_FLUSH_MAX_RECORDS": "100",
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
        "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
        "CAPTURE_METRICS": "0",
        "CAPTURE_EXT_HOME": str(REPO),
        "CAPTURE_EXT_PYTHON": sys.executable,
    }
    try:
        emu = await lambda_emulator(
            "capfn.handler", task, install_extension(tmp_path / "ext"), env, timeout_s=1.0, shutdown_budget_ms=1000
        )
        assert (await emu.invoke({"n": 100, "tag": "warm"})).ok
        assert (await emu.invoke({"n": 0, "tag": "none"})).ok  # size-due flush: the S3 client is warm
        proxy.inject("delay", "s3", delay_s=0.2)  # 30 batches x 200 ms: far beyond the budget
        timed_out = await emu.invoke({"n": 3000, "tag": "big", "sleep_s": 5})
        assert timed_out.reset_reason == "timeout"
        report = emu.resets[0]
        assert report.reason == "timeout" and "capture-ext" not in report.killed  # it left on its own
        logs = "\n".join(emu.logs("capture-ext"))
        assert "kept in the spool" in logs, logs
        proxy.heal()
        for _ in range(10):  # the next environment adopts the spool and catches up
            assert (await emu.invoke({"n": 0, "tag": "after"})).ok
        assert "spool: replaying" in "\n".join(emu.logs("capture-ext"))
        await emu.shutdown()
    finally:
        await proxy.stop()
    records = [r["inference_id"] for rs in aws.read_all_jsonl(BUCKET).values() for r in rs]
    expected = {f"warm-{i}" for i in range(100)} | {f"big-{i}" for i in range(3000)}
    assert Counter(records) == Counter(expected)
