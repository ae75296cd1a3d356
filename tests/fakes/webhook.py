"""A webhook endpoint for the example webhook plugin (examples/capture-ext-webhook).

It keeps every request (so retries show) and each ``Idempotency-Key``'s batch once (so
duplicates do not hide), and can be told to answer 503 to the next requests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from capture_ext.testing.net import free_port


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.fail_next = 0
        self.received = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        self.requests.append({"key": key, "attempt": request.headers.get("X-Capture-Attempt"), "body": body})
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="try later")
        self.batches.setdefault(key, json.loads(body))
        self.received.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def keys(self) -> list[str]:
        """The Idempotency-Key of every request, in order, retries included."""
        return [r["key"] for r in self.requests]

    def records(self) -> list[dict[str, Any]]:
        """The records of each distinct batch, once."""
        return [r for batch in self.batches.values() for r in batch["records"]]

    def ids(self) -> list[str]:
        return [r["inference_id"] for r in self.records()]
