"""The extension hung (SIGSTOP) or dead (SIGKILL): the function's handler still answers.

No time is asserted here (a loaded machine must not fail the suite); the client's added latency
is measured by ``bench/client_when_extension_hung.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from capture_ext import client as client_module
from capture_ext.client import CaptureClient, capture_handler
from tests.faults.process import ExtensionProcess

pytestmark = pytest.mark.timeout(60)


class Context:
    aws_request_id = "req-1"


@pytest.mark.parametrize("fate", ["hung", "dead"])
async def test_the_handler_answers_when_the_extension_is_hung_or_dead(
    tmp_path: Path, fate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = await ExtensionProcess(tmp_path, {"CAPTURE_SINKS": "stdout"}).start()
    client = CaptureClient(socket_path=ext.env["CAPTURE_SOCKET"], port=ext.port, timeout_ms=5)
    monkeypatch.setattr(client_module, "_client", client)  # @capture_handler's start/done lines too
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
        records, lines = 1 + 300 + 300, 1 + 300 * 4  # each handler call also sends a start and a done line
        queued = bytes(client._outbox).count(b"\n")
        # Every line is sent, queued for later or dropped and counted: none vanishes.
        assert client.stats["sent"] + client.stats["http"] + client.stats["dropped"] + queued == lines
        assert client.stats["dropped"] == 0 and queued > 0  # the outbox (4 MiB) held what the socket could not
        if fate == "hung":
            ext.proc.send_signal(signal.SIGCONT)
            for _ in range(200):  # once the extension runs again, the outbox drains to it
                if client.flush(50) and not client._outbox:
                    break
            assert not client._outbox
            health = await ext.health()
            assert health["received"] == records, health
    finally:
        if fate == "hung":
            ext.proc.send_signal(signal.SIGCONT)
        client.close()
        await ext.close()
