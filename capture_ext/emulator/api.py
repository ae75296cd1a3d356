"""The HTTP face of the sandbox: Runtime API 2018-06-01, Extensions API 2020-01-01,
Telemetry API 2022-07-01 and Logs API 2020-08-15, on one loopback server as on Lambda.

Handlers only translate HTTP to calls on the current ``Sandbox`` and render Lambda's answers
(status codes, headers, ``{errorMessage, errorType}`` bodies); the rules live in
``environment.py``. The server outlives sandboxes, so ``AWS_LAMBDA_RUNTIME_API`` stays the same
across resets, as it does on Lambda.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from capture_ext.emulator.environment import Sandbox
from capture_ext.emulator.model import MAX_RESPONSE_BYTES, ApiError
from capture_ext.emulator.telemetry import SubscriptionError

log = logging.getLogger(__name__)

SandboxGetter = Callable[[], Sandbox | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RT = "/2018-06-01/runtime"
EXT = "/2020-01-01/extension"


def _error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body, status=exc.status)


@web.middleware
async def _render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc)
    except SubscriptionError as exc:
        return web.json_response(exc.body, status=exc.status)


class LambdaApi:
    """Routes bound to whatever sandbox is current."""

    def __init__(self, sandbox: SandboxGetter) -> None:
        self._sandbox = sandbox

    def sandbox(self) -> Sandbox:
        box = self._sandbox()
        if box is None or box.state == "dead":
            raise ApiError(403, "Extension.UnknownExtensionIdentifier", "no execution environment is running")
        return box

    def app(self) -> web.Application:
        # Bodies above the response limit must reach the handler so it can answer 413 the Lambda way.
        app = web.Application(middlewares=[_render_errors], client_max_size=MAX_RESPONSE_BYTES * 2)
        app.add_routes(
            [
                web.get(f"{RT}/invocation/next", self.runtime_next),
                web.post(f"{RT}/invocation/{{request_id}}/response", self.runtime_response),
                web.post(f"{RT}/invocation/{{request_id}}/error", self.runtime_error),
                web.post(f"{RT}/init/error", self.runtime_init_error),
                web.post(f"{EXT}/register", self.register),
                web.get(f"{EXT}/event/next", self.next_event),
                web.post(f"{EXT}/init/error", self.init_error),
                web.post(f"{EXT}/exit/error", self.exit_error),
                web.put("/2022-07-01/telemetry", self.subscribe_telemetry),
                web.put("/2020-08-15/logs", self.subscribe_logs),
            ]
        )
        return app

    # -- Runtime API --------------------------------------------------------------------------
    async def runtime_next(self, request: web.Request) -> web.Response:
        inv = await self.sandbox().runtime_next()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.sandbox().cfg.function_arn,
            "Lambda-Runtime-Trace-Id": inv.trace_id,
            "Lambda-Runtime-Client-Context": inv.client_context,
            "Lambda-Runtime-Cognito-Identity": inv.cognito_identity,
        }
        headers = {k: v for k, v in headers.items() if v}  # empty headers are omitted, as in RIE
        return web.Response(body=inv.payload, headers=headers, content_type="application/json")

    async def runtime_response(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.sandbox().runtime_response(request.match_info["request_id"], body, request.content_type)
        return web.json_response({"status": "OK"}, status=202)

    async def runtime_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        error_type = request.headers.get("Lambda-Runtime-Function-Error-Type")
        self.sandbox().runtime_error(request.match_info["request_id"], error_type, body)
        return web.json_response({"status": "OK"}, status=202)

    async def runtime_init_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.sandbox().runtime_init_error(request.headers.get("Lambda-Runtime-Function-Error-Type"), body)
        return web.json_response({"status": "OK"}, status=202)

    # -- Extensions API -----------------------------------------------------------------------
    async def register(self, request: web.Request) -> web.Response:
        body = await request.read()
        agent, meta = self.sandbox().register(
            request.headers.get("Lambda-Extension-Name", "").strip(),
            body,
            request.headers.get("Lambda-Extension-Accept-Feature", ""),
        )
        kind = "external" if agent.external else "internal"
        log.debug("registered %s extension %s for %s", kind, agent.name, sorted(agent.events))
        return web.json_response(meta, headers={"Lambda-Extension-Identifier": agent.identifier})

    async def next_event(self, request: web.Request) -> web.Response:
        box = self.sandbox()
        agent = box.agent(request.headers.get("Lambda-Extension-Identifier"))
        event = await box.next_event(agent)
        if box.cfg.rie and event.get("eventType") == "SHUTDOWN":  # RIE sends SHUTDOWN without an event id
            return web.json_response(event)
        return web.json_response(event, headers={"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    async def _agent_error(self, request: web.Request, kind: str) -> web.Response:
        box = self.sandbox()
        agent = box.agent(request.headers.get("Lambda-Extension-Identifier"))
        body = await request.read()
        box.agent_error(agent, kind, request.headers.get("Lambda-Extension-Function-Error-Type"), body)
        return web.json_response({"status": "OK"}, status=202)

    async def init_error(self, request: web.Request) -> web.Response:
        return await self._agent_error(request, "init")

    async def exit_error(self, request: web.Request) -> web.Response:
        return await self._agent_error(request, "exit")

    # -- Telemetry / Logs ---------------------------------------------------------------------
    async def _subscribe(self, request: web.Request, api: str) -> web.Response:
        box = self.sandbox()
        agent = box.agent(request.headers.get("Lambda-Extension-Identifier"))
        status, answer = box.telemetry.subscribe(agent.identifier, agent.name, api, await request.read())
        if isinstance(answer, str):
            return web.Response(text=answer, status=status)
        return web.json_response(answer, status=status)

    async def subscribe_telemetry(self, request: web.Request) -> web.Response:
        return await self._subscribe(request, "telemetry")

    async def subscribe_logs(self, request: web.Request) -> web.Response:
        return await self._subscribe(request, "logs")


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Start ``app`` on loopback (never 0.0.0.0); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound: int = runner.addresses[0][1]
    return runner, bound
