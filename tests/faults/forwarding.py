"""The forwarding half of the test proxies that stand between a sink and moto.

Both the fault proxy (tests/faults/proxy.py) and the recording proxy of the sink tests
(tests/functional/sinks/proxy.py) must pass a request through byte for byte when they do not
interfere: same method, path, query, signed headers and body, and moto's answer back unchanged
(not decompressed), so that what the sink sees is what moto said. That part lives here once;
the subclasses decide, in ``_handle``, when to forward and what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

#: Headers that describe one hop's connection, not the message: aiohttp sets its own.
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

#: Changes moto's answer body on the way back: (status, payload) -> payload.
Transform = Callable[[int, bytes], bytes]


@dataclass
class ForwardingProxy:
    upstream: str
    endpoint: str = field(default="", init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    async def start(self) -> str:
        """Listen on a free loopback port; returns (and keeps in ``endpoint``) the URL to use."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    async def stop(self) -> None:
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Subclasses decide per request; by default everything goes through untouched."""
        return await self._forward(request, await request.read())

    async def _forward(self, request: web.Request, body: bytes, transform: Transform | None = None) -> web.Response:
        """Send the request (whose body was already read) upstream and return moto's answer."""
        assert self._session is not None, "start() the proxy first"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = f"{self.upstream}{request.path_qs}"
        async with self._session.request(request.method, url, headers=headers, data=body) as upstream:
            payload = await upstream.read()
            if transform is not None:
                payload = transform(upstream.status, payload)
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=payload, headers=out)
