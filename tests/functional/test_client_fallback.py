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

    def __init__(self, port: int, max_request_bytes: int = 1024 * 1024, memory: int = 1024 * 1024) -> None:
        self.loop = asyncio.new_event_loop()
        self.ledger = Ledger()
        budget = MemoryBudget(memory)
        self.store = Store(RecordBuffer("fallback", budget, 1000, 1024 * 1024), budget, sinks=["probe"])
        self.done: list[str] = []
        self.ingest = Ingest(
            self.store, self.ledger, Enricher("f", "1", "fallback"), 64 * 1024, on_handler_done=self.done.append
        )
        self.http = HTTPServer(self.ingest.handle_http, max_request_bytes)
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


def test_a_lower_request_cap_splits_the_fallback_body_instead_of_dropping_it(client: CaptureClient, port: int) -> None:
    """Regression (hostile review): with CAPTURE_MAX_REQUEST_BYTES below the client's 1 MiB chunk,
    the 413 made the client drop every record of the chunk."""
    server = IngestServer(port, max_request_bytes=4096)
    try:
        for n in range(40):
            client.capture(input={"n": n, "pad": "p" * 300})
        for _ in range(50):
            if client.flush(200) and not client._outbox:
                break
        assert [r["n"] for r in server.inputs()] == list(range(40))  # type: ignore[index]
        assert client.stats["dropped"] == 0
    finally:
        server.stop()


def test_a_full_store_answers_503_keeps_nothing_and_the_client_tries_again(client: CaptureClient, port: int) -> None:
    """All or nothing even in memory: a refused request kept nothing, so the client's retry cannot
    duplicate half of it; the refusal is counted as rejected, not as received and dropped."""
    server = IngestServer(port, memory=2000)
    try:
        for n in range(10):
            client.capture(input={"n": n, "pad": "p" * 300})  # more than the 2,000 bytes of memory
        client.flush(500)
        kept = len(server.inputs())
        assert 0 < kept < 10 and server.ledger.received == kept  # whole requests only
        assert server.ledger.rejected["buffer_full"] >= 1 and not server.ledger.dropped
        assert kept + client._outbox.count(b"\n") == 10  # the rest kept for a later try
        assert client.stats["dropped"] == 0
    finally:
        server.stop()
