"""The small HTTP/1.1 server and client at their edges, over real sockets (issue 21's branch gaps).

A chunked body that grows past the limit after its head was accepted, many bodies in flight at
once, a handler that raises, a peer that resets mid-request, and the one-shot client against a
server that hangs up early.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from capture_ext.core import http11
from capture_ext.core.http11 import HTTPServer, Request, Response
from tests.helpers import exchange


async def echo(request: Request) -> Response:
    return Response(200, b'{"bytes":%d}' % len(request.body), headers=[("x-path", request.path)])


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_a_chunked_body_growing_past_the_limit_is_refused_once_it_does() -> None:
    """No Content-Length to refuse up front: the limit is enforced as the chunks arrive."""
    refused: list[str] = []
    server = HTTPServer(echo, 100, on_refused=refused.append)
    port = await server.start("127.0.0.1", 0)
    try:
        head = b"POST /v1/records HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = await exchange(port, head + chunk(b"a" * 60) + chunk(b"b" * 60) + b"0\r\n\r\n")
        closing = head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        within = await exchange(port, closing + chunk(b"c" * 90) + b"0\r\n\r\n")
    finally:
        await server.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert b"body is over the 100-byte limit" in answer and b"connection: close" in answer
    assert within.startswith(b"HTTP/1.1 200") and within.endswith(b'{"bytes":90}')
    assert refused == ["too_large"]


async def test_bodies_in_flight_together_are_bounded_and_the_one_over_gets_503() -> None:
    """Each body is under the limit; together they may hold at most twice the limit in memory."""
    refused: list[str] = []
    server = HTTPServer(echo, 100, body_timeout_s=5.0, on_refused=refused.append)
    port = await server.start("127.0.0.1", 0)
    held = []
    try:
        for _ in range(2):  # two bodies of 90 declared, 80 sent: 160 bytes held of the 200 allowed
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 90\r\n\r\n" + b"x" * 80)
            await writer.drain()
            held.append((reader, writer))
        await asyncio.sleep(0.1)
        answer = await exchange(port, b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n" + b"y" * 60)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"too many request bodies in flight" in answer
        # The held bodies complete normally: the refusal cost them nothing.
        for reader, writer in held:
            writer.write(b"z" * 10)
            await writer.drain()
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"}")
            assert head.startswith(b"HTTP/1.1 200") and head.endswith(b'{"bytes":90}')
    finally:
        for _, writer in held:
            writer.close()
        await server.close()
    assert refused == ["busy"]
    assert server._buffered == 0  # every body's bytes were released, refused or not


async def test_a_handler_that_raises_gets_500_and_the_server_keeps_serving(caplog) -> None:
    calls = 0

    async def flaky(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("boom")
        return Response(200, b"{}")

    server = HTTPServer(flaky, 1024)
    port = await server.start("127.0.0.1", 0)
    try:
        first = await exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        second = await exchange(port, b"GET /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await server.close()
    assert first.startswith(b"HTTP/1.1 500") and first.endswith(b'{"error": "internal error"}')
    assert second.startswith(b"HTTP/1.1 200")
    assert "internal error while handling GET /x" in caplog.text and "KeyError" in caplog.text


async def test_a_zero_body_deadline_refuses_a_body_that_is_not_already_there() -> None:
    """The whole-body deadline is checked before each read, not only by the read's own timeout."""
    refused: list[str] = []
    server = HTTPServer(echo, 1024, body_timeout_s=0.0, on_refused=refused.append)
    port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        whole = await exchange(
            port, b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
    finally:
        await server.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"within 0 s" in answer
    assert whole.startswith(b"HTTP/1.1 200")  # a body that came with its head needs no read
    assert refused == ["timeout"]


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0): the server's next read fails."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_peers_that_vanish_mid_request_or_without_one_are_not_counted_as_refusals() -> None:
    refused: list[str] = []
    server = HTTPServer(echo, 1024, on_refused=refused.append)
    port = await server.start("127.0.0.1", 0)
    try:
        loop = asyncio.get_running_loop()
        for data in (b"", b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Le"):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            if data:
                await loop.sock_sendall(sock, data)
                await asyncio.sleep(0.05)
            _reset(sock)
        quiet = socket.create_connection(("127.0.0.1", port))
        quiet.close()  # connects and leaves politely, having asked nothing
        for _ in range(100):
            if not server._connections:
                break
            await asyncio.sleep(0.02)
        assert not server._connections
        answer = await exchange(port, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await server.close()
    assert answer.startswith(b"HTTP/1.1 200") and b"x-path: /after" in answer
    assert refused == []


async def test_closing_a_server_that_never_started_is_harmless() -> None:
    server = HTTPServer(echo, 1024)
    await server.close()
    assert server._connections == set()


# -- the one-shot client (the Extensions and Telemetry API calls) -------------------------------


async def _one_answer_server(answer: bytes) -> tuple[asyncio.Server, int, list[bytes]]:
    """A raw TCP server that reads one request head, writes ``answer`` verbatim and hangs up."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_the_client_reads_a_body_framed_by_the_connection_closing() -> None:
    """HTTP/1.0-style answers (no Content-Length) end where the connection ends."""
    server, port, seen = await _one_answer_server(b"HTTP/1.0 200 OK\r\nX-A: b\r\n\r\nhello world")
    try:
        status, headers, body = await http11.request("127.0.0.1", port, "GET", "/p", {"X-Q": "1"}, timeout=5)
    finally:
        server.close()
    assert (status, headers["x-a"], body) == (200, "b", b"hello world")
    assert seen[0].startswith(b"GET /p HTTP/1.1\r\n") and b"x-q: 1" in seen[0].lower()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "without sending complete message body"),
        (b"HTTP/1.1 two hundred\r\n\r\n", "malformed HTTP response"),
    ],
    ids=["nothing", "body-cut-short", "garbage-status"],
)
async def test_the_client_raises_connection_error_when_the_answer_is_cut(answer: bytes, message: str) -> None:
    """Regression (found by the coverage work): these escaped as h11.RemoteProtocolError, which
    the lifecycle's ``except OSError`` around register and /next does not catch."""
    server, port, _ = await _one_answer_server(answer)
    try:
        with pytest.raises(ConnectionError, match=message):
            await http11.request("127.0.0.1", port, "POST", "/p", body=b"{}", timeout=5)
    finally:
        server.close()


async def test_a_peer_gone_before_its_answer_is_written_ends_only_its_connection() -> None:
    """The answer's write fails (connection reset): the server drops that connection quietly."""
    answered = asyncio.Event()
    release = asyncio.Event()
    refused: list[str] = []

    async def slow(request: Request) -> Response:
        if request.path == "/slow":
            await release.wait()
            answered.set()
        return Response(200, b"{}")

    server = HTTPServer(slow, 1024, on_refused=refused.append)
    port = await server.start("127.0.0.1", 0)
    try:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        _reset(sock)  # gone while the handler still works
        await asyncio.sleep(0.05)
        release.set()
        async with asyncio.timeout(5):
            await answered.wait()
        for _ in range(200):
            if not server._connections:
                break
            await asyncio.sleep(0.01)
        assert not server._connections
        answer = await exchange(port, b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await server.close()
    assert answer.startswith(b"HTTP/1.1 200") and refused == []
