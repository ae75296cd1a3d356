"""What the sandbox does for each Lambda API call; ``api.py`` renders it as HTTP.

Kept apart from the lifecycle in ``environment.py`` so that each file has one job: this one
holds the protocol rules per call (registration limits and naming, identifier checks, the
Runtime API's request-id and size checks, when ``platform.runtimeDone`` is generated).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from capture_ext.emulator.model import (
    MAX_EXTENSIONS,
    MAX_RESPONSE_BYTES,
    Agent,
    ApiError,
    EmulatorConfig,
    Invocation,
    Reply,
    SandboxFailure,
)
from capture_ext.emulator.processes import SandboxProcess
from capture_ext.emulator.telemetry import TelemetryHub

EVENTS = frozenset({"INVOKE", "SHUTDOWN"})


class ApiCalls:
    """Mixed into ``Sandbox``: the attributes below are the sandbox's state."""

    cfg: EmulatorConfig
    state: str
    telemetry: TelemetryHub
    agents: dict[str, Agent]
    launched: dict[str, SandboxProcess]
    runtime_ready: bool
    runtime_idle: bool
    runtime_queue: asyncio.Queue[Invocation | None]
    current: Invocation | None
    phase: str

    def _notify(self) -> None:
        raise NotImplementedError

    def _fail(self, failure: SandboxFailure) -> None:
        raise NotImplementedError

    def _maybe_kill(self, moment: str) -> None:
        raise NotImplementedError

    def _answer_error(self, inv: Invocation, status: Any, error_type: str, message: str) -> None:
        body = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        inv.answer(Reply(status, body, error_type), time.monotonic())

    # -- Extensions API -----------------------------------------------------------------------
    def register(self, name: str, raw: bytes, accept_features: str) -> tuple[Agent, dict[str, Any]]:
        if not name:
            raise ApiError(403, "Extension.InvalidExtensionName", "Lambda-Extension-Name header is missing or empty")
        try:
            body = json.loads(raw or b"{}")
            events = body.get("events", [])
            if not isinstance(events, list) or "configurationKeys" in body:
                raise ValueError("events must be a list")
            if not all(isinstance(e, str) for e in events):
                raise ValueError(f"events must be a list of strings, got {events!r:.200}")
        except (ValueError, AttributeError) as exc:
            raise ApiError(403, "InvalidRequestFormat", f"cannot parse the registration body: {exc}") from None
        bad = [e for e in events if e not in EVENTS]
        if bad:
            raise ApiError(403, "Extension.InvalidEventType", f"unknown event types {bad}; use INVOKE and SHUTDOWN")
        if self.state not in ("created", "init") or self.telemetry.closed_for_subscriptions:
            raise ApiError(403, "Extension.RegistrationClosed", "Extension registration closed already")
        if any(a.name == name for a in self.agents.values()):
            raise ApiError(403, "Extension.InvalidExtensionState", "Extension with this name already registered")
        if len(self.agents) >= MAX_EXTENSIONS:
            raise ApiError(403, "Extension.TooManyExtensions", f"at most {MAX_EXTENSIONS} extensions may register")
        external = name in self.launched
        if not external and "SHUTDOWN" in events:
            raise ApiError(403, "Extension.InvalidEventType", f"SHUTDOWN: internal extension {name!r} cannot take it")
        agent = Agent(name=name, events=frozenset(events), external=external)
        self.agents[agent.identifier] = agent
        self._notify()
        meta = {"functionName": self.cfg.function_name, "functionVersion": self.cfg.function_version,
                "handler": self.cfg.handler}  # fmt: skip
        if self.cfg.rie:  # RIE answers with an empty handler and ignores Accept-Feature
            meta["handler"] = ""
        elif "accountId" in [f.strip() for f in accept_features.split(",")]:
            meta["accountId"] = self.cfg.account_id
        return agent, meta

    def agent(self, identifier: str | None) -> Agent:
        if not identifier:
            raise ApiError(403, "Extension.MissingExtensionIdentifier", "Lambda-Extension-Identifier header is missing")
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ApiError(403, "Extension.InvalidExtensionIdentifier", f"not an identifier: {identifier!r}") from None
        agent = self.agents.get(identifier)
        if agent is None:
            raise ApiError(403, "Extension.UnknownExtensionIdentifier", f"unknown extension identifier {identifier}")
        if agent.errored:
            raise ApiError(403, "Extension.InvalidExtensionState", f"extension {agent.name} reported {agent.errored}")
        return agent

    async def next_event(self, agent: Agent) -> dict[str, Any]:
        if not agent.ready:
            agent.ready = True
            record = {"name": agent.name, "state": "Ready", "events": sorted(agent.events)}
            self.telemetry.emit("platform.extension", record)
        if agent.mailbox.empty():
            agent.idle = True
            self._notify()
        try:
            event = await agent.mailbox.get()
        except asyncio.CancelledError:
            agent.idle = False
            raise
        if not event:
            raise ApiError(500, "InternalServerError", "the execution environment is gone")
        return event

    def agent_error(self, agent: Agent, kind: str, error_type: str | None, raw: bytes) -> None:
        if not error_type:
            raise ApiError(403, "Extension.MissingHeader", "Lambda-Extension-Function-Error-Type header is required")
        agent.errored = error_type
        detail = raw.decode("utf-8", "replace")[:500]
        self._fail(SandboxFailure(error_type, f"extension {agent.name} reported {kind} error: {detail}"))

    # -- Runtime API --------------------------------------------------------------------------
    async def runtime_next(self) -> Invocation:
        inv = self.current
        if inv is not None and self.state == "invoking" and not self.runtime_idle:
            if not inv.reply.done():
                self._answer_error(inv, "error", "Runtime.NoResponse", "the runtime asked for the next event first")
            self._runtime_done(inv, inv.reply.result().status, inv.reply.result().error_type)
        if not self.runtime_ready:
            self.runtime_ready = True
            self.telemetry.emit("platform.initRuntimeDone", {"initializationType": "on-demand", "phase": self.phase,
                                                            "status": "success"})  # fmt: skip
        self.runtime_idle = True
        self._notify()
        nxt = await self.runtime_queue.get()
        if nxt is None:
            raise ApiError(500, "InternalServerError", "the execution environment is gone")
        return nxt

    def _invocation(self, request_id: str) -> Invocation:
        inv = self.current
        if inv is None or inv.request_id != request_id:
            raise ApiError(400, "InvalidRequestID", "Invalid request ID")
        if inv.reply.done():
            raise ApiError(403, "InvalidStateTransition", "a response or error was already posted for this invoke")
        return inv

    def runtime_response(self, request_id: str, body: bytes, content_type: str) -> None:
        inv = self._invocation(request_id)
        now = time.monotonic()
        if len(body) > MAX_RESPONSE_BYTES:
            message = (
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size"
                f" ({MAX_RESPONSE_BYTES} bytes)."
            )
            self._answer_error(inv, "error", "Function.ResponseSizeTooLarge", message)
            self._notify()
            raise ApiError(413, "RequestEntityTooLarge", message)
        inv.answer(Reply("success", body, None, content_type or "application/json"), now)
        self._notify()
        self._maybe_kill("response")

    def runtime_error(self, request_id: str, error_type: str | None, body: bytes) -> None:
        inv = self._invocation(request_id)
        with contextlib.suppress(ValueError, AttributeError):
            error_type = error_type or json.loads(body).get("errorType")
        inv.answer(Reply("error", body, error_type or "Unhandled"), time.monotonic())
        self._runtime_done(inv, "error", error_type or "Unhandled")  # generated at /error
        self._notify()

    def runtime_init_error(self, error_type: str | None, body: bytes) -> None:
        try:
            parsed = json.loads(body)
            error_type = error_type or parsed.get("errorType")
            message = str(parsed.get("errorMessage", ""))
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace")
        error_type = error_type or "Runtime.Unknown"
        self.telemetry.emit("platform.initRuntimeDone", {"initializationType": "on-demand", "phase": self.phase,
                                                        "status": "error", "errorType": error_type})  # fmt: skip
        self._fail(SandboxFailure(error_type, message))

    def _runtime_done(self, inv: Invocation, status: str, error_type: str | None) -> None:
        if inv.runtime_done_at is not None:
            return
        inv.runtime_done_at = time.monotonic()
        reply = inv.reply.result() if inv.reply.done() else None
        duration = ((inv.responded_at or inv.runtime_done_at) - inv.started_at) * 1000
        record: dict[str, Any] = {
            "requestId": inv.request_id,
            "status": status,
            "metrics": {"durationMs": round(duration, 3), "producedBytes": len(reply.body) if reply else 0},
        }
        if error_type:
            record["errorType"] = error_type
        self.telemetry.emit("platform.runtimeDone", record)
