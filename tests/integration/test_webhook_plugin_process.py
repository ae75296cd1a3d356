"""A third-party plugin in a real extension process: ``CAPTURE_SINKS=webhook``.

The example plugin (examples/capture-ext-webhook) is made discoverable exactly as in the Lambda
layer: a ``*.dist-info`` with its entry point next to the package on the extension's path. The
test plays Lambda with the fake Extensions/Telemetry API, sends records over HTTP and the Unix
socket, and a real local HTTP receiver must get every acknowledged record exactly once, also
when it answers 503 first. A second plugin that crashes at import must cost nothing but a log
line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from capture_ext.client import CaptureClient
from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI
from tests.fakes.webhook import WebhookReceiver
from tests.helpers import install_dist, read_file_sink

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "capture-ext-webhook"
pytestmark = pytest.mark.timeout(120)


class Extension:
    """``python -m capture_ext`` as a child process; killed by PID on the way out."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.api = FakeLambdaAPI(function_name="hook-fn")
        self.port = free_port()
        self.socket_path = str(tmp_path / "capture.sock")
        self.log_path = tmp_path / "extension.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CAPTURE_", "AWS_"))},
            "AWS_LAMBDA_FUNCTION_NAME": "hook-fn",
            "CAPTURE_FLUSH_INTERVAL_S": "0",
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SOCKET": self.socket_path,
            "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
            "CAPTURE_METRICS": "0",
            **env,
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.env["AWS_LAMBDA_RUNTIME_API"] = await self.api.start()
        log = self.log_path.open("wb")  # the child keeps its own copy of the descriptor
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "capture_ext", env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            log.close()
        await self.api.wait_idle(timeout=30)

    async def shutdown(self, budget_ms: int = 1700) -> int:
        """SHUTDOWN as Lambda sends it; the exit code once the extension has drained and exited."""
        await self.api.shutdown(budget_ms=budget_ms)
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), 20)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        await self.api.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def layer(tmp_path: Path) -> str:
    """PYTHONPATH of a layer holding the webhook plugin and a plugin that crashes at import."""
    site = tmp_path / "layer"
    install_dist(site, "capture-ext-webhook", {"webhook": "capture_ext_webhook"})
    install_dist(site, "capture-ext-broken", {"broken": "capture_ext_broken"})
    (site / "capture_ext_broken.py").write_text("raise RuntimeError('broken plugin: missing native library')\n")
    return os.pathsep.join([str(site), str(EXAMPLE)])


async def _post(port: int, records: list[dict[str, Any]]) -> None:
    url = f"http://127.0.0.1:{port}/v1/records"
    async with aiohttp.ClientSession() as http, http.post(url, json=records) as response:
        assert response.status == 202, await response.text()


def _record(i: int, request_id: str) -> dict[str, Any]:
    return {
        "inference_id": f"wh-{i:03d}-{uuid.uuid4().hex[:8]}",
        "request_id": request_id,
        "input": {"question": f"q{i}?", "context": "webhooks carry batches"},
        "output": {"answer": f"a{i}", "score": 0.5},
    }


async def test_webhook_plugin_delivers_every_record_once_despite_a_503(
    tmp_path: Path, receiver: WebhookReceiver, layer: str
) -> None:
    extension = Extension(
        tmp_path,
        {"CAPTURE_SINKS": "webhook", "CAPTURE_WEBHOOK_URL": receiver.url, "PYTHONPATH": layer},
    )
    accepted: list[str] = []
    try:
        await extension.start()
        api = extension.api
        client = CaptureClient(socket_path=extension.socket_path, port=extension.port)
        for invoke in range(3):
            request_id = await api.invoke()
            records = [_record(invoke * 10 + k, request_id) for k in range(4)]
            await _post(extension.port, records)
            accepted += [r["inference_id"] for r in records]
            accepted.append(client.capture(**_record(invoke * 10 + 9, request_id)))
            await asyncio.sleep(0.05)  # the socket transport is fire-and-forget
            if invoke == 1:
                receiver.fail_next = 1  # the dispatcher must retry the same batch
            await api.runtime_done(request_id)
            await api.wait_idle(timeout=30)
        client.close()
        # Records of the last invoke are delivered by the SHUTDOWN drain (its runtimeDone never
        # comes, so the extension flushes nothing and is back in /next before the 1 s deadline).
        request_id = await api.invoke(timeout_s=1.0)
        last = [_record(100 + k, request_id) for k in range(3)]
        await _post(extension.port, last)
        accepted += [r["inference_id"] for r in last]
        code = await extension.shutdown()
    finally:
        await extension.stop()
    log = extension.log()
    assert code == 0, log
    assert "Traceback" not in log, log

    assert sorted(receiver.ids()) == sorted(accepted), log  # every record, exactly once
    retried = [r for r in receiver.requests if sum(q["key"] == r["key"] for q in receiver.requests) > 1]
    assert len(retried) == 2, receiver.requests  # the 503 and its successful retry
    first, second = retried
    assert first["body"] == second["body"], "a retry must resend the identical body"
    assert (first["attempt"], second["attempt"]) == ("1", "2")
    for key, batch in receiver.batches.items():
        assert key == batch["batch_id"]
        assert {r["function_name"] for r in batch["records"]} == {"hook-fn"}

    # The crashing plugin was reported by name and cost nothing else.
    assert "plugin 'broken'" in log and "broken plugin: missing native library" in log, log


async def test_disabled_plugin_is_not_loaded_and_its_sink_is_reported_unknown(
    tmp_path: Path, receiver: WebhookReceiver, layer: str
) -> None:
    out = tmp_path / "files"
    extension = Extension(
        tmp_path,
        {
            "CAPTURE_SINKS": "webhook,file",
            "CAPTURE_FILE_DIR": str(out),
            "CAPTURE_WEBHOOK_URL": receiver.url,
            "CAPTURE_DISABLED_PLUGINS": "capture-ext-webhook,broken",
            "PYTHONPATH": layer,
        },
    )
    try:
        await extension.start()
        request_id = await extension.api.invoke()
        records = [_record(k, request_id) for k in range(3)]
        await _post(extension.port, records)
        await extension.api.runtime_done(request_id)
        await extension.api.wait_idle(timeout=30)
        code = await extension.shutdown()
    finally:
        await extension.stop()
    log = extension.log()
    assert code == 0, log
    assert receiver.requests == []
    assert "unknown sink 'webhook'" in log, log
    assert "broken plugin" not in log, log  # disabled plugins are never imported
    written = read_file_sink(out)
    assert sorted(r["inference_id"] for r in written) == sorted(r["inference_id"] for r in records)
