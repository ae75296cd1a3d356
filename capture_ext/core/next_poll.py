"""``GET /event/next`` on one kept-alive connection, with the least work per event.

Every INVOKE wakes the extension at the moment the handler starts, so the CPU of this one call
is taken from the model on every invoke. A fresh connection and an HTTP state machine per event
(what :func:`capture_ext.core.http11.request` does) cost more than the rest of an idle invoke; here
the request is built once, the connection is reused, and the response head is read with a few
``bytes`` operations. Anything unusual (a closed connection, ``Connection: close``, chunked or
close-delimited bodies) is still handled correctly, just not on the fast path.
"""

from __future__ import annotations

import asyncio

MAX_HEAD_BYTES = 64 * 1024


class NextProtocolError(ConnectionError):
    """The response to ``/next`` could not be read."""


def parse_response(buf: bytearray, eof: bool = False) -> tuple[int, bytes, bool, int] | None:
    """(status, body, keep-alive, bytes used) of the first complete response in ``buf``, or None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > MAX_HEAD_BYTES or (eof and buf):
            raise NextProtocolError("incomplete or oversized response head from /event/next")
        return None
    lines = bytes(buf[:head_end]).split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise NextProtocolError(f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    keep_alive = parts[0] == b"HTTP/1.1"
    length = -1
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    start = head_end + 4
    if chunked:
        return _chunked(buf, start, status, keep_alive, eof)
    if length < 0:  # delimited by the end of the connection
        return (status, bytes(buf[start:]), False, len(buf)) if eof else None
    end = start + length
    if len(buf) < end:
        if eof:
            raise NextProtocolError("connection closed in the middle of an /event/next response")
        return None
    return status, bytes(buf[start:end]), keep_alive, end


def _chunked(buf: bytearray, pos: int, status: int, keep_alive: bool, eof: bool) -> tuple[int, bytes, bool, int] | None:
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            break
        size = int(bytes(buf[pos:line_end]).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", line_end) if buf[line_end : line_end + 4] != b"\r\n\r\n" else line_end
            if trailer_end < 0:
                break
            return status, bytes(body), keep_alive, trailer_end + 4
        chunk_end = line_end + 2 + size
        if len(buf) < chunk_end + 2:
            break
        body += buf[line_end + 2 : chunk_end]
        pos = chunk_end + 2
    if eof:
        raise NextProtocolError("connection closed in the middle of a chunked /event/next response")
    return None


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._deliver(eof=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._deliver(eof=True)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(NextProtocolError("the Extensions API closed the connection"))

    def _deliver(self, eof: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = parse_response(self.buf, eof)
        except (NextProtocolError, ValueError) as exc:
            waiter.set_exception(exc if isinstance(exc, NextProtocolError) else NextProtocolError(str(exc)))
            return
        if parsed is not None:
            status, body, keep_alive, used = parsed
            del self.buf[:used]
            self.answered += 1
            waiter.set_result((status, body, keep_alive))


class NextPoller:
    """Long-polls ``/event/next`` over one connection kept alive across events."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._conn: _Connection | None = None

    async def next(self) -> tuple[int, bytes]:
        """One event's (status, body). Retries once when a reused connection was found closed."""
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn = self._conn
            if conn is None or conn.closed:
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
                self._conn = conn
            reused = conn.answered > 0
            waiter = conn.waiter = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(self._request)
            try:
                status, body, keep_alive = await waiter
            except NextProtocolError:
                self.close()
                if reused and attempt == 0 and not conn.buf:
                    continue  # the server dropped an idle kept-alive connection before reading the request
                raise
            except asyncio.CancelledError:
                self.close()  # a request is outstanding on it: the connection cannot be reused
                raise
            finally:
                conn.waiter = None
            if not keep_alive:
                self.close()
            return status, body
        raise NextProtocolError("unreachable")  # pragma: no cover

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
