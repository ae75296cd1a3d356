"""The client's transport under pressure, against real local sockets: a peer that stops reading,
a peer that goes away mid-stream, every answer the HTTP fallback can get, and fail-open edges."""

import contextlib
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from capture_ext import client as client_module
from capture_ext import client_support
from capture_ext.client import CaptureClient, capture_handler
from capture_ext.client_support import sampled
from capture_ext.testing.net import free_port


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "capture.sock")


def unix_listener(path, backlog=1):
    """A listening Unix socket at ``path``: the extension's end, as the kernel sees it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(backlog)
    return listener


def read_lines(conn, count, timeout=10.0):
    conn.settimeout(timeout)
    data = b""
    while data.count(b"\n") < count:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def push_all(client: CaptureClient, reader: threading.Thread, timeout_ms: int, bound_s: float = 20.0) -> None:
    """Start ``reader`` (the extension's side), flush until the outbox is empty or ``bound_s``
    passes, then wait for the reader to have everything."""
    reader.start()
    deadline = time.monotonic() + bound_s
    while client._outbox and time.monotonic() < deadline:
        client.flush(timeout_ms=timeout_ms)
    reader.join(bound_s)


def test_bytes_the_kernel_cannot_take_wait_in_the_outbox_and_arrive_whole_and_in_order(sock_path):
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=1)
    try:
        client.capture(input="first")
        conn, _ = listener.accept()  # accepted, but nothing is read: the socket buffer fills up
        payload = "x" * 100_000
        for n in range(40):
            client.capture(input=payload, inference_id=f"r{n}")
        assert client._outbox and client.stats["dropped"] == 0  # waiting, not lost
        assert client.stats["errors"] == 0
        reader = threading.Thread(target=lambda: received.extend(read_lines(conn, 41)))
        received: list[dict] = []
        push_all(client, reader, timeout_ms=200, bound_s=10)
        assert not client._outbox
        assert [r["input"] for r in received[:1]] == ["first"]
        assert [r["inference_id"] for r in received[1:]] == [f"r{n}" for n in range(40)]
        assert all(r["input"] == payload for r in received[1:])
        assert client.stats["sent"] == 41
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_peer_that_goes_away_mid_stream_gets_the_unfinished_line_again_whole(sock_path):
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=1)
    try:
        client.capture(input="hello")
        conn, _ = listener.accept()
        conn.close()  # the extension died
        client.capture(input="lost?", inference_id="again")
        assert client._sock is None and client._outbox  # kept for the next connection
        client._retry_at = 0.0
        client.flush(timeout_ms=1)  # connects and resends the whole line
        conn, _ = listener.accept()
        assert [r["inference_id"] for r in read_lines(conn, 1)] == ["again"]
        conn.close()
    finally:
        client.close()
        listener.close()


def test_reconnection_backs_off_and_odd_connect_errors_never_raise(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    client = CaptureClient(socket_path=str(not_a_dir / "capture.sock"), port=free_port(), timeout_ms=0)
    backoffs = []
    for _ in range(8):
        assert client._connected_socket() is None  # ENOTDIR: logged at debug, never raised
        backoffs.append(client._backoff_s)
        client._retry_at = 0.0
    assert backoffs == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    client._retry_at = time.monotonic() + 60
    assert client._connected_socket() is None  # not even tried while backing off


class Answers(BaseHTTPRequestHandler):
    """Answers each POST with the next (status, body) of ``script``; records what it got."""

    script: list[tuple[int, bytes]] = []
    received: list[bytes] = []
    paths: list[str] = []

    def do_POST(self):
        Answers.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        Answers.paths.append(self.path)
        status, body = Answers.script.pop(0) if Answers.script else (202, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    Answers.script, Answers.received, Answers.paths = [], [], []
    # ``shutdown`` waits for the serving loop's next poll: at the default 0.5 s that was most of
    # this file's run time, and mutmut, which times only the test body, then took the slow
    # teardowns of a harmless mutant for a hang (its wall limit is 5 x (body time + 1 s)).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_full_store_keeps_the_lines_and_backs_off_before_the_next_post(sock_path, http_server):
    Answers.script = [(503, b'{"accepted": 0}'), (202, b'{"accepted": 2, "rejected": 0, "dropped": 0}')]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    client.capture(input="a")
    assert client.stats["http"] == 0 and client._outbox.count(b"\n") == 1
    client.capture(input="b")  # within the backoff: not posted, queued behind the first
    assert len(Answers.received) == 1
    client._http_retry_at = 0.0
    assert client.flush(timeout_ms=2000)
    assert client.stats["http"] == 2 and not client._outbox
    assert Answers.received[1].count(b"\n") == 2
    assert Answers.paths == ["/v1/records?partial=1"] * 2
    client.close()
    assert client._http is None


def test_lines_refused_as_a_whole_are_counted_as_dropped(sock_path, http_server):
    Answers.script = [(400, b'{"error": "bad"}')]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    client.capture(input="a")
    assert client.stats["dropped"] == 1 and client.stats["http"] == 0 and not client._outbox


def test_an_answer_that_is_not_json_still_counts_the_lines(sock_path, http_server):
    Answers.script = [(202, b"accepted"), (202, b"[1]")]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    client.capture(input="a")
    client.capture(input="b")  # the same connection, kept alive
    assert client.stats["http"] == 2 and len(Answers.received) == 2


def test_a_large_outbox_is_posted_in_bodies_cut_at_line_ends(sock_path, http_server, monkeypatch):
    monkeypatch.setattr(client_module, "HTTP_BODY_BYTES", 1000)
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    for n in range(12):
        client.capture(input="y" * 200, inference_id=f"r{n}")  # no time budget: queued only
    assert len(Answers.received) == 0
    assert client.flush(timeout_ms=5000)
    assert len(Answers.received) > 1 and all(len(body) <= 1000 for body in Answers.received)
    ids = [json.loads(line)["inference_id"] for body in Answers.received for line in body.splitlines()]
    assert ids == [f"r{n}" for n in range(12)] and client.stats["http"] == 12


def test_an_unreachable_endpoint_keeps_the_lines(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=200)
    client.capture(input="a")
    assert client.stats["http"] == 0 and client.stats["dropped"] == 0
    assert client._outbox.count(b"\n") == 1 and client._http is None


def test_objects_with_item_or_tolist_and_sets_serialise(sock_path):
    class Scalar:
        def item(self):
            return 7

    class Array:
        def tolist(self):
            return [1, 2]

    assert client_support._default(Scalar()) == 7
    assert client_support._default(Array()) == [1, 2]
    assert client_support._default(frozenset({3})) == [3]
    assert client_support._default(object()).startswith("<object object")
    line = client_support._dumps({"s": Scalar(), "a": Array()})
    assert json.loads(line) == {"s": 7, "a": [1, 2]}


def test_a_capture_that_fails_inside_is_counted_and_never_raises(sock_path, monkeypatch):
    client = CaptureClient(socket_path=sock_path, port=free_port())

    def broken(line):
        raise RuntimeError("bug")

    monkeypatch.setattr(client, "send_line", broken)
    assert client.capture(input="x", inference_id="id1") == "id1"
    assert client.stats["errors"] == 1


def test_an_unusable_environment_never_reaches_the_handler(monkeypatch):
    def unusable():
        raise OSError("no environment")

    monkeypatch.setattr(client_module, "get_client", unusable)
    assert client_module.capture(input="x", inference_id="kept") == "kept"
    assert len(client_module.capture(input="x")) == 32

    @capture_handler
    def handler(event, context):
        return event["n"] + 1

    assert handler({"n": 1}, SimpleNamespace(aws_request_id="req-1")) == 2


def test_no_control_lines_without_a_request_id(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port())
    client.handler_started(None)
    client.handler_done("")
    assert not client._outbox and client.stats == {"sent": 0, "http": 0, "unsampled": 0, "dropped": 0, "errors": 0}


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("CAPTURE_SAMPLE_RATE", "7", "sample_rate", 1.0),
        ("CAPTURE_SAMPLE_RATE", "-1", "sample_rate", 0.0),
        ("CAPTURE_SAMPLE_RATE", "abc", "sample_rate", 1.0),
        ("CAPTURE_CLIENT_TIMEOUT_MS", "-5", "timeout_s", 0.0),
        ("CAPTURE_CLIENT_TIMEOUT_MS", "250", "timeout_s", 0.25),
        ("CAPTURE_PORT", "9100", "port", 9100),
    ],
)
def test_settings_from_the_environment_are_clamped(monkeypatch, variable, value, attribute, expected):
    monkeypatch.setenv(variable, value)
    assert getattr(CaptureClient(socket_path="/nonexistent"), attribute) == expected


# -- exact values, written where mutation testing found room ----------------------------------


def test_generated_inference_ids_are_random_version_4_uuids():
    import uuid

    ids = [client_support._uuid4_hex() for _ in range(200)]
    assert len(set(ids)) == 200
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(("value", "port"), [("1", 1), ("65535", 65535), ("8080.0", 8080)])
def test_a_capture_port_within_1_to_65535_is_used(monkeypatch, value, port):
    monkeypatch.setenv("CAPTURE_PORT", value)
    assert CaptureClient(socket_path="/nonexistent").port == port


@pytest.mark.parametrize("value", ["0", "65536", "80.5", "-1"])
def test_a_capture_port_outside_1_to_65535_is_named_and_replaced_by_the_default(monkeypatch, caplog, value):
    monkeypatch.setenv("CAPTURE_PORT", value)
    with caplog.at_level(logging.WARNING, "capture_ext.client"):
        assert CaptureClient(socket_path="/nonexistent").port == 9009
    assert [r.getMessage() for r in caplog.records] == [
        f"capture client: CAPTURE_PORT={value!r} is not a TCP port (1-65535); using 9009"
    ]


@pytest.mark.parametrize("value", ["abc", "nan", "inf"])
def test_a_setting_that_is_not_a_finite_number_is_named_and_replaced_by_the_default(monkeypatch, caplog, value):
    monkeypatch.setenv("CAPTURE_SAMPLE_RATE", value)
    with caplog.at_level(logging.WARNING, "capture_ext.client"):
        assert CaptureClient(socket_path="/nonexistent").sample_rate == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        f"capture client: CAPTURE_SAMPLE_RATE={value!r} is not a finite number; using 1.0"
    ]


def test_a_record_carries_only_the_fields_it_was_given(monkeypatch):
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    client = CaptureClient(socket_path="/nonexistent", port=free_port(), timeout_ms=0)
    lines: list[bytes] = []
    monkeypatch.setattr(client, "send_line", lines.append)
    client.capture(input="x", output=None, model=None, metadata={}, inference_id="i1")
    client.capture(output=0, timestamp="2024-01-02T03:04:05Z", latency_ms=0, inference_id="i2")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-abc")
    client.capture(input=1, inference_id="i3")
    client.capture(input=1, inference_id="i4", trace_id="mine")
    first, second, third, fourth = (json.loads(line) for line in lines)
    assert set(first) == {"inference_id", "timestamp", "input"} and type(first["timestamp"]) is int
    assert abs(first["timestamp"] - time.time() * 1000) < 60_000  # epoch milliseconds, now
    assert second == {"inference_id": "i2", "timestamp": "2024-01-02T03:04:05Z", "output": 0, "latency_ms": 0}
    assert third["trace_id"] == "Root=1-abc" and fourth["trace_id"] == "mine"
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)


def test_control_lines_are_exactly_the_wire_format(monkeypatch):
    client = CaptureClient(socket_path="/nonexistent", port=free_port(), timeout_ms=0)
    lines: list[bytes] = []
    monkeypatch.setattr(client, "send_line", lines.append)
    client.handler_started("req-1")
    client.handler_done("req-1")
    assert [json.loads(line) for line in lines] == [
        {"_capture_ext": "start", "request_id": "req-1"},
        {"_capture_ext": "done", "request_id": "req-1"},
    ]


@pytest.mark.parametrize(
    ("answer", "counted"),
    [
        (b'{"accepted": 1}', 1),
        (b'{"accepted": 0}', 0),
        (b'{"accepted": 2}', 2),
        (b'{"accepted": 3}', 2),
        (b'{"accepted": -1}', 2),
        (b'{"accepted": true}', 2),
        (b'{"accepted": 1.0}', 2),
        (b'{"rejected": 0}', 2),
    ],
)
def test_the_lines_counted_as_sent_over_http_are_the_extensions_count_when_it_makes_sense(
    sock_path, http_server, answer, counted
):
    Answers.script = [(202, answer)]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    client.capture(input="a")
    client.capture(input="b")
    assert client.flush(timeout_ms=2000) and client.stats["http"] == counted and not client._outbox


def test_a_413_splits_the_body_and_keeps_every_line(sock_path, http_server):
    Answers.script = [(413, b'{"error": "too large"}')]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    for name in "abcd":
        client.capture(input=name)
    assert client.flush(timeout_ms=2000)
    assert [body.count(b"\n") for body in Answers.received] == [4, 2, 2]
    assert client.stats["http"] == 4 and client.stats["dropped"] == 0


def test_a_413_for_a_single_line_drops_it(sock_path, http_server):
    Answers.script = [(413, b'{"error": "too large"}')]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    client.capture(input="a")
    assert client.stats["dropped"] == 1 and not client._outbox and len(Answers.received) == 1


@pytest.mark.parametrize("status", [500, 502, 599])
def test_a_server_error_keeps_the_lines_for_later(sock_path, http_server, status):
    Answers.script = [(status, b"{}")]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    client.capture(input="a")
    assert client.stats["dropped"] == 0 and client._outbox.count(b"\n") == 1 and client._http_retry_at > 0


def test_the_module_level_capture_passes_every_field_to_the_process_client(monkeypatch):
    client = CaptureClient(socket_path="/nonexistent", port=free_port(), timeout_ms=0)
    lines: list[bytes] = []
    monkeypatch.setattr(client, "send_line", lines.append)
    monkeypatch.setattr(client_module, "_client", client)
    fields: dict[str, Any] = {
        "inference_id": "i1",
        "request_id": "r1",
        "model": "m",
        "latency_ms": 1.5,
        "metadata": {"k": "v"},
        "timestamp": 7,
        "trace_id": "t1",
    }
    assert client_module.capture({"q": 1}, {"a": 2}, **fields) == "i1"
    assert json.loads(lines[0]) == {"input": {"q": 1}, "output": {"a": 2}, **fields}


def test_a_client_that_cannot_be_created_is_logged_at_debug_with_its_traceback(monkeypatch, caplog):
    def unusable():
        raise OSError("no environment")

    monkeypatch.setattr(client_module, "get_client", unusable)
    with caplog.at_level(logging.DEBUG, "capture_ext.client"):
        client_module.capture(input="x")
    (record,) = caplog.records
    assert record.getMessage() == "capture client could not be created"
    assert record.exc_info is not None and str(record.exc_info[1]) == "no environment"


def test_integers_at_the_64_bit_edges_stay_numbers():
    edges = {"max": 2**64 - 1, "min": -(2**63), "over": 2**64, "under": -(2**63) - 1}
    assert client_support._big_ints_as_text(edges) == {
        "max": 2**64 - 1,
        "min": -(2**63),
        "over": str(2**64),
        "under": str(-(2**63) - 1),
    }


def _ids(conn, count: int) -> list[str]:
    """Read ``count`` lines; each must be whole JSON with its payload intact."""
    records = read_lines(conn, count)
    assert all(r["input"] == "y" * 900 for r in records)
    return [r["inference_id"] for r in records]


def test_lines_handed_to_the_kernel_in_pieces_are_forgotten_once_and_counted_once(sock_path):
    """Many small lines, pushed by pumps that stop mid-line (``flush(timeout_ms=0)``) while a
    reader drains: each pump must forget exactly the complete lines the kernel took, keep the
    offset into the partly sent one, and count every line once."""
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    total = 600
    try:
        client.capture(input="y" * 900, inference_id="r0")
        conn, _ = listener.accept()
        for n in range(1, total):
            client.capture(input="y" * 900, inference_id=f"r{n}")
        assert client._outbox  # the kernel took only part: the rest waits, a line cut somewhere
        received: list[str] = []
        reader = threading.Thread(target=lambda: received.extend(_ids(conn, total)))
        reader.start()
        deadline = time.monotonic() + 20
        while client._outbox and time.monotonic() < deadline:
            client.flush(timeout_ms=0)  # each pump stops where the kernel does, often mid-line
            assert client.stats["sent"] <= total
            time.sleep(0.0005)
        reader.join(20)
        assert received == [f"r{n}" for n in range(total)]
        assert client.stats["sent"] == total and not client._outbox
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_pump_that_sends_everything_leaves_nothing_queued(sock_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    try:
        for n in range(3):  # no extension yet (and nothing on the port): queued, not lost
            client.capture(input="y" * 900, inference_id=f"r{n}")
        assert client._outbox.count(b"\n") == 3 and client.stats["sent"] == 0
        listener.bind(sock_path)
        listener.listen(1)
        client._retry_at = 0.0
        assert client.flush(timeout_ms=1000) is True  # connects; the kernel takes all three
        assert not client._outbox and client.stats["sent"] == 3
        conn, _ = listener.accept()
        assert _ids(conn, 3) == ["r0", "r1", "r2"]
        client.capture(input="y" * 900, inference_id="r3")  # the fast path again, nothing stale
        assert _ids(conn, 1) == ["r3"] and client.stats["sent"] == 4
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_peer_that_dies_during_a_pump_gets_the_queued_lines_again_byte_for_byte(sock_path):
    """The extension goes away while the outbox holds a partly sent line: the pump's send fails,
    and the next connection must receive that line whole and every line after it, unchanged."""
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    total = 400
    try:
        client.capture(input="y" * 900, inference_id="r0")
        conn, _ = listener.accept()
        for n in range(1, total):
            client.capture(input="y" * 900, inference_id=f"r{n}")
        queued = client._outbox.count(b"\n")
        assert queued and client._sock is not None
        conn.close()  # the extension died without reading
        assert client.flush(timeout_ms=0) is False  # the send fails: socket dropped, lines kept
        assert client._sock is None and client._outbox.count(b"\n") == queued
        client._retry_at = 0.0
        received: list[str] = []
        accepted = threading.Thread(target=lambda: received.extend(_ids(listener.accept()[0], queued)))
        push_all(client, accepted, timeout_ms=50)
        assert received == [f"r{n}" for n in range(total - queued, total)]
        assert client.stats["sent"] == total and not client._outbox
    finally:
        client.close()
        listener.close()


def _line(n: int, size: int) -> bytes:
    line = json.dumps({"inference_id": f"r{n}", "input": "y" * size}).encode() + b"\n"
    return line


def test_an_outbox_exactly_one_body_long_goes_in_one_post(sock_path, http_server, monkeypatch):
    lines = [_line(0, 300), _line(1, 400)]
    monkeypatch.setattr(client_module, "HTTP_BODY_BYTES", sum(map(len, lines)))
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    for line in lines:
        assert client.send_line(line) is False  # no time budget: queued, and it says so
    assert client.flush(timeout_ms=5000) is True
    assert Answers.received == [b"".join(lines)] and client.stats["http"] == 2


def test_a_first_line_longer_than_a_body_is_posted_alone(sock_path, http_server, monkeypatch):
    monkeypatch.setattr(client_module, "HTTP_BODY_BYTES", 1000)
    lines = [_line(0, 1500), _line(1, 100), _line(2, 100)]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    for line in lines:
        client.send_line(line)
    assert client.flush(timeout_ms=5000) is True
    assert Answers.received == [lines[0], lines[1] + lines[2]] and client.stats["http"] == 3


def test_a_flush_that_cannot_post_yet_says_so(sock_path, http_server):
    Answers.script = [(503, b'{"accepted": 0}')]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    assert client.send_line(_line(0, 10)) is False  # 503: kept, backing off
    assert client.flush(timeout_ms=2000) is False  # still backing off: nothing posted, and it says so
    assert len(Answers.received) == 1 and client._outbox == _line(0, 10)
    assert client.flush(timeout_ms=0) is False
    client._http_retry_at = 0.0
    assert client.flush(timeout_ms=2000) is True and not client._outbox and client.stats["http"] == 1


def test_a_413_for_two_lines_splits_them_too(sock_path, http_server):
    Answers.script = [(413, b'{"error": "too large"}')]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    lines = [_line(0, 10), _line(1, 10)]
    for line in lines:
        client.send_line(line)
    assert client.flush(timeout_ms=2000)
    assert Answers.received == [lines[0] + lines[1], lines[0], lines[1]]
    assert client.stats["http"] == 2 and client.stats["dropped"] == 0


def test_an_extension_that_never_answers_costs_the_flush_its_budget_not_the_handler(sock_path):
    """A listener whose connections are never served: the POST must give up within the time left
    (the join bound is only there so a hang fails the test instead of stalling it)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    client = CaptureClient(socket_path=sock_path, port=silent.getsockname()[1], timeout_ms=0)
    client.send_line(_line(0, 10))
    outcome: list[bool] = []
    pushing = threading.Thread(target=lambda: outcome.append(client.flush(timeout_ms=100)), daemon=True)
    try:
        pushing.start()
        pushing.join(30)
        assert outcome == [False]  # unanswered: kept for a later try
        assert client._outbox == _line(0, 10) and client.stats["dropped"] == 0
    finally:
        silent.close()
        pushing.join(30)
        client.close()


@pytest.mark.parametrize(
    ("status", "delivered", "dropped", "kept"),
    [(200, 1, 0, 0), (202, 1, 0, 0), (299, 1, 0, 0), (300, 0, 1, 0), (199, 0, 1, 0), (503, 0, 0, 1), (500, 0, 0, 1)],
)
def test_each_answer_status_delivers_drops_or_keeps_the_lines(sock_path, http_server, status, delivered, dropped, kept):
    """2xx is taken, 5xx kept for later, anything else refused as a whole (the edges of each range).

    ``send_line`` says True only when nothing is left queued."""
    Answers.script = [(status, b"{}")]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    assert client.send_line(_line(0, 10)) is (kept == 0)
    assert (client.stats["http"], client.stats["dropped"], client._outbox.count(b"\n")) == (delivered, dropped, kept)


def test_an_unreachable_extension_leaves_the_line_queued_and_says_so(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=2000)
    assert client.send_line(_line(0, 10)) is False
    assert client._outbox == _line(0, 10) and client._http_retry_at > 0


def test_refusals_add_up(sock_path, http_server):
    Answers.script = [(400, b"{}"), (400, b"{}")]
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    assert client.send_line(_line(0, 10)) and client.send_line(_line(1, 10))
    assert client.stats["dropped"] == 2 and client.stats["http"] == 0 and not client._outbox


class AnswersOnceThenStalls:
    """A raw HTTP/1.1 endpoint: the first request is answered (keeping the connection or closing
    it), every later one is read and never answered, until ``stop``."""

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_request(self, conn: socket.socket, pending: bytes) -> bytes | None:
        while b"\r\n\r\n" not in pending:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            pending += chunk
        head, _, rest = pending.partition(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += conn.recv(65536)
        return rest[length:]

    def _serve(self) -> None:
        conns = []
        try:
            while not self.stopped.is_set():
                conn, _ = self.listener.accept()
                conns.append(conn)
                pending: bytes | None = b""
                while pending is not None and not self.stopped.is_set():
                    pending = self._read_request(conn, pending)
                    if pending is None:
                        break
                    self.requests += 1
                    if self.requests > 1:
                        self.stopped.wait()  # read, never answered
                        break
                    close = b"" if self.keep_alive else b"Connection: close\r\n"
                    conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n" + close + b"\r\n{}")
                    if not self.keep_alive:
                        break
        except OSError:
            pass  # the listener closed by stop()
        finally:
            for conn in conns:
                conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(30)


@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_post_on_a_reused_or_renewed_connection_gets_the_time_left_not_forever(sock_path, keep_alive):
    """The second POST, on the kept connection or on a new one after the extension closed the
    first, meets an extension that reads and never answers: it must give up within the budget."""
    server = AnswersOnceThenStalls(keep_alive)
    client = CaptureClient(socket_path=sock_path, port=server.port, timeout_ms=2000)
    outcome: list[bool] = []
    try:
        assert client.send_line(_line(0, 10)) is True and client.stats["http"] == 1
        client.timeout_s = 0.2  # the budget of the second send
        second = threading.Thread(target=lambda: outcome.append(client.send_line(_line(1, 10))), daemon=True)
        second.start()
        second.join(30)
        assert outcome == [False] and client._outbox == _line(1, 10)
    finally:
        server.stop()
        second.join(30)
        client.close()


def test_a_line_larger_than_the_outbox_still_goes_straight_to_an_open_socket(sock_path):
    """The outbox bound is for bytes waiting; a line the kernel takes whole never waits."""
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0, max_outbox_bytes=100)
    try:
        assert client.send_line(_line(0, 10)) is True
        conn, _ = listener.accept()
        assert client.send_line(_line(1, 500)) is True
        assert client.stats == {**client.stats, "sent": 2, "dropped": 0}
        assert [r["inference_id"] for r in read_lines(conn, 2)] == ["r0", "r1"]
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_line_the_full_kernel_refuses_outright_waits_whole(sock_path):
    """The kernel takes nothing (the fast path's BlockingIOError): the line waits from its first
    byte and arrives whole once the extension reads."""
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    try:
        assert client.send_line(_line(0, 10)) is True
        conn, _ = listener.accept()
        filler = b'{"fill":1}\n'
        fills = 0
        while True:  # fill the kernel with whole lines, through the client's own socket
            try:
                if client._sock.send(filler) != len(filler):  # type: ignore[union-attr]
                    pytest.fail("a partial filler line would make the stream unreadable")
                fills += 1
            except BlockingIOError:
                break
        assert client.send_line(_line(1, 10)) is False and client._outbox == _line(1, 10)
        received: list[dict] = []
        reader = threading.Thread(target=lambda: received.extend(read_lines(conn, 2 + fills)))
        push_all(client, reader, timeout_ms=50)
        assert received[0]["inference_id"] == "r0" and received[-1]["inference_id"] == "r1"
        assert len(received) == 2 + fills
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_send_to_a_peer_that_went_away_says_the_line_is_not_sent(sock_path):
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    try:
        assert client.send_line(_line(0, 10)) is True
        conn, _ = listener.accept()
        conn.close()
        assert client.send_line(_line(1, 10)) is False
        assert client._sock is None and client._outbox == _line(1, 10)
    finally:
        client.close()
        listener.close()


def test_a_failed_connect_waits_its_backoff_before_the_next_try(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    before = time.monotonic()
    assert client._connected_socket() is None  # nothing listens: ENOENT
    assert client._retry_at >= before + 0.05 and client._backoff_s == 0.1


def test_the_outbox_takes_lines_up_to_its_bound_exactly_and_counts_each_drop(sock_path):
    lines = [_line(0, 10), _line(1, 20)]
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0, max_outbox_bytes=sum(map(len, lines)))
    assert client.flush() is True  # nothing queued: nothing left to send
    for line in lines:  # no extension: queued
        assert client.send_line(line) is False
    assert client._outbox == b"".join(lines) and client.stats["dropped"] == 0
    assert client.send_line(_line(2, 0)) is False and client.send_line(_line(3, 0)) is False
    assert client._outbox == b"".join(lines) and client.stats["dropped"] == 2


def test_a_line_the_full_kernel_refuses_gets_the_time_budget_to_go_out(sock_path):
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    try:
        assert client.send_line(_line(0, 10)) is True
        conn, _ = listener.accept()
        filler = b'{"fill":1}\n'
        fills = 0
        while True:
            try:
                client._sock.send(filler)  # type: ignore[union-attr]
                fills += 1
            except BlockingIOError:
                break
        received: list[dict] = []

        def read_later() -> None:
            time.sleep(0.02)  # ordering only: the send below meets a full kernel first
            received.extend(read_lines(conn, 2 + fills))

        reader = threading.Thread(target=read_later)
        reader.start()
        # The budget, under a second (a pump must wait for any budget, not only long ones); the
        # reader needs a few milliseconds of it.
        client.timeout_s = 0.95
        assert client.send_line(_line(1, 10)) is True and not client._outbox
        reader.join(20)
        assert received[-1]["inference_id"] == "r1" and len(received) == 2 + fills
        conn.close()
    finally:
        client.close()
        listener.close()


def test_only_an_unexpected_connect_error_is_logged_and_it_names_the_error(tmp_path, caplog):
    """No extension yet (ENOENT) is the normal start of a cold start: silent. A socket path under a
    file (ENOTDIR) is a misconfiguration: one debug line naming it."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with caplog.at_level(logging.DEBUG, "capture_ext.client"):
        missing = CaptureClient(socket_path=str(tmp_path / "absent.sock"), port=free_port(), timeout_ms=0)
        assert missing._connected_socket() is None
        assert caplog.records == []
        odd = CaptureClient(socket_path=str(not_a_dir / "capture.sock"), port=free_port(), timeout_ms=0)
        assert odd._connected_socket() is None
    assert [r.getMessage() for r in caplog.records] == ["capture socket connect failed: [Errno 20] Not a directory"]


def test_failures_inside_capture_add_up_and_each_is_logged_with_its_traceback(sock_path, monkeypatch, caplog):
    client = CaptureClient(socket_path=sock_path, port=free_port())

    def broken(line):
        raise RuntimeError("bug")

    monkeypatch.setattr(client, "send_line", broken)
    with caplog.at_level(logging.DEBUG, "capture_ext.client"):
        assert client.capture(input="x", inference_id="id1") == "id1"
        assert client.capture(input="y", inference_id="id2") == "id2"
    assert client.stats["errors"] == 2
    assert [r.getMessage() for r in caplog.records] == ["capture failed", "capture failed"]
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_sampling_decides_by_the_inference_id_and_counts_each_record_left_out(sock_path):
    ids = [f"s{n}" for n in range(40)]
    client = CaptureClient(socket_path=sock_path, port=free_port(), sample_rate=0.5, timeout_ms=0)
    for inference_id in ids:
        assert client.capture(input="x", inference_id=inference_id) == inference_id
    left_out = sum(not sampled(i, 0.5) for i in ids)
    assert 0 < left_out < len(ids)
    assert client.stats["unsampled"] == left_out and client.stats["errors"] == 0
    assert client._outbox.count(b"\n") == len(ids) - left_out


def read_exactly(conn: socket.socket, size: int, timeout: float = 20.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("head", [_line(1, 10), b"\n"], ids=["record", "empty-line"])
def test_a_pump_that_stops_inside_a_line_after_whole_ones_keeps_its_offset_into_it(sock_path, head):
    """The kernel takes a whole line and part of a line larger than its buffer: the whole one is
    forgotten and counted at once (any line ``send_line`` was given, an empty one too), and the
    large one goes on from the exact byte where the kernel stopped, so it arrives intact."""
    listener = unix_listener(sock_path)
    # An outbox bound far above the large line, whatever the kernel's buffer size makes it.
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0, max_outbox_bytes=1 << 30)
    try:
        first = _line(0, 10)
        assert client.send_line(first) is True
        conn, _ = listener.accept()
        assert client._sock is not None
        filler = b'{"fill":1}\n'
        fills = 0
        while True:  # fill the kernel with whole lines, through the client's own socket
            try:
                if client._sock.send(filler) != len(filler):
                    pytest.fail("a partial filler line would make the stream unreadable")
                fills += 1
            except BlockingIOError:
                break
        large = _line(2, 4 * client._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        assert client.send_line(head) is False and client.send_line(large) is False
        assert client._outbox == head + large and client.stats["sent"] == 1
        # The extension reads everything sent so far: the kernel's buffer is empty again, and one
        # pump with no time to wait sends the head and as much of the large line as fits.
        assert read_exactly(conn, len(first) + fills * len(filler)) == first + filler * fills
        assert client.flush(timeout_ms=0) is False
        assert client._outbox == large and client.stats["sent"] == 2
        rest: list[bytes] = []
        reader = threading.Thread(target=lambda: rest.append(read_exactly(conn, len(head) + len(large))))
        reader.start()
        deadline = time.monotonic() + 20
        while client._outbox and reader.is_alive() and time.monotonic() < deadline:
            client.flush(timeout_ms=50)  # the reader stops at the expected length: a wrong resend shows at once
        reader.join(20)
        assert rest == [head + large] and client.stats["sent"] == 3 and not client._outbox
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_connection_that_succeeds_starts_the_backoff_again(sock_path):
    """After the extension was missing for a while, a connection that works resets the backoff:
    if that extension then goes away, the next try comes 50 ms later, not after the long wait."""
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    for _ in range(3):  # nothing listens yet (ENOENT): 0.05, 0.1, 0.2 s waits, the next one 0.4 s
        assert client._connected_socket() is None
        client._retry_at = 0.0
    assert client._backoff_s == 0.4
    listener = unix_listener(sock_path)
    try:
        assert client._connected_socket() is not None and client._backoff_s == 0.05
        conn, _ = listener.accept()
        conn.close()  # the extension went away
        before = time.monotonic()
        assert client.send_line(_line(0, 10)) is False and client._sock is None
        assert before + 0.05 <= client._retry_at <= time.monotonic() + 0.05 and client._backoff_s == 0.1
    finally:
        client.close()
        listener.close()


def test_without_settings_the_client_uses_the_documented_defaults(monkeypatch, tmp_path):
    """docs/configuration.md: CAPTURE_SOCKET /tmp/capture-ext.sock, CAPTURE_PORT 9009,
    CAPTURE_SAMPLE_RATE 1, CAPTURE_CLIENT_TIMEOUT_MS 5; a set CAPTURE_SOCKET is used as given."""
    for name in ("CAPTURE_SOCKET", "CAPTURE_PORT", "CAPTURE_SAMPLE_RATE", "CAPTURE_CLIENT_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    client = CaptureClient()
    assert (client.socket_path, client.port, client.sample_rate, client.timeout_s) == (
        "/tmp/capture-ext.sock",
        9009,
        1.0,
        0.005,
    )
    monkeypatch.setenv("CAPTURE_SOCKET", str(tmp_path / "elsewhere.sock"))
    assert CaptureClient().socket_path == str(tmp_path / "elsewhere.sock")


class BootClock:
    """The client's ``time`` reading as a clock that started with the machine a moment ago: Linux's
    monotonic clock counts from boot, and a Lambda microVM can take its first invoke within its
    first second. It stands still; the sockets' own timeouts stay real."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_a_client_used_within_a_second_of_boot_connects_and_posts_at_once(sock_path, http_server, monkeypatch):
    """No retry is scheduled before the first try: it must not read as "wait until second 1"."""
    monkeypatch.setattr(client_module, "time", BootClock(0.25))
    listener = unix_listener(sock_path)
    over_socket = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=1000)
    try:
        assert over_socket.send_line(_line(0, 10)) is True
        assert (over_socket.stats["sent"], over_socket.stats["http"]) == (1, 0) and Answers.received == []
        listener.settimeout(10)
        conn, _ = listener.accept()
        assert [r["inference_id"] for r in read_lines(conn, 1)] == ["r0"]
        conn.close()
    finally:
        over_socket.close()
        listener.close()
    absent = str(Path(sock_path).with_name("absent.sock"))
    over_http = CaptureClient(socket_path=absent, port=http_server.server_address[1], timeout_ms=1000)
    try:
        assert over_http.send_line(_line(1, 10)) is True  # no socket: posted at once, not held back
        assert Answers.received == [_line(1, 10)] and over_http.stats["http"] == 1
    finally:
        over_http.close()


class StillClock:
    """``time`` for the client with a monotonic clock that moves only when the test moves it.

    Two readings within one tick of a coarse clock are equal, so a deadline or a retry time can
    be reached exactly; ``on_read`` runs at every reading (e.g. the extension reading its socket
    at that instant)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.on_read = lambda: None
        self.time_ns = time.time_ns

    def monotonic(self) -> float:
        self.on_read()
        return self.now


#: A line far larger than a socket buffer: the kernel takes part of it and blocks.
BIG_LINE = b'{"n": 1, "input": "' + b"x" * (2 << 20) + b'"}\n'


def read_available(conn: socket.socket, into: bytearray) -> None:
    """What the extension can read now, without waiting."""
    with contextlib.suppress(BlockingIOError):
        while chunk := conn.recv(1 << 20):
            into.extend(chunk)


@contextlib.contextmanager
def still_clock_connection(sock_path: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client with ``CAPTURE_CLIENT_TIMEOUT_MS=0`` under a :class:`StillClock` at 100.0, one line
    (``{"n": 0}``) already sent, and the extension's end of the connection, non-blocking."""
    listener = unix_listener(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    clock = StillClock(100.0)
    monkeypatch.setattr(client_module, "time", clock)
    try:
        assert client.send_line(b'{"n": 0}\n') is True
        conn, _ = listener.accept()
        conn.setblocking(False)
        yield client, clock, conn
        conn.close()
    finally:
        client.close()
        listener.close()


def test_a_zero_budget_never_waits_for_the_socket_even_when_the_clock_has_not_moved(sock_path, monkeypatch):
    """``CAPTURE_CLIENT_TIMEOUT_MS=0``: a send the kernel blocks gives up at once, though the
    budget left is exactly 0 and the socket became writable that very instant."""
    with still_clock_connection(sock_path, monkeypatch) as (client, clock, conn):
        read = bytearray()
        clock.on_read = lambda: read_available(conn, read)
        assert client.send_line(BIG_LINE) is False
        assert client.stats["sent"] == 1 and client._outbox == BIG_LINE  # kept whole, for the next push
        read_available(conn, read)
        assert read.startswith(b'{"n": 0}\n' + BIG_LINE[:1000]) and len(read) < 9 + len(BIG_LINE)
        clock.on_read = lambda: None


def test_the_socket_is_tried_again_the_instant_its_backoff_ends(sock_path, monkeypatch):
    clock = StillClock(100.0)
    monkeypatch.setattr(client_module, "time", clock)
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=0)
    backoff = client._backoff_s
    assert client.send_line(b'{"n": 0}\n') is False  # no extension yet: kept, retry after the backoff
    listener = unix_listener(sock_path)
    try:
        clock.now = 100.0 + backoff
        assert client.flush(timeout_ms=0) is True
        conn, _ = listener.accept()
        assert read_lines(conn, 1) == [{"n": 0}] and client.stats["sent"] == 1
        conn.close()
    finally:
        client.close()
        listener.close()


def test_the_fallback_posts_again_the_instant_its_backoff_ends(sock_path, http_server, monkeypatch):
    Answers.script = [(503, b'{"accepted": 0}'), (202, b'{"accepted": 1, "rejected": 0}')]
    clock = StillClock(100.0)
    monkeypatch.setattr(client_module, "time", clock)
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=2000)
    try:
        assert client.send_line(b'{"n": 0}\n') is False  # 503: kept, backing off
        clock.now = client._http_retry_at
        assert client.flush(timeout_ms=2000) is True
        assert Answers.received == [b'{"n": 0}\n'] * 2 and client.stats["http"] == 1
    finally:
        client.close()


def test_a_zero_budget_never_posts_even_when_the_clock_has_not_moved(sock_path, http_server, monkeypatch):
    """No socket and ``CAPTURE_CLIENT_TIMEOUT_MS=0``: the line waits for the flush, which posts it."""
    clock = StillClock(100.0)
    monkeypatch.setattr(client_module, "time", clock)
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    try:
        assert client.send_line(b'{"n": 0}\n') is False
        assert client.flush(timeout_ms=2000) is True
        assert Answers.received == [b'{"n": 0}\n'] and client.stats["http"] == 1
    finally:
        client.close()


def test_a_flush_uses_all_the_milliseconds_it_was_given(sock_path, monkeypatch):
    """``flush(1000)`` still pushes when the socket blocks at 999.5 ms (the extension reading then)."""
    with still_clock_connection(sock_path, monkeypatch) as (client, clock, conn):
        assert client.send_line(BIG_LINE) is False  # the kernel took part of it; the rest waits
        read = bytearray()
        readings = []

        def extension_reads_late() -> None:  # the flush's deadline is read at 100.0, then time moves
            readings.append(clock.now)
            if len(readings) > 1:
                read_available(conn, read)
                clock.now = 100.9995

        clock.on_read = extension_reads_late
        assert client.flush(timeout_ms=1000) is True
        assert readings[:2] == [100.0, 100.0] and len(readings) > 2  # it did wait at 999.5 ms
        clock.on_read = lambda: None
        read_available(conn, read)
        assert bytes(read) == b'{"n": 0}\n' + BIG_LINE and client.stats["sent"] == 2


def test_413s_halve_the_body_down_to_a_single_byte(sock_path, http_server):
    """Two empty lines (2 bytes) refused as too large go again one by one, each then dropped as
    refused alone, instead of the same 2-byte body being posted until the budget runs out."""
    Answers.script = [(413, b'{"error": "too large"}')] * 3
    client = CaptureClient(socket_path=sock_path, port=http_server.server_address[1], timeout_ms=0)
    client.send_line(b"\n")
    client.send_line(b"\n")
    assert client.flush(timeout_ms=2000) is True
    assert Answers.received == [b"\n\n", b"\n", b"\n"]
    assert client.stats["dropped"] == 2 and client.stats["http"] == 0 and not client._outbox
