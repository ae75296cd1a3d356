"""One execution environment (a "sandbox") and its lifecycle: init, invoke, freeze, reset, shutdown.

The rules are Lambda's (docs/emulator.md, "Rules it enforces"):
extensions start first and the runtime only once all of them registered; an invoke's response
goes back to the caller as soon as the runtime posts it, but the invoke ends (and the sandbox
freezes) only when the runtime and every INVOKE subscriber wait in ``/next`` again; a timeout,
a runtime crash or any extension exit outside shutdown resets the environment; shutdown gives
the runtime SIGTERM and up to 300 ms, then SHUTDOWN to the extensions with an epoch-ms deadline,
then SIGKILL. The API handlers in ``api.py`` call the ``register``/``next_event``/``runtime_*``
methods; the emulator drives ``init``, ``invoke`` and ``shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from capture_ext.emulator.calls import ApiCalls
from capture_ext.emulator.model import (
    RIE_RESET_REASONS,
    Agent,
    EmulatorConfig,
    Invocation,
    InvokeResult,
    Reply,
    SandboxFailure,
    ShutdownReport,
)
from capture_ext.emulator.processes import (
    ProcessSet,
    SandboxProcess,
    discover_extensions,
    extension_environment,
    function_environment,
)
from capture_ext.emulator.telemetry import TelemetryHub

log = logging.getLogger(__name__)


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class Sandbox(ApiCalls):
    """The state machine of one execution environment; replaced by a fresh one after a reset."""

    def __init__(
        self, cfg: EmulatorConfig, runtime_api: str, on_event: Callable[[dict[str, Any]], None], invokes_before: int = 0
    ) -> None:
        self.cfg = cfg
        self.state = "created"  # created -> init -> ready <-> invoking -> shutdown -> dead
        self.function_env = function_environment(cfg, runtime_api)
        self.telemetry = TelemetryHub(mode=cfg.telemetry, faults=cfg.faults.telemetry, on_event=on_event)
        self.procs = ProcessSet(on_line=self._on_line, on_exit=self._on_exit)
        self.agents: dict[str, Agent] = {}
        self.launched: dict[str, SandboxProcess] = {}
        self.runtime: SandboxProcess | None = None
        self.runtime_ready = self.runtime_idle = False
        self.runtime_queue: asyncio.Queue[Invocation | None] = asyncio.Queue()
        self.current: Invocation | None = None
        self.failure: SandboxFailure | None = None
        self.init_ms: float | None = None
        self.phase = "init"
        self.invokes = invokes_before
        self.report: ShutdownReport | None = None
        self._init_pending_ms: float | None = None
        self._changed = asyncio.Event()
        self._shutdown: asyncio.Task[ShutdownReport] | None = None

    # -- waiting ------------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()

    async def _until(self, predicate: Callable[[], bool], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.failure is not None:
                raise self.failure
            if predicate():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    def _fail(self, failure: SandboxFailure) -> None:
        if self.failure is not None or self.state in ("shutdown", "dead"):
            return
        log.warning("sandbox failed: %s", failure)
        self.failure = failure
        self._notify()
        if self.state == "ready":  # nobody is waiting: reset now, as Lambda does
            _ = self.reset(failure.reason)

    # -- lifecycle ----------------------------------------------------------------------------
    async def init(self, limit_s: float | None = None, phase: str = "init") -> None:
        """Start extensions, then the runtime; ``phase="invoke"`` is Lambda's retry of a timed-out init."""
        cfg, loop = self.cfg, asyncio.get_running_loop()
        limit_s = cfg.init_timeout_s if limit_s is None else limit_s
        self.phase = phase
        self.state, started = "init", time.monotonic()
        py = f"python:{sys.version_info.major}.{sys.version_info.minor}"
        self.telemetry.emit(
            "platform.initStart",
            {"initializationType": "on-demand", "phase": phase, "runtimeVersion": py,
             "functionName": cfg.function_name, "functionVersion": cfg.function_version},
        )  # fmt: skip
        deadline = loop.time() + limit_s
        try:
            ext_env = extension_environment(self.function_env, rie=cfg.rie)
            for path in discover_extensions(cfg.extensions_dir):
                self.launched[path.name] = await self.procs.start(path.name, "extension", [str(path)], ext_env)
            await self._until(lambda: set(self.launched) <= {a.name for a in self.agents.values()}, deadline)
            self._maybe_kill("init")
            runtime_env = dict(self.function_env)
            runtime_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cfg.task_root), cfg.env.get("PYTHONPATH")]))
            argv = [cfg.python, "-m", "awslambdaric", cfg.handler]
            self.runtime = await self.procs.start("runtime", "runtime", argv, runtime_env, cwd=cfg.task_root)
            await self._until(
                lambda: self.runtime_ready and self.runtime_idle and all(a.idle for a in self.agents.values()), deadline
            )
        except TimeoutError:
            message = f"init did not finish within {limit_s:g} s: {self._init_waiting_for()}"
            failure = SandboxFailure("Sandbox.Timedout", message, "timeout")
            self.failure = self.failure or failure
            await self.reset(failure.reason)
            raise failure from None
        except SandboxFailure as failure:
            await self.reset(failure.reason)
            raise
        self.telemetry.closed_for_subscriptions = True
        self.init_ms = self._init_pending_ms = (time.monotonic() - started) * 1000
        self.telemetry.emit(
            "platform.initReport",
            {"initializationType": "on-demand", "phase": phase, "status": "success",
             "metrics": {"durationMs": round(self.init_ms, 3)}},
        )  # fmt: skip
        self.state = "ready"
        await self._freeze()

    def _init_waiting_for(self) -> str:
        """What init was still waiting for, by name: the first question after an init timeout."""
        registered = {a.name for a in self.agents.values()}
        missing = sorted(set(self.launched) - registered)
        if missing:
            return f"extension {', '.join(missing)} never registered"
        if self.runtime is None or not self.runtime_ready:
            return "the runtime never asked for its first invoke"
        busy = sorted(a.name for a in self.agents.values() if not a.idle)
        if busy:
            return f"extension {', '.join(busy)} never asked for its first event (/next)"
        return "the runtime never finished its init"

    def interrupt(self, message: str) -> None:
        """Stop waiting (Ctrl-C): an init, or an invoke the runtime has not answered, ends at once.

        An idle environment, or one whose runtime has answered and whose extensions are finishing
        the invoke phase (a flush), is left alone: the SHUTDOWN that follows ends it as usual.
        """
        unanswered = self.current is not None and not self.current.reply.done()
        if self.state == "init" or (self.state == "invoking" and unanswered):
            self._fail(SandboxFailure("Sandbox.Interrupted", message, "spindown"))

    async def invoke(self, inv: Invocation) -> InvokeResult:
        """Run one invoke to the end of its phase; the caller may read ``inv.reply`` earlier."""
        if self.state != "ready" or self.failure is not None:
            raise RuntimeError(f"sandbox cannot take an invoke in state {self.state!r}")
        self.state = "invoking"
        self.invokes += 1
        inv.number = self.invokes
        self._thaw()
        self.current, inv.started_at = inv, time.monotonic()
        tracing = {"type": "X-Amzn-Trace-Id", "value": inv.trace_id}
        self.telemetry.emit(
            "platform.start", {"requestId": inv.request_id, "version": self.cfg.function_version, "tracing": tracing}
        )
        event = {"eventType": "INVOKE", "deadlineMs": inv.deadline_ms, "requestId": inv.request_id,
                 "invokedFunctionArn": self.cfg.function_arn, "tracing": tracing}  # fmt: skip
        if self.cfg.rie:  # RIE has no X-Ray: its INVOKE events carry no tracing
            del event["tracing"]
        for agent in self.agents.values():
            if "INVOKE" in agent.events:
                agent.deliver(event)
        self.runtime_idle = False
        self.runtime_queue.put_nowait(inv)
        self._maybe_kill("invoke")
        deadline = asyncio.get_running_loop().time() + (inv.deadline_ms - epoch_ms()) / 1000
        reset_reason: str | None = None
        try:
            await self._until(self._phase_done, deadline)
        except TimeoutError:
            secs = self.cfg.timeout_s
            message = f"{datetime.now(UTC).isoformat()} {inv.request_id} Task timed out after {secs:.2f} seconds"
            self._answer_error(inv, "timeout", "Sandbox.Timedout", message)
            reset_reason = "timeout"
        except SandboxFailure as failure:
            self._answer_error(inv, "failure", failure.error_type, failure.message)
            reset_reason = failure.reason
        inv.ended_at = time.monotonic()
        reply = inv.reply.result()
        result = InvokeResult(
            request_id=inv.request_id,
            status=reply.status,
            raw=reply.body,
            error_type=reply.error_type,
            duration_ms=((inv.responded_at or inv.ended_at) - inv.started_at) * 1000,
            post_runtime_ms=None if reset_reason else (inv.ended_at - (inv.responded_at or inv.ended_at)) * 1000,
            phase_ms=(inv.ended_at - inv.started_at) * 1000,
            init_ms=self._init_pending_ms,
            reset_reason=reset_reason,
        )
        self._init_pending_ms = None
        if reset_reason is not None:
            self._runtime_done(inv, reply.status, reply.error_type)
            self._report(inv, result, reply)
            await self.reset(reset_reason)
            return result
        self._report(inv, result, reply)
        self.current = None
        self.state = "ready"
        await self._freeze()
        self._maybe_kill("frozen")
        return result

    def _phase_done(self) -> bool:
        inv = self.current
        return (
            inv is not None
            and inv.reply.done()
            and self.runtime_idle
            and all(a.idle for a in self.agents.values() if "INVOKE" in a.events)
        )

    def _report(self, inv: Invocation, result: InvokeResult, reply: Reply) -> None:
        metrics: dict[str, Any] = {
            "durationMs": round(result.phase_ms, 3),
            "billedDurationMs": math.ceil(result.phase_ms),
            "memorySizeMB": self.cfg.memory_mb,
            "maxMemoryUsedMB": self._max_memory_mb(),
        }
        if result.init_ms is not None:
            metrics["initDurationMs"] = round(result.init_ms, 3)
        record: dict[str, Any] = {"requestId": inv.request_id, "status": reply.status, "metrics": metrics}
        if reply.error_type:
            record["errorType"] = reply.error_type
        self.telemetry.emit("platform.report", record)

    def _max_memory_mb(self) -> int:
        total_kb = 0
        for child in self.procs.alive():
            try:
                with open(f"/proc/{child.pid}/status") as fh:
                    total_kb += next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), 0)
            except OSError:
                continue
        return total_kb // 1024

    async def _freeze(self) -> None:
        if self.cfg.freeze:
            await self.telemetry.pause()
            if self.state == "ready":  # a reset that began meanwhile has thawed everything for SHUTDOWN
                self.procs.freeze()

    def _thaw(self) -> None:
        self.procs.thaw()
        self.telemetry.resume()

    def reset(self, reason: str) -> asyncio.Task[ShutdownReport]:
        """Shut the environment down (once); a reset is a shutdown with reason timeout or failure."""
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._shutdown_sequence(reason))
        return self._shutdown

    async def _shutdown_sequence(self, reason: str) -> ShutdownReport:
        cfg = self.cfg
        self.state = "shutdown"
        started, budget_s = time.monotonic(), cfg.shutdown_budget_ms / 1000
        deadline_ms = epoch_ms() + cfg.shutdown_budget_ms
        for child in self.procs.processes:
            child.expected_exit = True
        self._thaw()
        self.telemetry.flushing = True
        killed: list[str] = []
        rt = self.runtime
        if rt is not None and rt.alive:
            if self.launched:
                rt.signal_group(signal.SIGTERM)
                grace = min(cfg.runtime_shutdown_ms, 0.3 * cfg.shutdown_budget_ms) / 1000
                if not await rt.wait(grace):
                    rt.kill()
                    killed.append("runtime")
            else:  # no extensions: nothing to wait for, as in RIE
                rt.kill()
            await rt.wait(1.0)
        notified = []
        shown = RIE_RESET_REASONS.get(reason, reason) if cfg.rie else reason
        event = {"eventType": "SHUTDOWN", "shutdownReason": shown, "deadlineMs": deadline_ms}
        for agent in self.agents.values():
            ext = self.launched.get(agent.name)
            if agent.external and "SHUTDOWN" in agent.events and ext is not None and ext.alive:
                agent.deliver(event)
                notified.append(agent.name)
        for name, child in self.launched.items():
            if name not in notified and child.alive:
                child.kill()
                killed.append(name)
        remaining = max(0.0, started + budget_s - time.monotonic())
        await asyncio.gather(*(self.launched[n].wait(remaining) for n in notified))
        for name in notified:
            if self.launched[name].alive:
                self.launched[name].kill()
                killed.append(name)
        await self.procs.kill_all()
        for agent in self.agents.values():
            agent.mailbox.put_nowait({})  # wakes any /next still pending so its handler can end
        self.runtime_queue.put_nowait(None)
        await self.telemetry.close()
        self.state = "dead"
        codes = {p.name: p.returncode for p in self.procs.processes}
        self.report = ShutdownReport(
            reason, (time.monotonic() - started) * 1000, deadline_ms, codes, tuple(killed), tuple(notified)
        )
        log.info("environment ended (%s) in %.0f ms; SIGKILLed: %s", reason, self.report.duration_ms, killed or "none")
        return self.report

    def shutdown(self, reason: str = "spindown") -> asyncio.Task[ShutdownReport]:
        return self.reset(reason)

    # -- processes ----------------------------------------------------------------------------
    def _on_line(self, child: SandboxProcess, stream: str, line: str) -> None:
        # One logger per process ("lambda.runtime", "lambda.capture-ext"): the CLI shows them at INFO.
        logging.getLogger(f"lambda.{child.name}").info("%s", line)
        if self.state != "dead":
            self.telemetry.emit("function" if child.kind == "runtime" else "extension", line)

    def _on_exit(self, child: SandboxProcess) -> None:
        if child.expected_exit or self.state in ("shutdown", "dead"):
            return
        if child.kind == "runtime":
            message = f"Runtime exited with error: exit status {child.returncode}"
            self._fail(SandboxFailure("Runtime.ExitError", message))
        else:
            message = f"extension {child.name} exited with status {child.returncode} outside shutdown"
            self._fail(SandboxFailure("Extension.Crash", message))

    def _maybe_kill(self, moment: str) -> None:
        faults = self.cfg.faults
        due = moment == "init" or self.invokes == faults.kill_on_invoke
        if faults.kill_extension and faults.kill_at == moment and due:
            self.kill_extension(faults.kill_extension)

    def kill_extension(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.launched.get(name)
        if child is None:
            raise KeyError(f"no extension named {name!r} was launched (have: {sorted(self.launched)})")
        log.info("fault: sending signal %d to extension %s", sig, name)
        child.signal_group(sig)
