"""The client's HTTP fallback against the real ingest server: lines stand alone, nothing is poisoned.

Regression: the fallback posted the whole outbox as one NDJSON body, so the handler-done control
line (or any one bad line) made the whole body a 400 and the client dropped every record in it
"for good". Records captured while the extension was away must arrive once it is back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import capture_ext.client as client_module
from capture_ext.client import CaptureClient, capture_handler
from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.http11 import HTTPServer
from capture_ext.core.ingest import Ingest
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher
from capture_ext.core.store import Store
from capture_ext.testing.net import free_port


class IngestServer:
    """The extension's ingest HTTP endpoint on its own loop in a thread (the client blocks)."""

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.ledger = Ledger()
        budget = MemoryBudget(1024 * 1024)
        self.store = Store(RecordBuffer("fallback", budget, 1000, 1024 * 1024), budget, sinks=["probe"])
        self.done: list[str] = []
        self.ingest = Ingest(
            self.store, self.ledger, Enricher("f", "1", "fallback"), 64 * 1024, on_handler_done=self.done.append
        )
        self.http = HTTPServer(self.ingest.handle_http, 1024 * 1024)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.http.start("127.0.0.1", port))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.http.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def inputs(self) -> list[object]:
        self.store.seal()
        return [r["input"] for sealed in self.store.take_new() if sealed.batch for r in sealed.batch.records]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def client(tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[CaptureClient]:
    instance = CaptureClient(socket_path=str(tmp_path / "absent.sock"), port=port, timeout_ms=200)
    monkeypatch.setattr(client_module, "_client", instance)
    yield instance
    instance.close()


def test_a_control_line_and_a_bad_line_do_not_cost_the_other_records(client: CaptureClient, port: int) -> None:
    server = IngestServer(port)
    try:

        @capture_handler
        def handler(event: object, context: object) -> str:
            client_module.capture(input=event)
            return "ok"

        client.send_line(b'{"not json\n')  # one line the extension refuses on its own merits
        assert handler("q1", SimpleNamespace(aws_request_id="req-1")) == "ok"
        client.flush(1000)
        assert server.inputs() == ["q1"]
        assert server.done == ["req-1"]
        assert server.ledger.rejected["invalid"] == 1
        assert client.stats["dropped"] == 0
    finally:
        server.stop()


def test_records_captured_while_the_extension_is_away_arrive_once_it_is_back(client: CaptureClient, port: int) -> None:
    @capture_handler
    def handler(event: object, context: object) -> str:
        client_module.capture(input=event)
        return "ok"

    for n in range(3):  # no extension: kept in the outbox
        assert handler(f"early-{n}", SimpleNamespace(aws_request_id=f"req-{n}")) == "ok"
    assert client.stats["dropped"] == 0
    server = IngestServer(port)
    try:
        time.sleep(2.1)  # past the client's reconnect backoff
        assert handler("late", SimpleNamespace(aws_request_id="req-late")) == "ok"
        client.flush(1000)
        assert server.inputs() == ["early-0", "early-1", "early-2", "late"]
        assert client.stats["dropped"] == 0
    finally:
        server.stop()
