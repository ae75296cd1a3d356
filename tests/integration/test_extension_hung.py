"""The extension hung (SIGSTOP) or dead (SIGKILL): the function's handler still answers.

No time is asserted here (a loaded machine must not fail the suite); the client's added latency
is measured by ``bench/client_when_extension_hung.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from capture_ext.client import CaptureClient, capture_handler
from tests.faults.process import ExtensionProcess

pytestmark = pytest.mark.timeout(60)


class Context:
    aws_request_id = "req-1"


@pytest.mark.parametrize("fate", ["hung", "dead"])
async def test_the_handler_answers_when_the_extension_is_hung_or_dead(tmp_path: Path, fate: str) -> None:
    ext = await ExtensionProcess(tmp_path, {"CAPTURE_SINKS": "stdout"}).start()
    client = CaptureClient(socket_path=ext.env["CAPTURE_SOCKET"], port=ext.port, timeout_ms=5)
    assert ext.proc is not None
    try:
        client.capture(input="warm-up")  # connected before the trouble starts
        if fate == "hung":
            ext.proc.send_signal(signal.SIGSTOP)
        else:
            ext.kill()

        @capture_handler
        def handler(event: dict, context: object) -> dict:
            client.capture(input=event, output={"answer": 42}, metadata={"pad": "x" * 4000})
            return {"statusCode": 200, "body": "42"}

        for n in range(300):  # enough to fill the socket buffer of a stopped reader
            assert handler({"n": n}, Context()) == {"statusCode": 200, "body": "42"}
            assert isinstance(client.capture(input=n), str)
        assert client.stats["errors"] == 0
        if fate == "hung":
            assert client.stats["dropped"] > 0 or client.stats["sent"] > 0
    finally:
        if fate == "hung":
            ext.proc.send_signal(signal.SIGCONT)
        client.close()
        await ext.close()
