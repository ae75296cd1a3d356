"""A fault proxy in front of the moto server, controlled by the test while sinks talk through it.

It forwards every request to moto unless a fault matches. Faults are the failures AWS really
produces: S3 ``503 SlowDown`` / ``500 InternalError`` (XML, with ``Retry-After`` when asked),
CloudWatch ``ThrottlingException`` / ``ServiceUnavailableException`` (JSON ``__type``), a reset
connection before the request reaches the service, a reset *after* it was applied (the sink sees a
failure for a write that happened: the source of legitimate duplicates), and added delay.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass, field

from aiohttp import web

from tests.faults.forwarding import ForwardingProxy


def service_of(request: web.Request) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if target.startswith("Logs_"):
        return "logs"
    if target.startswith("Firehose_"):
        return "firehose"
    return "s3"


@dataclass
class Fault:
    #: ``slowdown``, ``internal``, ``throttle``, ``unavailable``, ``reset``, ``reset_after``, ``delay``.
    kind: str
    service: str = "*"
    #: Only requests of this operation (``PutLogEvents``; ``PUT`` for S3); "" for all.
    operation: str = ""
    #: How many requests it hits (None: until cleared).
    times: int | None = None
    delay_s: float = 0.0
    retry_after_s: float | None = None


@dataclass
class FaultProxy(ForwardingProxy):
    faults: list[Fault] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)
    #: Bodies of requests applied upstream whose answer the sink never got (``reset_after``).
    applied_but_failed: list[bytes] = field(default_factory=list)

    # -- commands -------------------------------------------------------------------------------
    def inject(
        self, kind: str, service: str = "*", times: int | None = None, operation: str = "", **kwargs: float
    ) -> Fault:
        fault = Fault(kind, service, operation, times, **kwargs)
        self.faults.append(fault)
        return fault

    def heal(self, service: str = "*") -> None:
        self.faults = [f for f in self.faults if service != "*" and f.service not in (service, "*")]

    # -- serving --------------------------------------------------------------------------------
    def _match(self, service: str, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation and fault.operation != operation:
                continue
            if fault.service in ("*", service) and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service = service_of(request)
        operation = request.headers.get("X-Amz-Target", request.method).rsplit(".", 1)[-1]
        fault = self._match(service, operation)
        if fault is not None:
            self.hits[fault.kind] = self.hits.get(fault.kind, 0) + 1
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
            elif fault.kind == "reset":
                return self._reset(request)
            elif fault.kind != "reset_after":
                return self._error(fault)
        response = await self._forward(request, body)
        self.forwarded[service] = self.forwarded.get(service, 0) + 1
        if fault is not None and fault.kind == "reset_after":
            self.applied_but_failed.append(body)
            return self._reset(request)
        return response

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()  # RST: the client sees "connection reset by peer"
        return web.Response(status=500)

    @staticmethod
    def _error(fault: Fault) -> web.Response:
        headers = {}
        if fault.retry_after_s is not None:
            headers["Retry-After"] = f"{fault.retry_after_s:g}"
        if fault.kind in ("slowdown", "internal"):
            code, status = ("SlowDown", 503) if fault.kind == "slowdown" else ("InternalError", 500)
            xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
            return web.Response(status=status, body=xml.encode(), content_type="application/xml", headers=headers)
        code, status = (
            ("ThrottlingException", 400) if fault.kind == "throttle" else ("ServiceUnavailableException", 503)
        )
        body = json.dumps({"__type": code, "message": "injected"}).encode()
        return web.Response(status=status, body=body, content_type="application/x-amz-json-1.1", headers=headers)
