"""A small, protocol-faithful fake of the Lambda Extensions and Telemetry APIs, driven by tests.

It speaks the real wire protocol (paths, headers, status codes, error bodies of
docs/emulator.md, "Rules it enforces") for one extension, and lets a test play the
platform's part: send INVOKE, deliver ``platform.runtimeDone``, send SHUTDOWN, and see when the
extension is back in ``/next``. The full emulator (runtime, freeze, resets) lives in
``capture_ext.emulator``; this fake keeps functional tests in-process and fast.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession, web

EXT = "/2020-01-01/extension"


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"errorMessage": message, "errorType": error_type}, status=status)


class FakeLambdaAPI:
    def __init__(self, telemetry: bool = True, function_name: str = "test-function") -> None:
        self.telemetry = telemetry
        self.function_name = function_name
        self.extension_id = ""
        self.extension_name = ""
        self.registered = asyncio.Event()
        self.idle = asyncio.Event()
        self.telemetry_uri = ""
        self.init_errors: list[dict[str, Any]] = []
        self.exit_errors: list[dict[str, Any]] = []
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._event_sent_at = 0.0
        self._runner: web.AppRunner | None = None
        self.address = ""

    # -- server ---------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(f"{EXT}/register", self._register)
        app.router.add_get(f"{EXT}/event/next", self._next)
        app.router.add_post(f"{EXT}/init/error", self._init_error)
        app.router.add_post(f"{EXT}/exit/error", self._exit_error)
        app.router.add_put("/2022-07-01/telemetry", self._subscribe)
        # A pending /next long poll must not hold up teardown for aiohttp's default 60 s.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _check_id(self, request: web.Request) -> web.Response | None:
        ident = request.headers.get("Lambda-Extension-Identifier")
        if not ident:
            return _error(403, "Extension.MissingExtensionIdentifier", "missing Lambda-Extension-Identifier")
        if ident != self.extension_id:
            return _error(403, "Extension.UnknownExtensionIdentifier", f"unknown identifier {ident}")
        return None

    async def _register(self, request: web.Request) -> web.Response:
        name = request.headers.get("Lambda-Extension-Name", "")
        if not name:
            return _error(403, "Extension.InvalidExtensionName", "empty extension name")
        if self.extension_id:
            return _error(403, "Extension.InvalidExtensionState", "already registered")
        try:
            events = (await request.json())["events"]
        except (ValueError, KeyError, TypeError):
            return _error(403, "InvalidRequestFormat", 'body must be {"events": [...]}')
        if any(e not in ("INVOKE", "SHUTDOWN") for e in events):
            return _error(403, "Extension.InvalidEventType", f"bad events {events}")
        self.extension_id = str(uuid.uuid4())
        self.extension_name = name
        self.registered.set()
        return web.json_response(
            {"functionName": self.function_name, "functionVersion": "$LATEST", "handler": "app.handler"},
            headers={"Lambda-Extension-Identifier": self.extension_id},
        )

    async def _next(self, request: web.Request) -> web.Response:
        problem = self._check_id(request)
        if problem is not None:
            return problem
        self.post_event_ms = (time.monotonic() - self._event_sent_at) * 1000 if self._event_sent_at else 0.0
        self.idle.set()
        event = await self._events.get()
        self.idle.clear()
        self._event_sent_at = time.monotonic()
        return web.json_response(event, headers={"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    async def _error_call(self, request: web.Request, sink: list[dict[str, Any]]) -> web.Response:
        problem = self._check_id(request)
        if problem is not None:
            return problem
        error_type = request.headers.get("Lambda-Extension-Function-Error-Type")
        if not error_type:
            return _error(403, "Extension.MissingHeader", "missing Lambda-Extension-Function-Error-Type")
        body = await request.read()
        sink.append({"type": error_type, "body": json.loads(body) if body else None})
        return web.json_response({"status": "OK"}, status=202)

    async def _init_error(self, request: web.Request) -> web.Response:
        return await self._error_call(request, self.init_errors)

    async def _exit_error(self, request: web.Request) -> web.Response:
        return await self._error_call(request, self.exit_errors)

    async def _subscribe(self, request: web.Request) -> web.Response:
        problem = self._check_id(request)
        if problem is not None:
            return problem
        if not self.telemetry:
            return _error(202, "Telemetry.NotSupported", "Telemetry API is not supported")
        body = await request.json()
        uri = body.get("destination", {}).get("URI", "")
        if urlsplit(uri).hostname != "sandbox.localdomain" or body.get("types") != ["platform"]:
            return web.json_response({"errorType": "ValidationError", "errorMessage": f"bad body {body}"}, status=400)
        if body.get("buffering", {}).get("timeoutMs") != 25:
            return web.json_response({"errorType": "ValidationError", "errorMessage": "test expects 25 ms"}, status=400)
        self.telemetry_uri = uri
        return web.Response(text="OK")

    # -- the platform's side ------------------------------------------------------------------
    async def wait_idle(self, timeout: float = 10.0) -> float:
        """Wait until the extension is back in /next; returns ms since the last event was sent."""
        async with asyncio.timeout(timeout):
            await self.idle.wait()
        return self.post_event_ms

    async def invoke(self, request_id: str | None = None, timeout_s: float = 30.0) -> str:
        await self.wait_idle()
        request_id = request_id or str(uuid.uuid4())
        self.idle.clear()
        await self._events.put(
            {
                "eventType": "INVOKE",
                "deadlineMs": int((time.time() + timeout_s) * 1000),
                "requestId": request_id,
                "invokedFunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-0-0;Parent=0;Sampled=1"},
            }
        )
        return request_id

    async def runtime_done(self, request_id: str, status: str = "success") -> None:
        """POST ``platform.runtimeDone`` to the subscribed listener, as Lambda does."""
        if not self.telemetry_uri:
            return
        parts = urlsplit(self.telemetry_uri)
        url = f"http://127.0.0.1:{parts.port}{parts.path}"
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        batch = [{"time": now, "type": "platform.runtimeDone", "record": {"requestId": request_id, "status": status}}]
        async with ClientSession() as session, session.post(url, json=batch) as response:
            assert response.status == 200, await response.text()

    async def shutdown(self, budget_ms: float = 1700, reason: str = "spindown") -> None:
        await self.wait_idle()
        self.idle.clear()
        await self._events.put(
            {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": int(time.time() * 1000 + budget_ms)}
        )
