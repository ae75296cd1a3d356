"""``python -m capture_ext`` as its own process, delivering to s3_jsonl, s3_parquet and cloudwatch on moto.

The test plays Lambda with the fake Extensions/Telemetry API: INVOKE, records over HTTP and the
Unix socket, ``platform.runtimeDone``, then SHUTDOWN. Every record the ingest endpoint
acknowledged must then be in all three sinks, in the documented layout, exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pyarrow.dataset as ds
import pytest

from capture_ext.client import CaptureClient
from capture_ext.testing.aws import AwsHelper
from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI

FUNCTION = "qa-fn"
BUCKET = "capture-it"
LOG_GROUP = "/aws/capture-ext/qa-fn"
JSONL_KEY = re.compile(
    r"^inference-capture/jsonl/function=qa-fn/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/(?P<env>[\w-]+)-(?P<seq>\d{8})\.jsonl\.gz$"
)
PARQUET_KEY = re.compile(
    r"^inference-capture/parquet/function=qa-fn/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/(?P<env>[\w-]+)-(?P<seq>\d{8})\.parquet$"
)


class ExtensionProcess:
    """The extension as a child process against the fake Lambda API; killed by PID on the way out."""

    def __init__(self, tmp_path: Path, aws_env: dict[str, str]) -> None:
        self.api = FakeLambdaAPI(function_name=FUNCTION)
        self.port = free_port()
        self.socket_path = str(tmp_path / "capture.sock")
        self.log_path = tmp_path / "extension.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CAPTURE_", "AWS_"))},
            **aws_env,
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
            "CAPTURE_SINKS": "s3_jsonl,s3_parquet,cloudwatch",
            "CAPTURE_S3_BUCKET": BUCKET,
            "CAPTURE_LOG_GROUP": LOG_GROUP,
            "CAPTURE_FLUSH_INTERVAL_S": "0",  # flush after every invoke
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SOCKET": self.socket_path,
            "CAPTURE_METRICS": "0",
            "CAPTURE_STRICT": "1",  # a sink that fails to build must fail the test, not vanish
        }
        self.process: asyncio.subprocess.Process | None = None
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()

    async def start(self) -> None:
        self.env["AWS_LAMBDA_RUNTIME_API"] = await self.api.start()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "capture_ext", "--name", "capture-ext",
            env=self.env, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await self.api.wait_idle(timeout=30)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self._log.close()
        await self.api.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
async def extension(tmp_path: Path, aws_env: dict[str, str], aws: AwsHelper) -> AsyncIterator[ExtensionProcess]:
    aws.create_bucket(BUCKET)
    proc = ExtensionProcess(tmp_path, aws_env)
    try:
        await proc.start()
        yield proc
    finally:
        await proc.stop()


def record(i: int, request_id: str) -> dict[str, Any]:
    return {
        "inference_id": f"it-{i:04d}-{uuid.uuid4().hex[:8]}",
        "request_id": request_id,
        "model": {"name": "distilbert-qa", "version": "3"},
        "latency_ms": 40.0 + i,
        "input": {"question": f"question {i}?", "context": "capture ships records after each response " * 5},
        "output": {"answer": f"answer {i}", "score": 0.5},
        "metadata": {"invoke": request_id},
    }


@pytest.mark.timeout(120)
async def test_every_accepted_record_reaches_all_three_sinks(extension: ExtensionProcess, aws: AwsHelper) -> None:
    api = extension.api
    accepted: list[str] = []
    client = CaptureClient(socket_path=extension.socket_path, port=extension.port)
    async with aiohttp.ClientSession() as http:
        for invoke in range(4):
            request_id = await api.invoke()
            batch = [record(invoke * 10 + k, request_id) for k in range(8)]
            body = "\n".join(json.dumps(r) for r in batch)
            url = f"http://127.0.0.1:{extension.port}/v1/records"
            async with http.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}) as response:
                assert response.status == 202, await response.text()
                assert await response.json() == {"accepted": 8}
            accepted += [r["inference_id"] for r in batch]
            one = record(invoke * 10 + 9, request_id)
            accepted.append(client.capture(**one))
            await asyncio.sleep(0.05)  # the socket transport is fire-and-forget
            await api.runtime_done(request_id)
            await api.wait_idle(timeout=30)
        # The last invoke's records are delivered by the SHUTDOWN drain, not by a runtimeDone flush.
        request_id = await api.invoke()
        last = [record(100 + k, request_id) for k in range(5)]
        async with http.post(f"http://127.0.0.1:{extension.port}/v1/records", json=last) as response:
            assert response.status == 202
        accepted += [r["inference_id"] for r in last]
        await api.wait_idle(timeout=30)
        async with http.get(f"http://127.0.0.1:{extension.port}/v1/health") as response:
            health = await response.json()
        assert health["received"] == len(accepted), health
    client.close()

    await api.shutdown(budget_ms=1700)
    assert extension.process is not None
    code = await asyncio.wait_for(extension.process.wait(), 20)
    log = extension.log()
    assert code == 0, log
    assert "Traceback" not in log, log

    expected = sorted(accepted)

    # s3_jsonl: Hive layout, keys named after this environment's batches, every record once.
    jsonl = aws.read_all_jsonl(BUCKET, "inference-capture/jsonl/")
    matches = [JSONL_KEY.match(k) for k in jsonl]
    assert all(matches), sorted(jsonl)
    env_ids = {m.group("env") for m in matches if m}
    assert len(env_ids) == 1, env_ids
    lines = [line for objs in jsonl.values() for line in objs]
    assert sorted(line["inference_id"] for line in lines) == expected
    assert {line["function_name"] for line in lines} == {FUNCTION}
    assert {line["environment_id"] for line in lines} == env_ids
    assert len(jsonl) >= 5  # one flush per runtimeDone plus the SHUTDOWN drain

    # s3_parquet: same keys under parquet/, readable with hive partitioning by pyarrow and DuckDB.
    parquet_keys = aws.list_keys(BUCKET, "inference-capture/parquet/")
    assert all(PARQUET_KEY.match(k) for k in parquet_keys), parquet_keys
    assert sorted(k.replace("/parquet/", "/jsonl/").replace(".parquet", ".jsonl.gz") for k in parquet_keys) == sorted(
        jsonl
    )
    local = Path(extension.log_path).parent / "download"
    aws.download(BUCKET, "inference-capture/parquet/", str(local))
    table = ds.dataset(local / "inference-capture" / "parquet", format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("inference_id").to_pylist()) == expected
    assert set(table.column("function").to_pylist()) == {FUNCTION}
    pattern = str(local / "inference-capture" / "parquet" / "**" / "*.parquet")
    con = duckdb.connect()
    ((count, distinct),) = con.execute(
        "SELECT count(*), count(DISTINCT inference_id) FROM read_parquet(?, hive_partitioning = true)", [pattern]
    ).fetchall()
    con.close()
    assert count == distinct == len(expected)

    # cloudwatch: one stream for this environment, named YYYY/MM/DD/<function>/<environment_id>.
    streams = aws.all_log_messages(LOG_GROUP)
    (env_id,) = env_ids
    assert all(re.fullmatch(rf"\d{{4}}/\d{{2}}/\d{{2}}/{FUNCTION}/{re.escape(env_id)}", s) for s in streams), streams
    events = [m for messages in streams.values() for m in messages]
    assert sorted(e["inference_id"] for e in events) == expected
