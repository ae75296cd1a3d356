"""The Telemetry API destination: a minimal HTTP/1.1 server for the platform's deliveries.

Lambda POSTs telemetry after every invoke (``platform.runtimeDone``, ``platform.report``) and,
with a handler longer than the 25 ms buffering window, during it too (``platform.start``). The
general server in :mod:`capture_ext.core.http11` (a task, a stream reader, an h11 state machine
and a timeout scope per request) cost more CPU per delivery than the whole rest of an idle
invoke. This one is a plain protocol: the head is read with a few ``bytes`` operations, the body
by its ``Content-Length`` (or chunked), the answer is one ``write``. Limits still hold: head and
body sizes, an idle timeout, a connection cap; anything malformed gets a clear 4xx and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 64
#: Called with (method, body); returns (status, body) of the answer.
Deliver = Callable[[str, bytes], tuple[int, bytes]]

_REASONS = {200: b"OK", 400: b"Bad Request", 405: b"Method Not Allowed", 408: b"Request Timeout"}
_REASONS |= {413: b"Content Too Large", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def _answer(status: int, body: bytes, close: bool) -> bytes:
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        _REASONS.get(status, b"Error"),
        len(body),
    )
    return head + (b"connection: close\r\n\r\n" if close else b"\r\n") + body


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection(asyncio.Protocol):
    def __init__(self, server: TelemetryListener) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.last_seen = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.connections) >= self.server.max_connections:
            logger.warning("telemetry: refusing a connection, %d are open already", len(self.server.connections))
            transport.write(_answer(503, b"", close=True))  # type: ignore[attr-defined]
            transport.close()
            return
        self.server.connections.add(self)
        loop = asyncio.get_running_loop()
        self.last_seen = loop.time()
        self.timer = loop.call_later(self.server.idle_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        left = self.last_seen + self.server.idle_timeout_s - loop.time()
        if left > 0:
            self.timer = loop.call_later(left, self._check_idle)
        elif self.transport is not None:
            if self.buf:
                self.transport.write(_answer(408, b'{"error":"request not received in time"}', close=True))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_seen = asyncio.get_running_loop().time()
        self.buf += data
        transport = self.transport
        assert transport is not None
        while self.buf and not transport.is_closing():
            try:
                request = self._parse()
            except _BadRequest as exc:
                message = str(exc).replace('"', "'")
                transport.write(_answer(exc.status, b'{"error":"%s"}' % message.encode(), close=True))
                transport.close()
                return
            if request is None:
                return
            method, body, keep_alive = request
            try:
                status, answer = self.server.deliver(method, body)
            except Exception:
                logger.exception("telemetry: a delivery could not be handled")
                status, answer = 500, b'{"error":"internal error"}'
            transport.write(_answer(status, answer, close=not keep_alive))
            if not keep_alive:
                transport.close()

    def _parse(self) -> tuple[str, bytes, bool] | None:
        buf = self.buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise _BadRequest(431, f"request head over {MAX_HEAD_BYTES} bytes")
            return None
        if head_end > MAX_HEAD_BYTES:
            raise _BadRequest(431, f"request head over {MAX_HEAD_BYTES} bytes")
        lines = bytes(buf[:head_end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _BadRequest(400, "malformed HTTP request line")
        keep_alive = parts[2] == b"HTTP/1.1"
        length = 0
        chunked = False
        seen_length = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (seen_length and int(value) != length):
                    raise _BadRequest(400, "invalid Content-Length")
                length, seen_length = int(value), True
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise _BadRequest(400, "unsupported Transfer-Encoding")
                chunked = True
            elif name == b"connection":
                token = value.lower()
                keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
        if chunked and seen_length:
            raise _BadRequest(400, "both Content-Length and Transfer-Encoding: send one")
        limit = self.server.max_body_bytes
        start = head_end + 4
        if chunked:
            parsed = _chunked(buf, start, limit)
            if parsed is None:
                return None
            body, end = parsed
        else:
            if length > limit:
                raise _BadRequest(413, f"body of {length} bytes is over the {limit}-byte limit")
            end = start + length
            if len(buf) < end:
                return None
            body = bytes(buf[start:end])
        del buf[:end]
        return parts[0].decode("ascii", "replace"), body, keep_alive


def _chunked(buf: bytearray, pos: int, limit: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buf[pos:line_end]).split(b";")[0].strip(), 16)
        except ValueError:
            raise _BadRequest(400, "malformed chunk size") from None
        if size == 0:
            if buf[line_end : line_end + 4] == b"\r\n\r\n":
                return bytes(body), line_end + 4
            trailer_end = buf.find(b"\r\n\r\n", line_end)
            return None if trailer_end < 0 else (bytes(body), trailer_end + 4)
        if len(body) + size > limit:
            raise _BadRequest(413, f"body is over the {limit}-byte limit")
        chunk_end = line_end + 2 + size
        if len(buf) < chunk_end + 2:
            return None
        body += buf[line_end + 2 : chunk_end]
        pos = chunk_end + 2


class TelemetryListener:
    """Listens where the Telemetry API delivers, and hands each delivery to ``deliver``."""

    def __init__(
        self,
        deliver: Deliver,
        max_body_bytes: int,
        idle_timeout_s: float = 30.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.deliver = deliver
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0 picks a free one) and return the port."""
        from capture_ext.core.http11 import is_wildcard

        if is_wildcard(host):
            raise ValueError(f"refusing to listen on {host!r}: the telemetry listener binds one address only")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
