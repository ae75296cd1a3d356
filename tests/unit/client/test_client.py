"""The function-side client against real local sockets: fail-open, reconnecting, never blocking."""

import contextlib
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from capture_ext import client as client_module
from capture_ext.client import CONTROL_KEY, CaptureClient, capture_handler, sampled
from capture_ext.testing.net import free_port


class LineServer:
    """A Unix stream socket server collecting NDJSON lines (what the extension does)."""

    def __init__(self, path):
        self.path = path
        self.lines: list[dict] = []
        self.conns: list[socket.socket] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.05)
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        buffer = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                self.lines += [json.loads(line) for line in complete if line]

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.lines

    def stop(self):
        """Like a dying extension: the listener and every connection go away."""
        self.running = False
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join()
        os.unlink(self.path)


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "capture.sock")


def test_records_arrive_over_the_socket_with_all_fields(sock_path):
    server = LineServer(sock_path)
    try:
        client = CaptureClient(socket_path=sock_path, port=free_port())
        inference_id = client.capture(
            {"question": "q"},
            {"answer": "a"},
            request_id="r1",
            model={"name": "m", "version": "1"},
            latency_ms=12.5,
            metadata={"k": "v"},
        )
        (line,) = server.wait_for(1)
        assert line["inference_id"] == inference_id and len(inference_id) == 32
        assert line["input"] == {"question": "q"} and line["output"] == {"answer": "a"}
        assert line["request_id"] == "r1" and line["model"] == {"name": "m", "version": "1"}
        assert line["latency_ms"] == 12.5 and line["metadata"] == {"k": "v"}
        assert isinstance(line["timestamp"], int)
        assert client.stats["sent"] == 1
    finally:
        server.stop()


def test_absent_extension_returns_fast_and_never_raises(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port(), timeout_ms=5)
    started = time.perf_counter()
    for _ in range(200):
        assert client.capture(input="x")
    elapsed = time.perf_counter() - started
    assert elapsed < 5, elapsed  # generous: the bound is the per-call budget, never a connect timeout
    assert client.stats["errors"] == 0


def test_records_captured_while_the_extension_is_down_are_sent_when_it_returns(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port())
    client.capture(input="early-1")
    client.capture(input="early-2")
    server = LineServer(sock_path)
    try:
        time.sleep(0.3)  # past the reconnect backoff
        client.capture(input="late")
        lines = server.wait_for(3)
        assert [line["input"] for line in lines] == ["early-1", "early-2", "late"]
    finally:
        server.stop()


def test_the_client_reconnects_after_the_extension_restarts(sock_path):
    server = LineServer(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port())
    client.capture(input="before")
    server.wait_for(1)
    server.stop()
    for _ in range(5):  # the broken connection is noticed by a failing send
        client.capture(input="during")
        time.sleep(0.01)
    server = LineServer(sock_path)
    try:
        deadline = time.monotonic() + 5
        while not any(line["input"] == "after" for line in server.lines) and time.monotonic() < deadline:
            client.capture(input="after")
            time.sleep(0.1)
        assert any(line["input"] == "after" for line in server.lines)
        assert all(line["input"] in {"during", "after"} for line in server.lines)
    finally:
        server.stop()


class RecordsHandler(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        RecordsHandler.received.append(body)
        assert self.headers["Content-Type"] == "application/x-ndjson"
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_http_is_the_fallback_when_there_is_no_socket(sock_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordsHandler)
    RecordsHandler.received = []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        client = CaptureClient(socket_path=sock_path, port=server.server_address[1], timeout_ms=1000)
        client.capture(input="over-http")
        lines = [json.loads(line) for body in RecordsHandler.received for line in body.splitlines()]
        assert [line["input"] for line in lines] == ["over-http"]
        assert client.stats["http"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_outbox_is_bounded(sock_path):
    client = CaptureClient(socket_path=sock_path, port=free_port(), max_outbox_bytes=300)
    for _ in range(10):
        client.capture(input="x" * 50)
    assert client.stats["dropped"] > 0
    assert len(client._outbox) <= 300


def test_sampling_is_deterministic_by_inference_id():
    ids = [f"id-{i}" for i in range(2000)]
    kept = [i for i in ids if sampled(i, 0.3)]
    assert kept == [i for i in ids if sampled(i, 0.3)]
    assert 450 < len(kept) < 750
    assert all(sampled(i, 1.0) for i in ids) and not any(sampled(i, 0.0) for i in ids)


def test_unsampled_records_cost_nothing(sock_path):
    server = LineServer(sock_path)
    try:
        client = CaptureClient(socket_path=sock_path, port=free_port(), sample_rate=0.0)
        assert client.capture(input="x", inference_id="fixed") == "fixed"
        time.sleep(0.05)
        assert server.lines == [] and client.stats["unsampled"] == 1
    finally:
        server.stop()


def test_odd_values_are_serialised_instead_of_failing(sock_path):
    class Scalar:
        def item(self):
            return 0.5

    server = LineServer(sock_path)
    try:
        client = CaptureClient(socket_path=sock_path, port=free_port())
        client.capture(input={"s": {1, 2}, "t": (1, 2), "x": Scalar(), "o": object()})
        (line,) = server.wait_for(1)
        assert sorted(line["input"]["s"]) == [1, 2] and line["input"]["t"] == [1, 2] and line["input"]["x"] == 0.5
    finally:
        server.stop()


def test_capture_handler_fills_request_id_and_signals_the_end(sock_path, monkeypatch):
    server = LineServer(sock_path)
    monkeypatch.setattr(client_module, "_client", CaptureClient(socket_path=sock_path, port=free_port()))
    try:

        @capture_handler
        def handler(event, context):
            client_module.capture(input=event, output="ok")
            return "answer"

        assert handler({"q": 1}, SimpleNamespace(aws_request_id="req-9")) == "answer"
        started, record, done = server.wait_for(3)
        assert started == {CONTROL_KEY: "start", "request_id": "req-9"}
        assert record["request_id"] == "req-9"
        assert done == {CONTROL_KEY: "done", "request_id": "req-9"}
        assert client_module._request_id.get() is None
    finally:
        server.stop()


def test_a_handler_exception_still_propagates(sock_path, monkeypatch):
    monkeypatch.setattr(client_module, "_client", CaptureClient(socket_path=sock_path, port=free_port()))

    @capture_handler
    def handler(event, context):
        raise ValueError("model failed")

    with pytest.raises(ValueError, match="model failed"):
        handler({}, SimpleNamespace(aws_request_id="r"))


def test_importing_the_client_and_package_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, capture_ext, capture_ext.client;"
        "heavy=[m for m in ('aiohttp','boto3','botocore','aioboto3','pyarrow','pluggy','h11') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e400", "99999", "0", "9009.5", "port"])
def test_a_bad_capture_port_never_raises_into_the_handler(value, monkeypatch, tmp_path):
    """Regression: CAPTURE_PORT=inf raised OverflowError (nan: ValueError) out of capture()."""
    monkeypatch.setenv("CAPTURE_PORT", value)
    monkeypatch.setenv("CAPTURE_SOCKET", str(tmp_path / "absent.sock"))
    monkeypatch.setattr(client_module, "_client", None)
    try:
        assert client_module.capture(input="q", inference_id="abc") == "abc"
        assert client_module.get_client().port == client_module.DEFAULT_PORT
    finally:
        if client_module._client is not None:
            client_module._client.close()
        monkeypatch.setattr(client_module, "_client", None)


def test_integers_beyond_64_bits_are_sent_as_their_exact_digits(sock_path, monkeypatch):
    """Regression: orjson cannot write them, and the record was silently dropped (a TypeError)."""
    server = LineServer(sock_path)
    client = CaptureClient(socket_path=sock_path, port=free_port())
    try:
        client.capture(input={"big": 10**22 + 1, "small": -(2**63), "nested": [2**64, {"x": -(2**70)}]})
        (line,) = server.wait_for(1)
        assert line["input"] == {
            "big": "10000000000000000000001",
            "small": -(2**63),
            "nested": ["18446744073709551616", {"x": str(-(2**70))}],
        }
        assert client.stats["errors"] == 0
    finally:
        client.close()
        server.stop()
