"""The Telemetry API destination at its edges, over real sockets (issue 21's branch gaps).

Deliveries that arrive in pieces at every point of their framing, chunk extensions and trailers,
chunked bodies over the limit, a deliver function that raises, an idle connection cut with a 408
when a request was half sent, and closing with connections still open.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from capture_ext.core.telemetry import RuntimeDoneTracker
from capture_ext.core.telemetry_listener import MAX_HEAD_BYTES, TelemetryListener


def _delivery(request_id: str) -> bytes:
    return json.dumps([{"time": "t", "type": "platform.runtimeDone", "record": {"requestId": request_id}}]).encode()


def _chunked(body: bytes, sizes: list[int], last: bytes = b"0\r\n\r\n") -> bytes:
    out = b"POST /telemetry HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    pos = 0
    for size in sizes:
        out += b"%x;ext=1\r\n%s\r\n" % (size, body[pos : pos + size])
        pos += size
    return out + last


async def _by_platform(tracker: RuntimeDoneTracker, request_id: str) -> bool:
    return await tracker.wait_platform(request_id, 0.0)


@pytest.fixture
async def listener():
    tracker = RuntimeDoneTracker()
    server = TelemetryListener(tracker.deliver, 4096, idle_timeout_s=0.4, max_connections=4)
    port = await server.start("127.0.0.1", 0)
    yield tracker, server, port
    await server.close()


async def _dribble(port: int, raw: bytes, cuts: list[int]) -> bytes:
    """Send ``raw`` in pieces cut at ``cuts``, then read one answer head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        last = 0
        for cut in [*cuts, len(raw)]:
            writer.write(raw[last:cut])
            await writer.drain()
            await asyncio.sleep(0.02)  # a separate read on the listener's side
            last = cut
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_a_delivery_split_at_every_point_of_its_framing_is_reassembled(listener) -> None:
    tracker, _, port = listener
    body = _delivery("pieces")
    plain = b"POST /telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    answer = await _dribble(port, plain, [plain.index(b"\r\n\r\n") + 6])  # the body in two reads
    assert answer.startswith(b"HTTP/1.1 200 OK") and await _by_platform(tracker, "pieces")

    body = _delivery("chunks")
    raw = _chunked(body, [10, len(body) - 10])
    head_end = raw.index(b"\r\n\r\n") + 4
    # cut inside a chunk-size line, inside chunk data, and before the final CRLF after the 0 chunk
    cuts = [head_end + 2, head_end + 14, len(raw) - 2]
    answer = await _dribble(port, raw, cuts)
    assert answer.startswith(b"HTTP/1.1 200 OK") and await _by_platform(tracker, "chunks")


async def test_chunk_trailers_are_read_and_skipped(listener) -> None:
    tracker, _, port = listener
    body = _delivery("trailed")
    raw = _chunked(body, [len(body)], last=b"0\r\nX-Checksum: 1")
    answer = await _dribble(port, raw + b"\r\n\r\n", [len(raw)])  # the trailer's end comes later
    assert answer.startswith(b"HTTP/1.1 200 OK") and await _by_platform(tracker, "trailed")


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (_chunked(b"x" * 5000, [3000, 2000]), b"413", b"body is over the 4096-byte limit"),
        (b"POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", b"400", b"chunk size"),
        (b"POST /t HTTP/1.1\r\n X: folded\r\n\r\n", b"400", b"header line"),
        (
            b"POST /t HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            b"400",
            b"invalid Content-Length",
        ),
    ],
    ids=["chunked-over-limit", "bad-chunk-size", "folded-header", "two-lengths"],
)
async def test_bad_framings_get_a_clear_4xx_and_the_connection_closes(listener, raw, status, message) -> None:
    _, _, port = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()  # until the listener closes
    writer.close()
    assert answer.split(b" ", 2)[1] == status and message in answer
    assert b"connection: close" in answer


async def test_a_head_too_large_is_refused_even_before_its_end_arrives(listener) -> None:
    _, _, port = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /t HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10))  # no blank line yet
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431") and b"request head over" in answer


async def test_a_repeated_equal_content_length_is_accepted(listener) -> None:
    tracker, _, port = listener
    body = _delivery("twice")
    raw = b"POST /t HTTP/1.1\r\nContent-Length: %d\r\ncontent-length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(body),
        len(body),
        body,
    )
    answer = await _dribble(port, raw, [])
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in answer
    assert await _by_platform(tracker, "twice")


async def test_a_deliver_that_raises_gets_500_and_the_connection_serves_on(caplog) -> None:
    calls: list[bytes] = []

    def deliver(method: str, body: bytes) -> tuple[int, bytes]:
        calls.append(body)
        if len(calls) == 1:
            raise RuntimeError("deliver broke")
        return 200, b""

    server = TelemetryListener(deliver, 4096)
    port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        one = b"POST /t HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]"
        writer.write(one + one)  # both on one kept-alive connection, in one write
        await writer.drain()
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"}")
            second = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    finally:
        await server.close()
    assert first.startswith(b"HTTP/1.1 500 Error") and first.endswith(b'{"error":"internal error"}')
    assert b"connection: close" not in first
    assert second.startswith(b"HTTP/1.1 200 OK") and len(calls) == 2
    assert "telemetry: a delivery could not be handled" in caplog.text and "deliver broke" in caplog.text


async def test_an_idle_timeout_cuts_a_half_sent_request_with_408_and_spares_a_busy_one(listener) -> None:
    tracker, server, port = listener
    half_reader, half_writer = await asyncio.open_connection("127.0.0.1", port)
    half_writer.write(b"POST /t HTTP/1.1\r\nContent-Le")
    await half_writer.drain()
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = _delivery("busy")
    try:
        # The busy connection delivers every 0.15 s, past several idle timeouts (0.4 s): it stays open.
        for i in range(6):
            busy_writer.write(b"POST /t HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await busy_writer.drain()
            async with asyncio.timeout(5):
                assert (await busy_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK"), i
            await asyncio.sleep(0.15)
        async with asyncio.timeout(5):
            answer = await half_reader.read()
        assert answer.startswith(b"HTTP/1.1 408") and b"request not received in time" in answer
        assert loop.time() - started >= 0.4
        assert await _by_platform(tracker, "busy") and len(server.connections) == 1
    finally:
        half_writer.close()
        busy_writer.close()


async def test_closing_the_listener_closes_its_open_connections_and_refuses_wildcards() -> None:
    server = TelemetryListener(RuntimeDoneTracker().deliver, 4096)
    await server.close()  # never started: nothing to do
    with pytest.raises(ValueError, match="binds one address only"):
        await server.start("0.0.0.0", 0)
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(100):
        if server.connections:
            break
        await asyncio.sleep(0.01)
    assert len(server.connections) == 1
    await server.close()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the listener, with nothing sent
    writer.close()
    assert not server.connections
