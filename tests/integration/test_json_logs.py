"""Lambda's advanced logging controls: with AWS_LAMBDA_LOG_FORMAT=JSON every line the extension
writes to stderr is one JSON object, at AWS_LAMBDA_LOG_LEVEL; and records carry the invoke's trace."""

import asyncio
import json

from capture_ext.client import CaptureClient
from tests.helpers import read_file_sink
from tests.integration.test_extension_process import ExtensionProcess

TRACE = "Root=1-0-0;Parent=0;Sampled=1"  # what FakeLambdaAPI sends as the INVOKE's tracing.value


async def test_every_stderr_line_is_a_json_object_and_records_carry_the_trace_id(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTURE_LOG_LEVEL", raising=False)
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    extension = ExtensionProcess(
        tmp_path,
        CAPTURE_FLUSH_INTERVAL_S="0",
        AWS_LAMBDA_LOG_FORMAT="JSON",
        AWS_LAMBDA_LOG_LEVEL="DEBUG",
        # problems worth a log line: an unknown sink and a bad value
        CAPTURE_SINKS="file,no_such_sink",
        CAPTURE_SAMPLE_RATE="7",
    )
    await extension.start()
    try:
        api = extension.api
        client = CaptureClient(socket_path=extension.socket, port=extension.port)
        request_id = await api.invoke()
        # In the function, Lambda's runtime sets _X_AMZN_TRACE_ID for each invoke; the client sends it.
        monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-from-env")
        from_env = [client.capture(input={"i": i}, output=i, request_id=request_id) for i in range(3)]
        own = client.capture(input="own", request_id=request_id, trace_id="Root=1-own")
        await api.runtime_done(request_id)
        await api.wait_idle()  # the extension has handled the INVOKE event (and flushed)
        # A client that sends no trace id (another language, plain HTTP): the extension fills in the
        # trace of the INVOKE with that request id.
        monkeypatch.delenv("_X_AMZN_TRACE_ID")
        filled = [client.capture(input={"late": i}, request_id=request_id) for i in range(2)]
        unknown = client.capture(input="other", request_id="not-this-invoke")
        await api.shutdown(budget_ms=1700)
        assert extension.proc is not None and extension.proc.stderr is not None
        assert await asyncio.wait_for(extension.proc.wait(), 10) == 0
        stderr = (await extension.proc.stderr.read()).decode()
    finally:
        await extension.stop()

    lines = stderr.splitlines()
    assert lines
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line, not only most of them
        assert isinstance(entry, dict), line
        assert {"timestamp", "level", "message", "logger"} <= set(entry), line
        entries.append(entry)
    levels = {e["level"] for e in entries}
    assert "DEBUG" in levels  # AWS_LAMBDA_LOG_LEVEL=DEBUG applies
    assert any("no_such_sink" in e["message"] and e["level"] == "ERROR" for e in entries)
    assert any("CAPTURE_SAMPLE_RATE" in e["message"] for e in entries)
    assert any(e.get("requestId") == request_id for e in entries)

    records = {r["inference_id"]: r for r in read_file_sink(extension.out)}
    assert set(records) == {*from_env, own, *filled, unknown}
    assert [records[i]["trace_id"] for i in from_env] == ["Root=1-from-env"] * 3
    assert records[own]["trace_id"] == "Root=1-own"
    assert [records[i]["trace_id"] for i in filled] == [TRACE] * 2
    assert "trace_id" not in records[unknown]
