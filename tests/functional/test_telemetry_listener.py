"""The Telemetry API destination over real sockets: keep-alive deliveries, framings and limits."""

import asyncio
import json

import pytest

from capture_ext.core.telemetry import RuntimeDoneTracker
from capture_ext.core.telemetry_listener import TelemetryListener


def _delivery(request_id: str) -> bytes:
    return json.dumps([{"time": "t", "type": "platform.runtimeDone", "record": {"requestId": request_id}}]).encode()


@pytest.fixture
async def listener():
    tracker = RuntimeDoneTracker()
    server = TelemetryListener(tracker.deliver, 4096, idle_timeout_s=0.3, max_connections=2)
    port = await server.start("127.0.0.1", 0)
    yield tracker, server, port
    await server.close()


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    async with asyncio.timeout(5):
        data = await reader.read()  # until the listener closes
    writer.close()
    return data


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_deliveries_on_one_kept_alive_connection_each_get_an_answer(listener):
    tracker, _, port = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = json.dumps([{"time": "t", "type": "platform.start", "record": {"requestId": "a"}}]).encode()
    writer.write(_post(start) + _post(_delivery("a"))[:30])  # one whole request, one in pieces
    await writer.drain()
    async with asyncio.timeout(5):
        first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 0" in first
        assert not tracker.is_done("a")
        writer.write(_post(_delivery("a"))[30:])
        await writer.drain()
        second = await reader.readuntil(b"\r\n\r\n")
    assert second.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" not in second
    assert await tracker.wait_platform("a", 0)  # the platform's runtimeDone, not the client's line
    writer.close()


async def test_a_chunked_delivery_is_reassembled(listener):
    tracker, _, port = listener
    body = _delivery("b")
    raw = b"POST /telemetry HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    raw += b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    answer = await _exchange(port, raw)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and tracker.is_done("b")


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (_post(b"x" * 5000), b"413", b"over the 4096-byte limit"),
        (b"POST /t HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431", b"request head"),
        (_post(b"[]", b"Transfer-Encoding: chunked\r\n"), b"400", b"send one"),
        (b"POST /t HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400", b"Content-Length"),
        (b"POST /t HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"400", b"Transfer-Encoding"),
        (b"GARBAGE\r\n\r\n", b"400", b"request line"),
        (b"POST /t HTTP/1.1\r\nno colon\r\n\r\n", b"400", b"header line"),
        (_post(b"{not json", b"Connection: close\r\n"), b"400", b"invalid JSON"),
        (b"GET /t HTTP/1.1\r\nConnection: close\r\n\r\n", b"405", b"POST only"),
    ],
)
async def test_malformed_or_oversized_requests_get_a_clear_4xx(listener, raw, status, message):
    _, _, port = listener
    answer = await _exchange(port, raw)
    assert answer.split(b" ", 2)[1] == status and message in answer


async def test_a_silent_connection_is_closed_after_the_idle_timeout_and_the_cap_holds(listener):
    _, server, port = listener
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    answer = await _exchange(port, _post(_delivery("c")))  # a third: over the cap of 2
    assert answer.startswith(b"HTTP/1.1 503")
    async with asyncio.timeout(5):
        for reader, _ in held:
            assert await reader.read() == b""  # closed by the listener after 0.3 s of silence
    assert not server.connections
    for _, writer in held:
        writer.close()
