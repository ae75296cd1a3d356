"""Hostile input to the ingest endpoint: a clear 4xx every time, the server keeps serving, nothing
already accepted is lost.

The real HTTP server and ingest path run on their own loop in a thread (with the spool on), and
hypothesis throws random bytes, deep nesting, huge strings, invalid UTF-8, wrong content types and
raw protocol garbage at it over real sockets.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.http11 import HTTPServer
from capture_ext.core.ingest import Ingest
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher
from capture_ext.core.spool import Spool
from capture_ext.core.store import Store

MAX_RECORD = 16 * 1024
MAX_REQUEST = 64 * 1024
CONTENT_TYPES = [
    "application/json",
    "application/x-ndjson",
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "\u00e9/\u00e8",
    "",
]


class Server:
    def __init__(self, directory: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ledger = Ledger()
        budget = MemoryBudget(64 * 1024 * 1024)
        self.spool = Spool(str(directory / "spool"), 64 * 1024 * 1024, "never", "hostile")
        self.spool.open()
        self.store = Store(RecordBuffer("hostile", budget, 1000, 5 * 1024 * 1024), budget, self.spool)
        self.ingest = Ingest(self.store, self.ledger, Enricher("f", "1", "hostile"), MAX_RECORD)
        self.http = HTTPServer(self.ingest.handle_http, MAX_REQUEST, idle_timeout_s=1.0, body_timeout_s=0.3)
        self.port = 0
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.http.start("127.0.0.1", 0))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.http.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.spool.close(unsealed=1)

    def post(self, body: bytes, content_type: str | None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {} if content_type is None else {"Content-Type": content_type}
        try:
            conn.request("POST", "/v1/records", body=body, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def health(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/v1/health")
            response = conn.getresponse()
            assert response.status == 200
            return json.loads(response.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("hostile"))
    yield instance
    instance.stop()


ACCEPTED: list[str] = []


def good_record(n: int) -> bytes:
    ident = f"good-{n}-{time.monotonic_ns()}"
    return orjson.dumps({"input": {"n": n}, "inference_id": ident})


def nested(depth: int) -> bytes:
    return b'{"input": ' + b"[" * depth + b"]" * depth + b"}"


hostile_bodies = st.one_of(
    st.binary(max_size=2048),
    st.integers(min_value=100, max_value=3000).map(nested),
    st.integers(min_value=MAX_RECORD - 50, max_value=MAX_REQUEST * 2).map(lambda n: b'{"input": "' + b"x" * n + b'"}'),
    st.binary(min_size=1, max_size=64).map(lambda b: b'{"input": "' + b"\xff\xfe" + b + b'"}'),
    st.lists(st.binary(max_size=200), max_size=20).map(b"\n".join),
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=30,
    ).map(lambda value: orjson.dumps(value)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=hostile_bodies, content_type=st.sampled_from([*CONTENT_TYPES, None]), n=st.integers(0, 10**6))
def test_hostile_bodies_get_a_clear_4xx_and_accepted_records_stay(
    server: Server, body: bytes, content_type: str | None, n: int
) -> None:
    status, answer = server.post(body, content_type)
    if status == 202:  # some random values are valid records: they count as accepted
        assert answer["accepted"] >= 1
    else:
        assert status in {400, 408, 413, 415}, (status, answer, body[:100])
        assert answer.get("error"), answer
    good = good_record(n)
    status, answer = server.post(good, "application/json")
    assert status == 202, answer
    ACCEPTED.append(orjson.loads(good)["inference_id"])


def test_protocol_garbage_and_slow_clients_do_not_stop_the_server(server: Server) -> None:
    for garbage in (
        b"\x00\xff" * 100 + b"\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/records HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(garbage)
            answer = raw.recv(4096)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        slow.sendall(
            b'POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"in'
        )
        good = good_record(-1)
        status, _ = server.post(good, "application/json")  # served while the slow client stalls
        assert status == 202
        ACCEPTED.append(orjson.loads(good)["inference_id"])
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    finally:
        slow.close()


def test_nothing_accepted_was_lost(server: Server) -> None:
    """Runs after the others (file order): every record acknowledged so far is buffered and on disk."""
    server.health()  # still serving
    received = server.ledger.received
    assert received >= len(ACCEPTED)
    buffered = {r["inference_id"] for r in server.store.buffer.snapshot()}
    assert set(ACCEPTED) <= buffered
    on_disk = set()
    for segment in server.spool.segments:
        for line in Path(segment.path).read_bytes().splitlines():
            if line.startswith(b"{"):
                on_disk.add(orjson.loads(line)["inference_id"])
    assert set(ACCEPTED) <= on_disk  # and every one of them was written ahead to the spool
    assert received == len(buffered) == len(on_disk)
    assert not server.ledger.dropped
