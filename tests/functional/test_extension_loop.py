"""The whole extension loop in-process, against the fake Extensions/Telemetry API and real sockets."""

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest

from capture_ext.client import CaptureClient
from capture_ext.core.lifecycle import Extension
from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI
from tests.helpers import read_file_sink, start_extension


class Harness:
    def __init__(self, tmp_path: Path, telemetry: bool = True, **env: str) -> None:
        self.api = FakeLambdaAPI(telemetry=telemetry)
        self.out = tmp_path / "out"
        self.port = free_port()
        self.env = {
            "CAPTURE_SINKS": "file",
            "CAPTURE_FILE_DIR": str(self.out),
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
            "CAPTURE_METRICS": "0",
            **env,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> "Harness":
        address = await self.api.start()
        env = {**self.env, "AWS_LAMBDA_RUNTIME_API": address}
        self.extension: Extension = await start_extension(env)
        self.task = asyncio.create_task(self.extension.run())
        await self.api.wait_idle()
        assert self.extension.runtime is not None
        self.runtime = self.extension.runtime
        self.client = CaptureClient(socket_path=self.env["CAPTURE_SOCKET"], port=self.port)
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        self.client.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.api.stop()

    async def post(self, body: bytes | str, content_type: str = "application/json") -> tuple[int, dict]:
        data = body.encode() if isinstance(body, str) else body
        async with self.http.post(f"{self.url}/v1/records", data=data, headers={"Content-Type": content_type}) as r:
            return r.status, await r.json()

    async def health(self) -> dict:
        async with self.http.get(f"{self.url}/v1/health") as r:
            assert r.status == 200
            return await r.json()

    async def shutdown(self, budget_ms: float = 1700) -> int:
        await self.api.shutdown(budget_ms)
        assert self.task is not None
        return await asyncio.wait_for(self.task, 5)


async def test_records_are_flushed_after_runtime_done_not_before(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0") as h:
        request_id = await h.api.invoke()
        status, body = await h.post('{"input": {"q": "a"}, "output": 1}')
        assert (status, body) == (202, {"accepted": 1})
        h.client.capture(input={"q": "b"}, request_id=request_id)
        await asyncio.sleep(0.3)
        assert read_file_sink(h.out) == []  # the handler may still be running: no sink I/O yet
        assert not h.api.idle.is_set()
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        records = read_file_sink(h.out)
        assert sorted(r["input"]["q"] for r in records) == ["a", "b"]
        assert {r["function_name"] for r in records} == {"test-function"}
        assert {r["environment_id"] for r in records} == {h.runtime.environment_id}
        assert sorted(r["sequence"] for r in records) == [1, 2]
        assert await h.shutdown() == 0


async def test_no_flush_due_goes_straight_back_to_next_and_shutdown_drains(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="60") as h:
        for i in range(3):
            request_id = await h.api.invoke()
            h.client.capture(input=i, request_id=request_id)
            await h.api.wait_idle()  # before any runtimeDone: the extension did not wait
            # The socket is read once the runtime is done (test_handler_window.py).
            await h.api.runtime_done(request_id)
        await asyncio.sleep(0.05)
        assert read_file_sink(h.out) == []
        health = await h.health()
        assert health["received"] == 3 and health["buffered"] == 3
        assert await h.shutdown() == 0
        assert sorted(r["input"] for r in read_file_sink(h.out)) == [0, 1, 2]


async def test_with_telemetry_the_clients_handler_done_line_does_not_start_a_flush(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0") as h:
        request_id = await h.api.invoke()
        h.client.capture(input="x", request_id=request_id)
        h.client.handler_done(request_id)  # the handler returned, but the runtime is not done yet
        await asyncio.sleep(0.3)
        assert read_file_sink(h.out) == [] and not h.api.idle.is_set()
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        assert [r["input"] for r in read_file_sink(h.out)] == ["x"]


async def test_size_trigger_makes_the_next_invoke_flush(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_MAX_RECORDS="3") as h:
        request_id = await h.api.invoke()
        status, _ = await h.post("\n".join(json.dumps({"input": i}) for i in range(3)), "application/x-ndjson")
        assert status == 202
        await h.api.wait_idle()
        assert read_file_sink(h.out) == []
        request_id = await h.api.invoke()
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        assert len(read_file_sink(h.out)) == 3


async def test_without_telemetry_the_handler_done_line_triggers_the_flush(tmp_path):
    async with Harness(tmp_path, telemetry=False, CAPTURE_FLUSH_INTERVAL_S="0") as h:
        assert h.runtime.telemetry_enabled is False
        request_id = await h.api.invoke()
        h.client.capture(input="x", request_id=request_id)
        h.client.handler_done(request_id)
        await h.api.wait_idle()
        assert [r["input"] for r in read_file_sink(h.out)] == ["x"]
        # once the client is known to signal, the extension waits for that signal
        request_id = await h.api.invoke()
        h.client.capture(input="y", request_id=request_id)
        await asyncio.sleep(0.3)
        assert not h.api.idle.is_set()
        h.client.handler_done(request_id)
        await h.api.wait_idle()
        assert sorted(r["input"] for r in read_file_sink(h.out)) == ["x", "y"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ("{", "application/json", 400, "invalid JSON"),
        (
            '[{"input": 1}, {"output": 2, "latency_ms": "slow"}]',
            "application/json",
            400,
            "record 1: field 'latency_ms'",
        ),
        ('{"metadata": {}}', "application/json", 400, "field 'input' is required"),
        ('{"input": "' + "x" * 3000 + '"}', "application/json", 413, "limit"),
        ('{"input": 1}', "application/xml", 415, "Content-Type"),
    ],
)
async def test_bad_requests_are_rejected_whole_and_nothing_accepted_is_touched(
    tmp_path, body, content_type, status, message
):
    async with Harness(tmp_path, CAPTURE_MAX_RECORD_BYTES="2048") as h:
        assert (await h.post('{"input": "kept"}'))[0] == 202
        got_status, got = await h.post(body, content_type)
        assert got_status == status and message in got["error"]
        health = await h.health()
        assert health["received"] == 1 and health["buffered"] == 1
        assert await h.shutdown() == 0
        assert [r["input"] for r in read_file_sink(h.out)] == ["kept"]


async def test_oversize_request_gets_413_and_unknown_routes_404(tmp_path):
    async with Harness(tmp_path, CAPTURE_MAX_REQUEST_BYTES="1000") as h:
        status, body = await h.post('{"input": "' + "x" * 2000 + '"}')
        assert status == 413 and "limit" in body["error"]
        async with h.http.get(f"{h.url}/nope") as r:
            assert r.status == 404
        async with h.http.get(f"{h.url}/v1/records") as r:
            assert r.status == 405


async def test_health_counters_reconcile_per_sink(tmp_path):
    async with Harness(tmp_path, CAPTURE_SINKS="file,stdout", CAPTURE_FLUSH_INTERVAL_S="0") as h:
        request_id = await h.api.invoke()
        await h.post(json.dumps([{"input": i} for i in range(5)]))
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        await h.post('{"input": "later"}')
        health = await h.health()
        assert health["received"] == 6
        assert health["delivered"] == {"file": 5, "stdout": 5}
        for sink in health["sinks"].values():
            assert sink["reconciled"] is True
            assert sink["delivered"] + sink["buffered"] + sink["spooled"] + sum(sink["dropped"].values()) == 6


async def test_unknown_sink_is_disabled_loudly_and_the_others_run(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        async with Harness(tmp_path, CAPTURE_SINKS="file,nonesuch") as h:
            assert list(h.runtime.dispatcher.states) == ["file"]
            assert "unknown sink 'nonesuch'" in caplog.text
            assert await h.shutdown() == 0


async def test_strict_mode_reports_an_init_error_and_exits(tmp_path):
    api = FakeLambdaAPI()
    address = await api.start()
    try:
        env = {
            "AWS_LAMBDA_RUNTIME_API": address,
            "CAPTURE_SINKS": "nonesuch",
            "CAPTURE_STRICT": "1",
            "CAPTURE_PORT": str(free_port()),
            "CAPTURE_SOCKET": str(tmp_path / "s.sock"),
        }
        code = await asyncio.wait_for((await start_extension(env)).run(), 10)
        assert code == 1
        (error,) = api.init_errors
        assert error["type"] == "Extension.ConfigError" and "nonesuch" in error["body"]["errorMessage"]
    finally:
        await api.stop()


async def test_emf_metrics_line_per_flush(tmp_path, capsys):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0", CAPTURE_METRICS="1") as h:
        request_id = await h.api.invoke()
        await h.post('[{"input": 1}, {"input": 2}]')
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
        (metric,) = lines
        assert metric["RecordsReceived"] == 2 and metric["RecordsDelivered"] == 2
        directive = metric["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "CaptureExt" and directive["Dimensions"] == [["FunctionName"]]
        assert {m["Name"] for m in directive["Metrics"]} >= {"RecordsReceived", "RecordsDelivered", "FlushDuration"}


async def test_a_handler_slower_than_the_flush_timeout_still_gets_a_whole_flush(tmp_path):
    """Regression: the flush deadline was fixed when INVOKE arrived (now + CAPTURE_FLUSH_TIMEOUT_S,
    2 s by default), so a handler that thought longer left the flush no time: nothing was written
    and the breaker of a healthy sink opened."""
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0") as h:
        request_id = await h.api.invoke()
        h.client.capture(input="slow", request_id=request_id)
        await asyncio.sleep(2.5)  # the model thinks for longer than the default flush timeout
        assert read_file_sink(h.out) == [] and not h.api.idle.is_set()
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        assert [r["input"] for r in read_file_sink(h.out)] == ["slow"]
        sink = (await h.health())["sinks"]["file"]
        assert sink["state"] == "ok" and sink["retried"] == 0


async def test_a_lost_runtime_done_flushes_nothing_blames_no_sink_and_returns_before_the_deadline(tmp_path):
    async with Harness(tmp_path, CAPTURE_FLUSH_INTERVAL_S="0", CAPTURE_SHUTDOWN_MARGIN_MS="100") as h:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await h.api.invoke(timeout_s=1.0)  # runtimeDone for it never comes
        h.client.capture(input="waits")
        await h.api.wait_idle(timeout=5)
        assert loop.time() - started < 1.0  # back in /next before the invoke's deadline
        assert read_file_sink(h.out) == []
        sink = (await h.health())["sinks"]["file"]
        assert sink["state"] == "ok" and sink["retried"] == 0 and sink["buffered"] == 1
        request_id = await h.api.invoke()
        await h.api.runtime_done(request_id)
        await h.api.wait_idle()
        assert [r["input"] for r in read_file_sink(h.out)] == ["waits"]


async def test_without_telemetry_the_first_invoke_waits_for_a_handler_that_said_it_started(tmp_path):
    """Regression: before any handler-done line was seen the extension waited a fixed 100 ms, so a
    slower first handler's record missed its own invoke's flush."""
    async with Harness(tmp_path, telemetry=False, CAPTURE_FLUSH_INTERVAL_S="0") as h:
        request_id = await h.api.invoke()
        h.client.handler_started(request_id)
        await asyncio.sleep(0.3)  # longer than CAPTURE_RUNTIME_DONE_TIMEOUT_MS
        assert not h.api.idle.is_set()
        h.client.capture(input="first", request_id=request_id)
        h.client.handler_done(request_id)
        await h.api.wait_idle()
        assert [r["input"] for r in read_file_sink(h.out)] == ["first"]
