"""``python -m capture_ext`` as a separate process, driven through INVOKE, records, runtimeDone and SHUTDOWN."""

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from capture_ext import client as client_module
from capture_ext.client import CaptureClient, capture, capture_handler
from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI
from tests.helpers import read_file_sink


class ExtensionProcess:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.out = tmp_path / "out"
        self.port = free_port()
        self.socket = str(tmp_path / "capture.sock")
        self.extra = env
        self.api = FakeLambdaAPI()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        address = await self.api.start()
        env = {
            **os.environ,
            "AWS_LAMBDA_RUNTIME_API": address,
            "CAPTURE_SINKS": "file",
            "CAPTURE_FILE_DIR": str(self.out),
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SOCKET": self.socket,
            "CAPTURE_METRICS": "0",
            **self.extra,
        }
        self.started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "capture_ext", "--name", "capture-ext", env=env, stderr=asyncio.subprocess.PIPE
        )
        await asyncio.wait_for(self.api.registered.wait(), 20)
        await self.api.wait_idle(20)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self.api.stop()


@pytest.fixture
async def extension(tmp_path):
    process = ExtensionProcess(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0")
    await process.start()
    yield process
    await process.stop()


async def test_every_accepted_record_reaches_the_file_sink_and_the_process_exits_0_in_time(extension):
    api = extension.api
    assert api.extension_name == "capture-ext"
    client = CaptureClient(socket_path=extension.socket, port=extension.port)
    sent = []
    for invoke in range(5):
        request_id = await api.invoke()
        for i in range(20):
            sent.append(client.capture(input={"invoke": invoke, "i": i}, output=i, request_id=request_id))
        await api.runtime_done(request_id)
        await api.wait_idle()
    delivered_before_shutdown = {r["inference_id"] for r in read_file_sink(extension.out)}
    assert delivered_before_shutdown == set(sent)
    # records that arrive after the last flush are drained by SHUTDOWN: this invoke's runtimeDone
    # never comes, so the extension flushes nothing and is back in /next before its 1 s deadline
    request_id = await api.invoke(timeout_s=1.0)
    late = [client.capture(input="late", request_id=request_id) for _ in range(10)]
    await api.wait_idle()
    shutdown_sent = time.time()
    await api.shutdown(budget_ms=1700)
    assert extension.proc is not None
    code = await asyncio.wait_for(extension.proc.wait(), 5)
    exited_after_ms = (time.time() - shutdown_sent) * 1000
    assert code == 0
    assert exited_after_ms < 1700
    records = read_file_sink(extension.out)
    assert sorted(r["inference_id"] for r in records) == sorted(sent + late)
    assert len({r["sequence"] for r in records}) == len(records)
    stderr = (await extension.proc.stderr.read()).decode()
    assert "ready in" in stderr and "SHUTDOWN done" in stderr


async def test_http_ingest_and_health_from_another_process(extension):
    request_id = await extension.api.invoke()
    script = (
        "import json, urllib.request, sys\n"
        f"base = 'http://127.0.0.1:{extension.port}'\n"
        "req = urllib.request.Request(base + '/v1/records', data=b'{\"input\": 1}\\n{\"input\": 2}\\n',"
        " headers={'Content-Type': 'application/x-ndjson'})\n"
        "print(urllib.request.urlopen(req).read().decode())\n"
        "print(urllib.request.urlopen(base + '/v1/health').read().decode())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    accepted, health = (json.loads(line) for line in out.decode().splitlines())
    assert accepted == {"accepted": 2}
    assert health["received"] == 2 and health["sinks"]["file"]["reconciled"] is True
    await extension.api.runtime_done(request_id)
    await extension.api.wait_idle()
    assert sorted(r["input"] for r in read_file_sink(extension.out)) == [1, 2]


async def test_a_dead_extension_never_fails_the_handler(extension, monkeypatch):
    monkeypatch.setattr(
        client_module, "_client", CaptureClient(socket_path=extension.socket, port=extension.port, timeout_ms=5)
    )

    @capture_handler
    def handler(event, context):
        capture(input=event, output="answer")
        return {"Answer": "answer"}

    assert extension.proc is not None
    extension.proc.send_signal(signal.SIGKILL)
    await extension.proc.wait()
    timings = []
    for i in range(50):
        started = time.perf_counter()
        assert handler({"i": i}, SimpleNamespace(aws_request_id=f"r{i}")) == {"Answer": "answer"}
        timings.append(time.perf_counter() - started)
    timings.sort()
    # fail-open: no connect timeouts, no exceptions. The bound is loose because this machine is shared;
    # the real per-call cost is measured in the benchmarks.
    assert timings[len(timings) // 2] < 0.05


async def test_a_frozen_extension_costs_the_handler_at_most_the_client_budget(extension):
    assert extension.proc is not None
    client = CaptureClient(socket_path=extension.socket, port=extension.port, timeout_ms=5)
    client.capture(input="warm-up")
    extension.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.perf_counter()
        for _ in range(2000):  # enough to fill the socket buffer of a process that never reads
            client.capture(input="x" * 1000)
        per_call = (time.perf_counter() - started) / 2000
        assert per_call < 0.05
    finally:
        extension.proc.send_signal(signal.SIGCONT)


async def test_a_taken_port_costs_the_capture_not_the_function_and_the_process_exits_0(tmp_path):
    """An extension that exited during init would fail the environment's init: it stays in /next."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    process = ExtensionProcess(tmp_path, CAPTURE_PORT=str(holder.getsockname()[1]))
    try:
        await process.start()
        request_id = await process.api.invoke()
        CaptureClient(socket_path=process.socket, port=process.port).capture(input="lost", request_id=request_id)
        await process.api.wait_idle()
        await process.api.shutdown(budget_ms=1700)
        assert process.proc is not None and process.proc.stderr is not None
        assert await asyncio.wait_for(process.proc.wait(), 5) == 0
        stderr = (await process.proc.stderr.read()).decode()
    finally:
        holder.close()
        await process.stop()
    assert "Traceback" not in stderr, stderr
    (error,) = [line for line in stderr.splitlines() if "could not open" in line]
    assert "the ingest endpoint" in error and "(CAPTURE_PORT)" in error and "the function runs as usual" in error
    assert not re.search(r"\bready in \d", stderr) and process.api.init_errors == []
