"""Clients for the Lambda Extensions API (2020-01-01) and Telemetry API (2022-07-01).

The rules it follows are listed in docs/emulator.md, "Rules it enforces". ``/next`` is a long
poll with no client timeout.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

import orjson

from capture_ext.core import http11
from capture_ext.core.next_poll import NextPoller
from capture_ext.core.registration import EXTENSION_API, LambdaAPIError, Registration, split_address

__all__ = ["Event", "ExtensionsAPI", "LambdaAPIError", "Registration", "telemetry_bind_address"]

logger = logging.getLogger(__name__)

TELEMETRY_API = "/2022-07-01/telemetry"
SANDBOX_HOST = "sandbox.localdomain"


@dataclass(frozen=True, slots=True)
class Event:
    """An INVOKE or SHUTDOWN event from ``/next``."""

    event_type: str
    deadline_ms: int
    request_id: str = ""
    shutdown_reason: str = ""
    #: The X-Ray trace header of the invoke (``tracing.value``), or "".
    trace_id: str = ""

    @classmethod
    def parse(cls, body: bytes) -> Event:
        data: dict[str, Any] = orjson.loads(body)
        return cls(
            event_type=str(data.get("eventType", "")),
            deadline_ms=int(data.get("deadlineMs") or 0),
            request_id=str(data.get("requestId", "")),
            shutdown_reason=str(data.get("shutdownReason", "")),
            trace_id=_trace_value(data.get("tracing")),
        )


def _trace_value(tracing: Any) -> str:
    if isinstance(tracing, dict) and isinstance(tracing.get("value"), str):
        return str(tracing["value"])
    return ""


class ExtensionsAPI:
    """The calls after registration (``core/registration.py`` registers, before asyncio is imported)."""

    def __init__(self, runtime_api: str, extension_id: str) -> None:
        self.host, self.port = split_address(runtime_api)
        self.extension_id = extension_id
        self._poller: NextPoller | None = None

    async def _call(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b"", timeout: float | None = 10.0
    ) -> tuple[int, dict[str, str], bytes]:
        return await http11.request(self.host, self.port, method, path, headers, body, timeout=timeout)

    async def next_event(self) -> Event:
        """The next event, over a kept-alive connection (the cheapest wake-up there is)."""
        if self._poller is None:
            headers = {"Lambda-Extension-Identifier": self.extension_id}
            self._poller = NextPoller(self.host, self.port, f"{EXTENSION_API}/event/next", headers)
        status, payload = await self._poller.next()
        if status != 200:
            raise LambdaAPIError("event/next", status, payload)
        return Event.parse(payload)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()

    async def report_error(self, phase: str, error_type: str, message: str) -> None:
        """``phase`` is ``init`` or ``exit``; Lambda then fails the environment."""
        body = json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": []}).encode()
        status, _, payload = await self._call(
            "POST",
            f"{EXTENSION_API}/{phase}/error",
            {
                "Lambda-Extension-Identifier": self.extension_id,
                "Lambda-Extension-Function-Error-Type": error_type,
                "Content-Type": "application/json",
            },
            body,
        )
        if status != 202:
            logger.error("%s/error answered HTTP %d: %s", phase, status, payload[:200])

    async def subscribe_telemetry(self, port: int, path: str = "/telemetry") -> bool:
        """Subscribe to ``platform`` events; False where telemetry is unavailable (RIE answers 202)."""
        body = json.dumps(
            {
                "schemaVersion": "2022-07-01",
                "types": ["platform"],
                "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
                "destination": {"protocol": "HTTP", "URI": f"http://{SANDBOX_HOST}:{port}{path}"},
            }
        ).encode()
        status, _, payload = await self._call(
            "PUT",
            TELEMETRY_API,
            {"Lambda-Extension-Identifier": self.extension_id, "Content-Type": "application/json"},
            body,
        )
        if status == 200:
            return True
        if status == 202:
            logger.info("Telemetry API not supported here (local emulator): using the handler-done fallback")
            return False
        logger.warning("telemetry subscription refused (HTTP %d: %s): using the fallback", status, payload[:200])
        return False


def telemetry_bind_address() -> str:
    """The address ``sandbox.localdomain`` resolves to; loopback where it does not resolve."""
    try:
        return socket.gethostbyname(SANDBOX_HOST)
    except OSError:
        return "127.0.0.1"
