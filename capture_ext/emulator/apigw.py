"""A local API Gateway (REST API, Lambda proxy integration) in front of the emulator.

In front of a pool, requests go to a free environment (a new one when all are busy), as
Lambda's front end does, and ``GET /_emulator/health`` shows each idle environment's capture-ext
health, thawing it for the call.

It makes the README's ``curl -X POST .../nlp-qa`` work against localhost: each request becomes
an API Gateway proxy event (payload format 1.0), the function's ``{statusCode, headers, body}``
becomes the HTTP answer, and like API Gateway it answers as soon as the function responded,
while the extensions may still be flushing. ``POST /2015-03-31/functions/function/invocations``
is also served, with RIE's path, for direct invokes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from capture_ext.emulator.api import serve
from capture_ext.emulator.emulator import LambdaEmulator
from capture_ext.emulator.pool import EnvironmentPool

log = logging.getLogger(__name__)

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
HEALTH_PATH = "/_emulator/health"


def proxy_event(request: web.Request, body: bytes, resource: str, stage: str, account_id: str) -> dict[str, Any]:
    """The REST API (v1) Lambda proxy event for one request."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    multi_headers: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        multi_headers.setdefault(key, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for key, value in request.query.items():
        multi_query.setdefault(key, []).append(value)
    now = datetime.now(UTC)
    return {
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account_id,
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": request.method,
            "path": f"/{stage}{request.path}",
            "stage": stage,
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "requestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "identity": {"sourceIp": request.remote or "127.0.0.1", "userAgent": request.headers.get("User-Agent")},
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


def _gateway_error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": "InternalServerError"})


def proxy_response(payload: Any) -> web.Response:
    """Turn the function's proxy answer into HTTP; a malformed one is API Gateway's 502."""
    if not isinstance(payload, dict) or not isinstance(payload.get("statusCode"), int):
        log.warning("malformed Lambda proxy response: %.200r", payload)
        return _gateway_error(502, "Internal server error")
    headers: dict[str, str] = {str(k): str(v) for k, v in (payload.get("headers") or {}).items()}
    for key, values in (payload.get("multiValueHeaders") or {}).items():
        headers[str(key)] = ", ".join(str(v) for v in values)
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"  # API Gateway's default for proxy answers
    body = payload.get("body") or ""
    raw = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
    return web.Response(status=payload["statusCode"], body=raw, headers=headers)


class ApiGatewayFront:
    """``POST /nlp-qa`` (or any routes given) → one invoke of the emulated function."""

    def __init__(
        self,
        emulator: LambdaEmulator | EnvironmentPool,
        routes: Sequence[tuple[str, str]] = (("POST", "/nlp-qa"),),
        stage: str = "Prod",
    ) -> None:
        self.emulator, self.routes, self.stage = emulator, tuple(routes), stage
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.latencies_ms: list[float] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        for method, path in self.routes:
            app.router.add_route(method, path, self._proxy(path))
        app.router.add_post(INVOKE_PATH, self._direct)
        if isinstance(self.emulator, EnvironmentPool):
            app.router.add_get(HEALTH_PATH, self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        assert isinstance(self.emulator, EnvironmentPool)
        return web.json_response({"environments": await self.emulator.health()})

    async def start(self, port: int = 0) -> str:
        self._runner, bound = await serve(self.app(), port)
        self.url = f"http://127.0.0.1:{bound}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _proxy(self, resource: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            started = time.monotonic()
            event = proxy_event(request, await request.read(), resource, self.stage, self.emulator.config.account_id)
            pending = self.emulator.start_invoke(event)
            reply = await pending.response()
            self.latencies_ms.append((time.monotonic() - started) * 1000)
            if reply.status == "timeout":
                return _gateway_error(504, "Endpoint request timed out")
            if reply.status != "success":
                log.warning("function failed (%s): %.300s", reply.error_type, reply.body.decode("utf-8", "replace"))
                return _gateway_error(502, "Internal server error")
            try:
                payload = json.loads(reply.body)
            except ValueError:
                payload = None
            response = proxy_response(payload)
            response.headers["x-amzn-RequestId"] = pending.request_id
            return response

        return handle

    async def _direct(self, request: web.Request) -> web.Response:
        pending = self.emulator.start_invoke(await request.read())
        reply = await pending.response()
        headers = {"x-amzn-RequestId": pending.request_id}
        if self.emulator.config.rie:  # RIE answers as plain text, 502 for a crash, and flags no function error
            status = 502 if reply.status == "failure" else 200
            return web.Response(status=status, body=reply.body, headers=headers, content_type="text/plain",
                                charset="utf-8")  # fmt: skip
        if reply.status != "success":
            headers["X-Amz-Function-Error"] = "Unhandled"
        return web.Response(body=reply.body, headers=headers, content_type="application/json")
