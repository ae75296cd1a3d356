"""NextPoller against a raw TCP server that answers ``/event/next`` in every shape it may take.

Over real sockets (issue 21's branch gaps): chunked answers in pieces, ``Connection: close``,
an answer cut in the middle of its chunks, a garbage Content-Length, and a server that drops a
kept-alive connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from capture_ext.core.next_poll import NextPoller, NextProtocolError

PATH = "/2020-01-01/extension/event/next"


class Script:
    """Serves a scripted list of answers, each a list of byte pieces (``None`` = hang up)."""

    def __init__(self, answers: list[list[bytes | None]]) -> None:
        self.answers: Iterator[list[bytes | None]] = iter(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                for piece in next(self.answers):
                    if piece is None:
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.02)  # a separate read on the poller's side
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            writer.close()

    async def __aenter__(self) -> NextPoller:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.poller = NextPoller("127.0.0.1", port, PATH, {"Lambda-Extension-Identifier": "ext-1"})
        return self.poller

    async def __aexit__(self, *exc: object) -> None:
        self.poller.close()
        assert self.server is not None
        self.server.close()


EVENT = b'{"eventType":"INVOKE","requestId":"r1"}'


async def test_a_chunked_answer_in_pieces_is_reassembled_and_the_connection_kept() -> None:
    first, second = EVENT[:16], EVENT[16:]
    pieces: list[bytes | None] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"%x\r\n%s" % (len(first), first[:10]),  # cut inside the first chunk's data
        first[10:] + b"\r\n%x" % len(second),  # cut inside the second chunk's size line
        b"\r\n%s\r\n0\r\n\r\n" % second,
    ]
    script = Script([pieces, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]])
    async with script as poller:
        assert await poller.next() == (200, EVENT)
        assert await poller.next() == (200, b"{}")
    assert script.connections == 1 and len(script.requests) == 2
    assert script.requests[0].startswith(b"GET " + PATH.encode() + b" HTTP/1.1\r\n")
    assert b"Lambda-Extension-Identifier: ext-1" in script.requests[0]


async def test_connection_close_makes_the_next_event_use_a_new_connection() -> None:
    close = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(EVENT), EVENT)
    script = Script([[close, None], [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]])
    async with script as poller:
        assert await poller.next() == (200, EVENT)
        assert await poller.next() == (200, b"{}")
    assert script.connections == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", None],
            "in the middle of a chunked /event/next response",
        ),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}"], "invalid literal"),
        ([None], "the Extensions API closed the connection|incomplete"),
    ],
    ids=["cut-in-chunks", "garbage-length", "hang-up"],
)
async def test_an_answer_that_cannot_be_read_is_a_named_protocol_error(answer, message) -> None:
    script = Script([answer])
    async with script as poller:
        with pytest.raises(NextProtocolError, match=message):
            await poller.next()
        assert poller._conn is None  # dropped, never reused half read


async def test_a_dropped_kept_alive_connection_is_retried_once_then_the_error_stands() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    # First connection: one answer, then hang up on the next request (an idle keep-alive dropped).
    # Second connection (the retry): hang up again before answering: this time the error stands.
    script = Script([[ok], [None], [None]])
    async with script as poller:
        assert await poller.next() == (200, b"{}")
        with pytest.raises(NextProtocolError):
            await poller.next()
    assert script.connections == 2


async def test_closing_a_poller_that_never_connected_does_nothing() -> None:
    poller = NextPoller("127.0.0.1", 9, PATH, {})
    poller.close()
    poller.close()
    assert poller._conn is None
