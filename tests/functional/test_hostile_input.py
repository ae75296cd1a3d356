"""Hostile input to both ingest paths: a clear 4xx every time over HTTP, every socket line counted,
the server keeps serving, nothing already accepted is lost.

The real HTTP server, the real Unix-socket server and the ingest path run on their own loop in a
thread (with the spool on and ``CAPTURE_REDACT`` rules active), and hypothesis throws random
bytes, deep nesting (under a redacted field too), huge strings, invalid UTF-8, tricky RFC 3339
timestamps, integers beyond 64 bits, wrong content types and raw protocol garbage at it over real
sockets.
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
from capture_ext.core.ingest import Ingest, start_socket_server
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher
from capture_ext.core.redact import Redactor, parse_rules
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
        redactor = Redactor(parse_rules(REDACT))
        self.ingest = Ingest(self.store, self.ledger, Enricher("f", "1", "hostile"), MAX_RECORD, redactor=redactor)
        self.http = HTTPServer(self.ingest.handle_http, MAX_REQUEST, idle_timeout_s=1.0, body_timeout_s=0.3)
        self.port = 0
        self.socket_path = str(directory / "capture.sock")
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.http.start("127.0.0.1", 0))
            self.unix = self.loop.run_until_complete(start_socket_server(self.ingest, self.socket_path))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.http.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.unix.close)
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
REDACT = "input.secret:hash,metadata.user"
#: RFC 3339 texts that are valid but awkward, or look valid and are not (offsets that leave the
#: years 1-9999, leap seconds, lower-case separators, no offset, fractions of any length).
TIMESTAMPS = [
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999Z",
    "0999-06-01T12:00:00Z",
    "2026-11-22t04:00:00z",
    "2026-11-22T04:00:00",
    "2026-11-22T04:00:60Z",
    "2026-11-22T04:00:00.123456789+14:00",
    "2026-02-30T00:00:00Z",
    "2026-11-22 04:00:00+05:30",
    "",
    "now",
]


def good_record(n: int) -> bytes:
    ident = f"good-{n}-{time.monotonic_ns()}"
    return orjson.dumps({"input": {"n": n}, "inference_id": ident})


def nested(depth: int) -> bytes:
    return b'{"input": ' + b"[" * depth + b"]" * depth + b"}"


def record_with(**fields: object) -> bytes:
    return orjson.dumps({"input": {"q": "x"}, **fields})


hostile_records = st.one_of(
    st.sampled_from(TIMESTAMPS).map(lambda t: record_with(timestamp=t)),
    st.datetimes(timezones=st.timezones()).map(lambda d: record_with(timestamp=d.isoformat())),
    st.integers(min_value=100, max_value=400).map(
        lambda depth: b'{"input": {"secret": ' + b"[" * depth + b"]" * depth + b"}}"
    ),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: b'{"input": {"n": %d}}' % n),
    st.sampled_from(["tenant", "sequence", "captured_at"]).map(
        lambda key: orjson.dumps({"input": 1, key: 1, "metadata": {key: 2, f"client_{key}": 3}})
    ),
    st.just(b'{"input": "who \\ud800"}'),
)

hostile_bodies = st.one_of(
    hostile_records,
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


def socket_send(path: str, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(path)
        raw.sendall(data)


def wait_for_counts(server: Server, total: int) -> None:
    """Until the extension has counted ``total`` socket lines (received + rejected)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.ledger.received + sum(server.ledger.rejected.values()) >= total:
            return
        time.sleep(0.005)
    raise AssertionError(f"only {server.ledger.received} received + {dict(server.ledger.rejected)} of {total}")


def is_control(line: bytes) -> bool:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and "_capture_ext" in value


class Long(bytes):
    """A line too long to accept, with a short repr (hypothesis prints failing examples)."""

    def __repr__(self) -> str:
        return f"<{len(self)}-byte line>"


socket_lines = st.one_of(
    hostile_records,
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    st.integers(min_value=MAX_RECORD - 20, max_value=MAX_RECORD * 3).map(
        lambda n: Long(b'{"input": "' + b"y" * n + b'"}')
    ),
    st.just(b'{"_capture_ext": "done", "request_id": "r-1"}'),
    st.just(b'{"_capture_ext": "start", "request_id": "r-1"}'),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(socket_lines, min_size=1, max_size=8), n=st.integers(0, 10**6), cut=st.integers(1, 50))
def test_hostile_socket_lines_are_each_counted_and_the_good_ones_of_the_same_read_kept(
    server: Server, lines: list[bytes], n: int, cut: int
) -> None:
    """Every line is received or rejected (counted), never lost with the connection; a good line in
    the same read and on the same connection is kept."""
    good = good_record(n)
    records = [line for line in lines if line and not is_control(line)]  # empty lines are skipped
    stream = b"".join(line + b"\n" for line in [*lines, good])
    before = server.ledger.received + sum(server.ledger.rejected.values())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(server.socket_path)
        for start in range(0, len(stream), max(len(stream) // cut, 1)):  # arbitrary read boundaries
            raw.sendall(stream[start : start + max(len(stream) // cut, 1)])
    wait_for_counts(server, before + len(records) + 1)
    assert server.ledger.received + sum(server.ledger.rejected.values()) == before + len(records) + 1
    ACCEPTED.append(orjson.loads(good)["inference_id"])
    assert not server.ledger.rejected.get("internal_error")


def test_redaction_over_a_value_too_deep_to_hash_refuses_that_record_only(server: Server) -> None:
    deep = b'{"input": {"secret": ' + b"[" * 300 + b"]" * 300 + b"}}"
    status, answer = server.post(deep, "application/json")
    assert status == 400 and "cannot be stored" in answer["error"]
    good = good_record(7)
    before = server.ledger.received
    socket_send(server.socket_path, deep + b"\n" + good + b"\n")
    wait_for_counts(server, before + sum(server.ledger.rejected.values()) + 1)
    ACCEPTED.append(orjson.loads(good)["inference_id"])


def test_nothing_accepted_was_lost(server: Server) -> None:
    """Runs after the others (file order): every record acknowledged so far is on disk, and counted."""
    server.health()  # still serving
    received = server.ledger.received
    assert received >= len(ACCEPTED)
    on_disk = set()
    lines = 0
    for segment in server.spool.segments:
        for line in Path(segment.path).read_bytes().splitlines():
            if line.startswith(b"{"):
                lines += 1
                on_disk.add(orjson.loads(line)["inference_id"])
    assert set(ACCEPTED) <= on_disk  # every one of them was written ahead to the spool
    assert received == lines == len(server.store.buffer)
    assert not server.ledger.dropped
    for line in (
        orjson.loads(x)
        for s in server.spool.segments
        for x in Path(s.path).read_bytes().splitlines()
        if x.startswith(b"{")
    ):
        secret = (line.get("input") or {}).get("secret") if isinstance(line.get("input"), dict) else None
        assert secret is None or str(secret).startswith("sha256:"), "a redacted field reached the spool"


def test_a_line_too_long_is_refused_once_however_many_reads_it_takes(server: Server) -> None:
    """Regression: while skipping an endless line, every read that grew past the limit counted it again."""
    before = sum(server.ledger.rejected.values())
    received = server.ledger.received
    good = good_record(99)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(server.socket_path)
        raw.sendall(b'{"input": "')
        for _ in range(5):  # five reads, each past the limit on its own
            raw.sendall(b"z" * (MAX_RECORD + 100))
            time.sleep(0.05)
        raw.sendall(b'"}\n' + good + b"\n")
    wait_for_counts(server, received + before + 2)
    time.sleep(0.1)
    assert sum(server.ledger.rejected.values()) == before + 1
    assert server.ledger.received == received + 1
    ACCEPTED.append(orjson.loads(good)["inference_id"])
