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

import orjson

from capture_ext.core.http11 import Request, Response

logger = logging.getLogger(__name__)

REMEMBERED = 256


class RuntimeDoneTracker:
    """Remembers which requests are done, and lets the lifecycle wait for one."""

    def __init__(self) -> None:
        self._done: OrderedDict[str, str] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        #: Whether any handler-done signal was ever seen from the client (the RIE fallback).
        self.client_signals = False
        self.events_received = 0
        self.logs_dropped = 0

    def mark_done(self, request_id: str, status: str = "success", from_client: bool = False) -> None:
        if from_client:
            self.client_signals = True
        self._done[request_id] = status
        while len(self._done) > REMEMBERED:
            self._done.popitem(last=False)
        waiter = self._waiters.get(request_id)
        if waiter is not None:
            waiter.set()

    def is_done(self, request_id: str) -> bool:
        return request_id in self._done

    async def wait(self, request_id: str, timeout: float) -> bool:
        """Wait until ``request_id`` is done; False on timeout."""
        if request_id in self._done:
            return True
        waiter = self._waiters.setdefault(request_id, asyncio.Event())
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await waiter.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(request_id, None)

    async def handle_http(self, request: Request) -> Response:
        """Telemetry API delivery: a JSON array of ``{time, type, record}``."""
        if request.method != "POST":
            return Response(405, b'{"error":"POST only"}')
        try:
            events = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            logger.warning("telemetry: a delivery that is not JSON was ignored")
            return Response(400, b'{"error":"invalid JSON"}')
        if not isinstance(events, list):
            events = [events]
        for event in events:
            if not isinstance(event, dict):
                continue
            self.events_received += 1
            record = event.get("record")
            kind = event.get("type")
            if kind == "platform.runtimeDone" and isinstance(record, dict):
                request_id = record.get("requestId")
                if isinstance(request_id, str):
                    self.mark_done(request_id, str(record.get("status", "")))
            elif kind == "platform.logsDropped" and isinstance(record, dict):
                self.logs_dropped += int(record.get("droppedRecords", 0) or 0)
                logger.warning("telemetry: Lambda dropped %s telemetry records", record.get("droppedRecords"))
        return Response(200, b"")
