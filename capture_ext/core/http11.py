"""A small HTTP/1.1 server and client on asyncio streams, with h11 doing the protocol work.

Why not aiohttp: it costs about 200 ms to import, and the extension's start-up is the function's
cold start. h11 is a pure-Python HTTP/1.1 state machine (a few ms to import) that handles the
parsing edge cases; this module only adds sockets, limits and timeouts around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
READ_CHUNK = 256 * 1024
#: Connections served at once; more are answered 503 and closed (a local flood cannot exhaust us).
MAX_CONNECTIONS = 64


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _Closed(Exception):
    """The peer went away or was too slow; the connection is finished."""


class _TooSlow(_Closed):
    """The peer sent nothing within the timeout."""


def is_wildcard(host: str) -> bool:
    """Whether listening on ``host`` would accept connections on every interface."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a name, such as sandbox.localdomain: resolved to one address
        return False


async def _next_event(
    conn: h11.Connection, reader: asyncio.StreamReader, timeout: float | None, deadline: float | None = None
) -> object:
    """The next h11 event; ``timeout`` bounds each read, ``deadline`` (loop time) all of them.

    A per-read timeout alone lets a peer that sends one byte every few seconds hold the
    connection for ever; the deadline bounds the whole head or body.
    """
    loop = asyncio.get_running_loop()
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        wait = timeout
        if deadline is not None:
            left = deadline - loop.time()
            wait = left if wait is None else min(wait, left)
            if wait <= 0:
                raise _TooSlow
        try:
            async with asyncio.timeout(wait):
                data = await reader.read(READ_CHUNK)
        except TimeoutError as exc:
            raise _TooSlow from exc
        except ConnectionError as exc:
            raise _Closed from exc
        conn.receive_data(data)


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, head_only: bool = False
) -> None:
    """Send ``response``; for a HEAD request the same headers, without the body."""
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *response.headers,
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    if not head_only:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    writer.write(data)
    await writer.drain()


_CLOSE_503 = [("connection", "close"), ("content-length", "0")]


def _error(status: int, message: str) -> Response:
    import json

    return Response(status, json.dumps({"error": message}).encode(), headers=[("connection", "close")])


class HTTPServer:
    """Serves one ``handler`` on a TCP socket with body and time limits."""

    def __init__(
        self,
        handler: Handler,
        max_body_bytes: int,
        idle_timeout_s: float = 30.0,
        body_timeout_s: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        #: Told the reason of every request the server itself refuses (counted by the caller).
        self.on_refused = on_refused
        #: Bodies being received, all connections together, are bounded by this many bytes.
        self.max_buffered_bytes = 2 * max_body_bytes
        self._buffered = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        #: Connections waiting for their next request (keep-alive), oldest first.
        self._idle: dict[asyncio.Task[None], None] = {}

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0 picks a free one) and return the port."""
        if is_wildcard(host):
            raise ValueError(
                f"refusing to listen on {host!r}: capture-ext binds loopback (or the sandbox address) only"
            )
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_CHUNK)
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio.start_server runs every connection's callback in a task
        if len(self._connections) >= self.max_connections and self._idle:
            # Make room by closing the connection idle the longest: a keep-alive pool (or a
            # client that sends one cheap request before every idle timeout) cannot hold every slot.
            oldest = next(iter(self._idle))
            self._idle.pop(oldest, None)
            self._connections.discard(oldest)  # gone as of now; its task ends at its next step
            oldest.cancel()
        if len(self._connections) >= self.max_connections:
            logger.warning("refusing a connection: %d are open already", len(self._connections))
            self._refused("too_many_connections")
            with contextlib.suppress(Exception):
                conn = h11.Connection(h11.SERVER)
                writer.write(conn.send(h11.Response(status_code=503, headers=_CLOSE_503)) or b"")
                await writer.drain()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            while await self._one_exchange(conn, reader, writer):
                conn.start_next_cycle()
        except _Closed:
            pass
        except h11.RemoteProtocolError as exc:
            self._refused("malformed")
            # Always true: h11 raises RemoteProtocolError only while reading a head (IDLE) or a body
            # (SEND_RESPONSE); kept so a future state cannot make us answer twice.
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # pragma: no branch
                with contextlib.suppress(Exception):
                    await _send(conn, writer, _error(exc.error_status_hint, f"malformed HTTP request: {exc}"))
        except (ConnectionError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            # close() cancels idle keep-alive connections; ending normally keeps asyncio's
            # stream callback from logging a traceback for every one of them at shutdown.
            pass
        finally:
            self._connections.discard(task)
            self._idle.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    async def _one_exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # called from _serve, which runs in a task
        self._idle[task] = None
        try:
            event = await _next_event(conn, reader, self.idle_timeout_s, loop.time() + self.idle_timeout_s)
        finally:
            self._idle.pop(task, None)
        if not isinstance(event, h11.Request):  # h11.ConnectionClosed: the only other event at IDLE
            return False
        head_size = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
        if head_size > MAX_HEAD_BYTES:  # h11 caps only heads that arrive in pieces
            self._refused("head_too_large")
            await _send(conn, writer, _error(431, f"request head over {MAX_HEAD_BYTES} bytes"))
            return False
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
        if "transfer-encoding" in headers and "content-length" in headers:
            # Two framings for one body is how requests are smuggled: refuse, and end the connection.
            self._refused("malformed")
            await _send(conn, writer, _error(400, "both Content-Length and Transfer-Encoding: send one"))
            return False
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            self._refused("too_large")
            await _send(
                conn, writer, _error(413, f"body of {declared} bytes is over the {self.max_body_bytes}-byte limit")
            )
            return False
        body = bytearray()
        body_deadline = loop.time() + self.body_timeout_s
        try:
            while True:
                try:
                    part = await _next_event(conn, reader, self.body_timeout_s, body_deadline)
                except _TooSlow:
                    self._refused("timeout")
                    await _send(
                        conn, writer, _error(408, f"request body not received within {self.body_timeout_s:g} s")
                    )
                    return False
                if isinstance(part, h11.Data):
                    body += part.data
                    self._buffered += len(part.data)
                    if len(body) > self.max_body_bytes:
                        self._refused("too_large")
                        await _send(conn, writer, _error(413, f"body is over the {self.max_body_bytes}-byte limit"))
                        return False
                    if self._buffered > self.max_buffered_bytes:
                        # Many slow bodies at once would hold the function's memory: refuse this one.
                        self._refused("busy")
                        await _send(conn, writer, _error(503, "too many request bodies in flight; try again"))
                        return False
                elif isinstance(part, h11.EndOfMessage):
                    break
                # h11 gives only Data or EndOfMessage in a body (a peer that closes early is a
                # RemoteProtocolError, handled in _serve); anything else must not loop for ever.
                else:  # pragma: no cover - unreachable with h11, see above
                    return False
        finally:
            self._buffered -= len(body)
        request = Request(event.method.decode("ascii"), event.target.decode("latin-1"), headers, bytes(body))
        try:
            response = await self.handler(request)
        except Exception:
            logger.exception("internal error while handling %s %s", request.method, request.path)
            response = _error(500, "internal error")
        await _send(conn, writer, response, head_only=request.method == "HEAD")
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection; ``timeout=None`` waits forever (long polls).

    Raises ``ConnectionError`` (an ``OSError``) when the answer is cut short or malformed.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=READ_CHUNK)
        try:
            conn = h11.Connection(h11.CLIENT)
            all_headers = [("host", f"{host}:{port}"), ("content-length", str(len(body))), ("connection", "close")]
            all_headers += list((headers or {}).items())
            data = conn.send(h11.Request(method=method, target=path, headers=all_headers)) or b""
            data += conn.send(h11.Data(data=body)) or b"" if body else b""
            data += conn.send(h11.EndOfMessage()) or b""
            writer.write(data)
            await writer.drain()
            response = await _next_event(conn, reader, None)
            if not isinstance(response, h11.Response):
                raise ConnectionError(f"unexpected HTTP event {response!r}")
            chunks = bytearray()
            while True:
                part = await _next_event(conn, reader, None)
                if isinstance(part, h11.Data):
                    chunks += part.data
                elif isinstance(part, h11.EndOfMessage | h11.ConnectionClosed):  # pragma: no branch
                    break  # (h11 gives nothing else in a response body)
            response_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
            return response.status_code, response_headers, bytes(chunks)
        except _Closed as exc:
            raise ConnectionError("connection closed before the response was complete") from exc
        except h11.RemoteProtocolError as exc:
            # A peer that hangs up mid-answer or answers garbage is a lost connection to the
            # callers (they handle OSError), never an h11 exception escaping the extension.
            raise ConnectionError(f"malformed HTTP response: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
