"""The EMF line of every flush carries the same per-sink reconciliation as ``/v1/health``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from capture_ext.client import CaptureClient
from tests.faults.process import ExtensionProcess

pytestmark = pytest.mark.timeout(60)


async def test_every_emf_line_reconciles_per_sink(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    env = {
        "CAPTURE_SINKS": "file,stdout",
        "CAPTURE_FILE_DIR": str(tmp_path / "not-a-directory"),  # the file sink is down throughout
        "CAPTURE_METRICS": "1",
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_BUFFER_MAX_BYTES": "4096",
        "CAPTURE_SPOOL_MAX_BYTES": "20000",
    }
    ext = await ExtensionProcess(tmp_path, env).start()
    client = CaptureClient(socket_path=ext.env["CAPTURE_SOCKET"], port=ext.port)
    try:
        for n in range(6):
            request_id = await ext.invoke()
            for i in range(10):  # the spool fills for the down sink: later lines are dropped, counted
                client.capture(input="x" * 300, inference_id=f"{n}-{i}", request_id=request_id)
            await asyncio.sleep(0.05)  # fire-and-forget: let the extension read them
            await ext.done(request_id)
            await ext.api.wait_idle()
        code, _ = await ext.shutdown(2000)
        assert code == 0
    finally:
        client.close()
        await ext.close()
    lines = [json.loads(line) for line in ext.log().splitlines() if line.startswith('{"_aws"')]
    assert len(lines) >= 3
    dropped = 0
    for document in lines:
        for name, sink in document["Totals"].items():
            total = sink["delivered"] + sink["buffered"] + sink["spooled"] + sum(sink["dropped"].values())
            assert sink["reconciled"] and total == sink["received"], (name, sink)
            dropped = max(dropped, sum(sink["dropped"].values()))
        assert "RecordsSpooled" in document
    assert dropped > 0  # the overload path was exercised and counted
