"""The ingest HTTP server's limits against clients that bend the protocol, over real sockets.

Request smuggling (two framings), heads too large even when they arrive whole, HEAD requests,
bodies dribbled a byte at a time, and more connections than the server will hold.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from capture_ext.core.http11 import MAX_HEAD_BYTES, HTTPServer, Request, Response
from tests.helpers import exchange


async def echo(request: Request) -> Response:
    return Response(200, b'{"ok":true,"bytes":%d}' % len(request.body))


@pytest.fixture
async def server():
    instance = HTTPServer(echo, 1024 * 1024, idle_timeout_s=2.0, body_timeout_s=0.5, max_connections=4)
    port = await instance.start("127.0.0.1", 0)
    yield instance, port
    await instance.close()


async def test_content_length_and_transfer_encoding_together_is_refused_and_closed(server) -> None:
    _, port = server
    answer = await exchange(
        port,
        b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert b"Content-Length and Transfer-Encoding" in answer
    assert answer.count(b"HTTP/1.1") == 1  # the smuggled request was never served


async def test_a_head_over_the_cap_is_refused_even_when_it_arrives_in_one_piece(server) -> None:
    _, port = server
    big = b"x" * (MAX_HEAD_BYTES // 2)
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nA: " + big + b"\r\nB: " + big + b"\r\n\r\n"
    answer = await exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 431") or answer.startswith(b"HTTP/1.1 400"), answer[:80]


async def test_head_requests_get_headers_and_no_body(server) -> None:
    _, port = server
    answer = await exchange(port, b"HEAD /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length:" in head.lower()
    assert body == b""


async def test_a_body_dribbled_a_byte_at_a_time_is_cut_at_the_body_deadline(server) -> None:
    """Each byte arrives within the per-read timeout; the whole body must still arrive in time."""
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        await writer.drain()
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = b""
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):  # under the 0.5 s per-read timeout
                    answer += await reader.read(4096)
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert loop.time() - started < 10  # bounded by the body deadline, not by the sender
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_connections_beyond_the_bound_are_refused_and_the_server_keeps_serving(server) -> None:
    """Busy connections (a body on its way) hold their slots; one more connection gets a 503."""
    _, port = server
    held = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        held.append((reader, writer))
    try:
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            answer = await reader.read()  # answered and closed at once, before any request
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.1)  # the held connections end; the server serves again
    answer = await exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


async def test_idle_keep_alive_connections_make_room_for_a_new_one(server) -> None:
    """Regression (hostile review): connections that each sent one request and then idled held
    every slot, so the client's own fallback got 503s. The oldest idle one is closed instead."""
    _, port = server
    idle = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive, then silence
        await writer.drain()
        await reader.readuntil(b"}")
        idle.append((reader, writer))
    try:
        answer = await exchange(port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        async with asyncio.timeout(5):
            assert await idle[0][0].read() == b""  # the oldest idle connection was closed
    finally:
        for _, writer in idle:
            writer.close()


async def test_the_servers_own_refusals_are_counted() -> None:
    refused: list[str] = []
    instance = HTTPServer(echo, 1024, body_timeout_s=0.3, on_refused=refused.append)
    port = await instance.start("127.0.0.1", 0)
    try:
        await exchange(port, b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        await exchange(port, b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        await exchange(port, b"\x00\xff garbage\r\n\r\n")
    finally:
        await instance.close()
    assert refused == ["too_large", "timeout", "malformed"]
