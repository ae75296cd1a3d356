"""The Telemetry API listener: learns when the handler of each request is done.

``platform.runtimeDone`` is Lambda's "the runtime finished this invoke" signal; the extension
waits for it before any sink I/O so capture never competes with the response. Where telemetry is
unavailable (AWS's RIE), :func:`capture_ext.client.capture_handler` sends a handler-done line over
the capture socket, and :meth:`RuntimeDoneTracker.mark_done` is fed from there instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from capture_ext.core.http11 import Request, Response

logger = logging.getLogger(__name__)

REMEMBERED = 256


def _remember(memory: OrderedDict[str, Any], key: str, value: Any = None) -> None:
    memory[key] = value
    while len(memory) > REMEMBERED:
        memory.popitem(last=False)


class RuntimeDoneTracker:
    """Remembers which requests are done (and which handlers started), and lets the lifecycle wait.

    Two sources: the platform's ``runtimeDone`` (authoritative) and the client's control lines
    (``@capture_handler`` sends one when the handler starts and one when it returns).
    """

    def __init__(self) -> None:
        self._done: OrderedDict[str, str] = OrderedDict()
        self._client_done: OrderedDict[str, None] = OrderedDict()
        self._started: OrderedDict[str, None] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        #: Whether any handler signal was ever seen from the client (the RIE fallback).
        self.client_signals = False
        #: Called with the request id of every ``platform.runtimeDone`` (the lifecycle reads the socket again).
        self.on_runtime_done: Callable[[str], None] | None = None

    def mark_done(self, request_id: str, status: str = "success", from_client: bool = False) -> None:
        if from_client:
            self.client_signals = True
            _remember(self._client_done, request_id)
        else:
            _remember(self._done, request_id, status)
        self._wake(request_id)

    def mark_started(self, request_id: str) -> None:
        self.client_signals = True
        _remember(self._started, request_id)
        self._wake(request_id)

    def is_done(self, request_id: str) -> bool:
        return request_id in self._done or request_id in self._client_done

    def _wake(self, request_id: str) -> None:
        waiter = self._waiters.get(request_id)
        if waiter is not None:
            waiter.set()

    async def _until(self, request_id: str, ready: Callable[[], bool], timeout: float) -> bool:
        if ready():
            return True
        deadline = asyncio.get_running_loop().time() + max(timeout, 0.0)
        waiter = self._waiters.setdefault(request_id, asyncio.Event())
        try:
            while not ready():
                waiter.clear()
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                try:
                    async with asyncio.timeout(remaining):
                        await waiter.wait()
                except TimeoutError:
                    return ready()
            return True
        finally:
            self._waiters.pop(request_id, None)

    async def wait(self, request_id: str, timeout: float, client_grace: float | None = None) -> bool:
        """Wait until ``request_id`` is done; False on timeout.

        ``client_grace`` (telemetry on): only ``runtimeDone`` counts, but once the client has said
        its handler returned, wait at most this much longer for it (the platform event may be lost).
        """
        if client_grace is None:
            return await self._until(request_id, lambda: self.is_done(request_id), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        platform_or_client = await self._until(request_id, lambda: self.is_done(request_id), timeout)
        if not platform_or_client or request_id in self._done:
            return platform_or_client
        remaining = min(client_grace, deadline - loop.time())
        if await self._until(request_id, lambda: request_id in self._done, remaining):
            return True
        logger.warning("telemetry: no runtimeDone for %s; going by the client's handler-done line", request_id)
        return True

    async def wait_platform(self, request_id: str, timeout: float) -> bool:
        """Wait for the platform's ``runtimeDone`` of ``request_id`` alone."""
        return await self._until(request_id, lambda: request_id in self._done, timeout)

    async def wait_started(self, request_id: str, timeout: float) -> bool:
        """Wait until the client said the handler of ``request_id`` started (or returned)."""
        return await self._until(
            request_id, lambda: request_id in self._started or request_id in self._client_done, timeout
        )

    async def handle_http(self, request: Request) -> Response:
        """The same as :meth:`deliver`, for the general HTTP server."""
        status, body = self.deliver(request.method, request.body)
        return Response(status, body)

    def deliver(self, method: str, body: bytes) -> tuple[int, bytes]:
        """Telemetry API delivery: a JSON array of ``{time, type, record}``; returns the answer."""
        if method != "POST":
            return 405, b'{"error":"POST only"}'
        if body[:1] == b"[" and b"platform.runtimeDone" not in body and b"platform.logsDropped" not in body:
            return 200, b""  # platform.start, platform.report...: nothing to act on, not parsed
        try:
            events = orjson.loads(body)
        except orjson.JSONDecodeError:
            logger.warning("telemetry: a delivery that is not JSON was ignored")
            return 400, b'{"error":"invalid JSON"}'
        if not isinstance(events, list):
            events = [events]
        for event in events:
            if not isinstance(event, dict):
                continue
            record = event.get("record")
            kind = event.get("type")
            if kind == "platform.runtimeDone" and isinstance(record, dict):
                request_id = record.get("requestId")
                if isinstance(request_id, str):
                    self.mark_done(request_id, str(record.get("status", "")))
                    if self.on_runtime_done is not None:
                        self.on_runtime_done(request_id)
            elif kind == "platform.logsDropped" and isinstance(record, dict):
                logger.warning("telemetry: Lambda dropped %s telemetry records", record.get("droppedRecords"))
        return 200, b""
