"""An HTTP proxy in front of moto that records every AWS call and injects faults.

moto accepts requests AWS would reject (it does not enforce the PutLogEvents or
PutRecordBatch size limits) and never throttles. The proxy lets tests check the requests a
sink actually sent against the documented limits, and answer some of them with the errors
AWS really returns (S3 XML errors, JSON ``__type`` errors) without patching any library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.faults.forwarding import ForwardingProxy


@dataclass(slots=True)
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def target(self) -> str:
        """``X-Amz-Target`` (``Logs_20140328.PutLogEvents``) or ``METHOD path`` for S3."""
        return self.headers.get("X-Amz-Target", f"{self.method} {self.path}")

    @property
    def operation(self) -> str:
        return self.target.rsplit(".", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.body)


Fault = Callable[[Call], web.Response | None]
Rewrite = Callable[[Call, int, bytes], bytes]


@dataclass
class AwsProxy(ForwardingProxy):
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)

    def of(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = Call(request.method, request.path, request.query_string, dict(request.headers), body)
        self.calls.append(call)
        for fault in self.faults:
            response = fault(call)
            if response is not None:
                return response
        return await self._forward(request, body, lambda status, payload: self._rewrite(call, status, payload))

    def _rewrite(self, call: Call, status: int, payload: bytes) -> bytes:
        for rewrite in self.rewrites:
            payload = rewrite(call, status, payload)
        return payload


def s3_error(code: str, status: int, message: str = "injected") -> web.Response:
    xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return web.Response(status=status, body=xml.encode(), content_type="application/xml")


def json_error(code: str, status: int = 400, message: str = "injected") -> web.Response:
    body = json.dumps({"__type": code, "message": message}).encode()
    return web.Response(status=status, body=body, content_type="application/x-amz-json-1.1")
