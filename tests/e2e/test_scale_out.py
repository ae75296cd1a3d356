"""Scale-out: concurrent requests over four execution environments, each with its own capture-ext
process, private /tmp (socket, spool) and ingest port, all writing to the same bucket and log
group on a moto server through the S3 JSONL, S3 Parquet and CloudWatch Logs sinks.

Nothing is due before SHUTDOWN (a long flush interval), so every record reaches the sinks in
its environment's SHUTDOWN drain: that each environment drains is what the counts show.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from capture_ext.emulator.apigw import ApiGatewayFront
from capture_ext.emulator.pool import EnvironmentPool
from tests.e2e.fixtures.emulator_helpers import TASK_ROOT
from tests.e2e.fixtures.full_stack import BUCKET, LOG_GROUP, REPO, SINKS, delivered_ids, install_extension

pytestmark = pytest.mark.timeout(180)
FUNCTION = "scale-fn"
ENVIRONMENTS = 4


async def _ask(session: aiohttp.ClientSession, url: str, n: int, think_s: float) -> dict[str, Any]:
    async with session.post(f"{url}/nlp-qa", json={"question": f"q{n}", "think_s": think_s}) as r:
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = json.loads(await r.text())
        return answer


async def test_four_environments_each_deliver_their_own_records_once_and_drain_at_shutdown(
    tmp_path: Path, aws: Any, aws_env: dict[str, str]
) -> None:
    aws.create_bucket(BUCKET)
    aws.create_log_group(LOG_GROUP)
    env = {**aws_env, "CAPTURE_SINKS": ",".join(SINKS), "CAPTURE_S3_BUCKET": BUCKET, "CAPTURE_LOG_GROUP": LOG_GROUP,
           "CAPTURE_FLUSH_INTERVAL_S": "600", "CAPTURE_FLUSH_TIMEOUT_S": "20", "CAPTURE_STRICT": "1",
           "CAPTURE_METRICS": "0", "CAPTURE_EXT_HOME": str(REPO), "CAPTURE_EXT_PYTHON": sys.executable}  # fmt: skip
    pool = EnvironmentPool(
        "captured.handler", TASK_ROOT, install_extension(tmp_path / "ext"), env,
        concurrency=ENVIRONMENTS, function_name=FUNCTION, init_timeout_s=60, shutdown_budget_ms=8000,
    )  # fmt: skip
    front = ApiGatewayFront(pool)
    url = await front.start()
    try:
        async with aiohttp.ClientSession() as session:
            # Four slow requests at once need four environments; twelve more queue on those four.
            answers = await asyncio.gather(*(_ask(session, url, n, 1.0) for n in range(ENVIRONMENTS)))
            answers += await asyncio.gather(*(_ask(session, url, n, 0.05) for n in range(4, 16)))
        before_shutdown = delivered_ids(aws)
        spools = [Path(slot.emulator.config.env["CAPTURE_SPOOL_DIR"]) for slot in pool.environments]
        sockets = {slot.emulator.config.env["CAPTURE_SOCKET"] for slot in pool.environments}
        ports = {slot.capture_port for slot in pool.environments}
        spooled_before = [sorted(p.name for p in spool.rglob("*.seg")) for spool in spools]
        reports = await pool.shutdown()
        spooled_after = [sorted(p.name for p in spool.rglob("*")) for spool in spools]
    finally:
        await front.close()
        await pool.close()

    ids = sorted(a["inference_id"] for a in answers)
    assert len(pool.environments) == ENVIRONMENTS and all(slot.invokes > 0 for slot in pool.environments)
    assert len({a["log_stream"] for a in answers}) == ENVIRONMENTS  # one Lambda log stream per environment
    assert len(sockets) == len(ports) == ENVIRONMENTS  # private socket and ingest port each
    assert before_shutdown == {sink: [] for sink in SINKS}  # nothing was due before SHUTDOWN
    assert len(reports) == ENVIRONMENTS
    for report in reports:
        assert report.killed == () and report.exit_codes["capture-ext"] == 0, report
    for sink, got in delivered_ids(aws).items():
        assert sorted(got) == ids, sink  # every record, once, in every sink
    assert all(spooled_before), spooled_before  # each environment held its records in its own spool
    assert [[n for n in names if n.endswith(".seg")] for names in spooled_after] == [[]] * ENVIRONMENTS  # drained

    # No two environments write the same S3 object or CloudWatch stream.
    writers: dict[str, set[str]] = {}
    for key, rows in aws.read_all_jsonl(BUCKET, "inference-capture/jsonl/").items():
        writers[key] = {r["environment_id"] for r in rows}
    for key in aws.list_keys(BUCKET, "inference-capture/parquet/"):
        writers[key] = set(aws.read_parquet(BUCKET, key).column("environment_id").to_pylist())
    for stream, messages in aws.all_log_messages(LOG_GROUP).items():
        writers[stream] = {m["environment_id"] for m in messages}
        assert stream.endswith(next(iter(writers[stream]))), stream
    assert all(len(envs) == 1 for envs in writers.values()), writers
    assert len(set().union(*writers.values())) == ENVIRONMENTS
    assert len(aws.log_streams(LOG_GROUP)) == ENVIRONMENTS
