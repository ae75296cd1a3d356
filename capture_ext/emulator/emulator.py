"""``LambdaEmulator``: the async API that tests, the demo and ``capture-ext local`` use.

One emulator is one function: a persistent Lambda API server plus the current execution
environment, replaced by a fresh one (re-init on the next invoke) after every reset. Invokes
are serialised, as one Lambda environment takes one invoke at a time.

Example::

    async with LambdaEmulator("app.handler", task_root, extensions_dir, env={...}) as emu:
        result = await emu.invoke({"question": "...", "context": "..."})
        assert result.ok and result.post_runtime_ms is not None
        report = await emu.shutdown()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from capture_ext.emulator.api import LambdaApi, serve
from capture_ext.emulator.environment import Sandbox, epoch_ms
from capture_ext.emulator.model import (
    RIE_SHUTDOWN_REASON,
    EmulatorConfig,
    Invocation,
    InvokeResult,
    Reply,
    SandboxFailure,
    ShutdownReport,
)
from capture_ext.emulator.telemetry import Delivery

log = logging.getLogger(__name__)
T = TypeVar("T")


class PendingInvoke:
    """An invoke in flight: the early answer (what the caller of Lambda sees) and the full result."""

    def __init__(self, inv: Invocation, task: asyncio.Task[InvokeResult], *, hold: bool = False) -> None:
        self.invocation, self._task, self.submitted_at = inv, task, time.monotonic()
        self._hold = hold

    async def response(self) -> Reply:
        """The runtime's answer, as soon as it is posted (extensions may still be working).

        In RIE mode (``hold``) it comes only once the invoke is over, every extension back in
        ``/next``, since that is when RIE answers its caller.
        """
        if self._hold:
            await asyncio.wait({self._task})
            if not self.invocation.reply.done():
                self._task.result()
            return self.invocation.reply.result()
        waiters: set[asyncio.Future[Any]] = {self.invocation.reply, self._task}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done() and not self.invocation.reply.done():
            self._task.result()  # re-raise an emulator error
        return self.invocation.reply.result()

    @property
    def request_id(self) -> str:
        return self.invocation.request_id

    def done(self) -> bool:
        """True once the whole invoke is over (the phase ended or the environment was reset)."""
        return self._task.done()

    async def result(self) -> InvokeResult:
        """The whole invoke, once the phase ended (or the environment was reset)."""
        return await self._task

    def __await__(self) -> Any:
        return self.result().__await__()


class LambdaEmulator:
    """A local AWS Lambda for one function: Runtime, Extensions and Telemetry APIs, freeze, resets.

    Keyword options not named here go to ``EmulatorConfig`` (``function_name``, ``memory_mb``,
    ``shutdown_budget_ms``, ``faults``, ``init_timeout_s``, ``python`` ...).
    """

    def __init__(
        self,
        handler: str,
        task_root: str | Path,
        extensions_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        *,
        telemetry: str = "on",
        freeze: bool = True,
        timeout_s: float = 30.0,
        runtime_api_port: int = 0,
        **options: Any,
    ) -> None:
        self.config = EmulatorConfig(
            handler=handler,
            task_root=Path(task_root),
            extensions_dir=Path(extensions_dir) if extensions_dir else None,
            env=dict(env or {}),
            telemetry=telemetry,  # type: ignore[arg-type]
            freeze=freeze,
            timeout_s=timeout_s,
            **options,
        )
        self._port = runtime_api_port
        self._runner: web.AppRunner | None = None
        self.runtime_api = ""
        self.sandbox: Sandbox | None = None
        self.environments: list[Sandbox] = []
        self.telemetry_events: list[dict[str, Any]] = []
        self.results: list[InvokeResult] = []
        self._lock = asyncio.Lock()
        self._invokes = 0

    # -- start / stop -------------------------------------------------------------------------
    async def start(self) -> LambdaEmulator:
        api = LambdaApi(lambda: self.sandbox)
        self._runner, port = await serve(api.app(), self._port)
        self.runtime_api = f"127.0.0.1:{port}"
        log.info("Lambda APIs listening on http://%s", self.runtime_api)
        return self

    async def __aenter__(self) -> LambdaEmulator:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Shut the environment down (SHUTDOWN, reason spindown) and stop the API server."""
        with contextlib.suppress(Exception):
            await self.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- environments -------------------------------------------------------------------------
    async def init(self) -> Sandbox:
        """Initialise an environment now (as provisioned concurrency would) instead of at the first invoke."""
        async with self._lock:
            return await self._ready_sandbox()

    async def _ready_sandbox(self) -> Sandbox:
        box = self.sandbox
        if box is not None and (box.failure is not None or box.state in ("shutdown", "dead")):
            await self._retire(box, box.failure.reason if box.failure else "failure")
            box = None
        if box is None:
            if not self.runtime_api:
                raise RuntimeError("LambdaEmulator.start() (or 'async with') must come first")
            try:
                box = await self._init_sandbox(None, "init")
            except SandboxFailure as failure:
                if failure.error_type != "Sandbox.Timedout":
                    raise
                # Lambda retries a timed-out init once, during the first invoke, under the function timeout.
                log.warning("init timed out; retrying it under the function timeout (%g s)", self.config.timeout_s)
                box = await self._init_sandbox(self.config.timeout_s, "invoke")
        return box

    async def _init_sandbox(self, limit_s: float | None, phase: str) -> Sandbox:
        box = Sandbox(self.config, self.runtime_api, self.telemetry_events.append, self._invokes)
        self.sandbox = box
        self.environments.append(box)
        try:
            await box.init(limit_s, phase)
        except SandboxFailure:
            await self._retire(box, "failure")
            raise
        return box

    async def _retire(self, box: Sandbox, reason: str) -> None:
        await box.reset(reason)
        if self.sandbox is box:
            self.sandbox = None

    # -- invokes ------------------------------------------------------------------------------
    def start_invoke(
        self, event: Any, *, request_id: str | None = None, client_context: dict[str, Any] | None = None
    ) -> PendingInvoke:
        """Submit an invoke; await ``.response()`` for the early answer or ``.result()`` for the whole phase."""
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        inv = Invocation(number=0, payload=payload, deadline_ms=0)
        if request_id:
            inv.request_id = request_id
        if client_context is not None:
            inv.client_context = json.dumps(client_context)
        return PendingInvoke(inv, asyncio.create_task(self._run_invoke(inv)), hold=self.config.rie)

    async def invoke(self, event: Any, **kwargs: Any) -> InvokeResult:
        """Invoke and wait for the end of the invoke phase (timings included)."""
        return await self.start_invoke(event, **kwargs).result()

    async def _run_invoke(self, inv: Invocation) -> InvokeResult:
        async with self._lock:
            submitted = time.monotonic()
            if self.config.rie:  # RIE starts the environment inside the first invoke: its deadline includes init
                inv.deadline_ms = epoch_ms() + int(self.config.timeout_s * 1000)
            try:
                box = await self._ready_sandbox()
                if box.failure is not None:  # it failed between its init and this invoke: start afresh
                    box = await self._ready_sandbox()
            except SandboxFailure as failure:
                body = json.dumps({"errorMessage": failure.message, "errorType": failure.error_type}).encode()
                inv.answer(Reply("failure", body, failure.error_type), time.monotonic())
                elapsed = (time.monotonic() - submitted) * 1000
                result = InvokeResult(inv.request_id, "failure", body, failure.error_type, elapsed, None, elapsed,
                                      None, failure.reason)  # fmt: skip
                self.results.append(result)
                return result
            self._invokes += 1
            if not self.config.rie:
                inv.deadline_ms = epoch_ms() + int(self.config.timeout_s * 1000)
            root = f"1-{int(time.time()):08x}-{inv.request_id.replace('-', '')[:24]}"
            inv.trace_id = f"Root={root};Parent={inv.request_id.replace('-', '')[:16]};Sampled=0"
            result = await box.invoke(inv)
            self.results.append(result)
            if box.state in ("shutdown", "dead"):
                await self._retire(box, result.reset_reason or "failure")
            return result

    async def thawed(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` with the idle environment thawed, then freeze it again (a look between invokes).

        No invoke starts meanwhile, and telemetry stays paused: only the processes run.
        """
        async with self._lock:
            box = self.sandbox
            frozen = box is not None and box.state == "ready" and box.procs.frozen
            if box is None or box.state != "ready":
                raise RuntimeError("no initialised environment is idle")
            if frozen:
                box.procs.thaw()
            try:
                return await call()
            finally:
                if frozen and box.state == "ready":
                    box.procs.freeze()

    async def idle(self) -> None:
        """Wait until no invoke is in flight (the last one's extensions are back in ``/next``)."""
        async with self._lock:
            return

    # -- shutdown and faults ------------------------------------------------------------------
    async def shutdown(self, reason: str = "spindown") -> ShutdownReport | None:
        """End the current environment with a SHUTDOWN event; None when none is running.

        In RIE mode a spindown is what RIE sends when it is stopped: ``SandboxTerminated``.
        """
        if self.config.rie and reason == "spindown":
            reason = RIE_SHUTDOWN_REASON
        async with self._lock:
            box = self.sandbox
            if box is None:
                return None
            await self._retire(box, reason)
            return box.report

    def interrupt(self, message: str = "the emulator was interrupted") -> None:
        """End the current environment without waiting for an invoke in flight (answered with an error)."""
        if self.sandbox is not None:
            self.sandbox.interrupt(message)

    def kill_extension(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal an extension of the current environment (a SIGKILL makes Lambda reset it)."""
        if self.sandbox is None:
            raise RuntimeError("no execution environment is running")
        self.sandbox.kill_extension(name, sig)

    # -- what happened ------------------------------------------------------------------------
    def logs(self, name: str) -> list[str]:
        """Every line a process printed (stdout and stderr), across environments; 'runtime' is the function."""
        return [line for box in self.environments for p in box.procs.processes if p.name == name for line in p.lines]

    @property
    def resets(self) -> list[ShutdownReport]:
        """How each finished environment ended (resets and shutdowns), oldest first."""
        return [box.report for box in self.environments if box.report is not None]

    @property
    def deliveries(self) -> list[Delivery]:
        return [d for box in self.environments for d in box.telemetry.deliveries]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.telemetry_events if event_type is None or e["type"] == event_type]
