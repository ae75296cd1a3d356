"""The extension's life on one asyncio loop: wire the runtime, flush after invokes, drain on SHUTDOWN.

Registration happens before this module is imported (``__main__``, ``core/registration.py``);
opening and closing the resources is ``core/wiring.py``'s job; this module runs the event loop.

Flush policy (docs/architecture.md, "Lifecycle of an execution environment"): when an INVOKE
arrives and a flush is due, wait until the runtime has finished that invoke
(``platform.runtimeDone``, or the client's handler-done line where telemetry is unavailable),
flush, then go back to ``/next``. When no flush is due, go straight back to
``/next``: the invoke then costs no billed time at all. Nothing ever runs on a timer, because
Lambda freezes the environment between invokes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping

from capture_ext.core import logs
from capture_ext.core.config import Settings
from capture_ext.core.lambda_api import Event, ExtensionsAPI, LambdaAPIError, Registration
from capture_ext.core.wiring import Runtime, StartError, open_runtime, push_close

logger = logging.getLogger("capture_ext")

#: A flush is not started with less time than this before the invoke's deadline.
MIN_FLUSH_S = 0.05


class Extension:
    """One registered extension process: wires its :class:`Runtime`, runs the event loop on it,
    and lets the exit stack close it (docs/architecture.md, "Start-up and clean-up")."""

    def __init__(
        self,
        settings: Settings,
        registration: Registration,
        runtime_api: str,
        env: Mapping[str, str] | None = None,
        started_at: float | None = None,
    ) -> None:
        if registration.function_name:
            settings = _with_function(settings, registration.function_name, registration.function_version)
        self.settings = settings
        self.registration = registration
        self.runtime_api = runtime_api
        self.env = dict(os.environ if env is None else env)
        self.started_at = time.monotonic() if started_at is None else started_at
        #: The wired runtime, once start-up has opened it (None before, and when it could not).
        self.runtime: Runtime | None = None
        #: Set when a SHUTDOWN drain has finished: nothing is left that only memory holds.
        self.shut_down = False

    # -- start-up ------------------------------------------------------------------------------
    async def run(self) -> int:
        api = ExtensionsAPI(self.runtime_api, self.registration.extension_id)
        async with contextlib.AsyncExitStack() as stack:
            push_close(stack, "the Extensions API connection", api.close)
            try:
                runtime = await open_runtime(stack, self.settings, self.env, api)
            except StartError as exc:
                return await self._without_capture(api, str(exc))
            except Exception as exc:  # a bug in start-up must not fail the function either
                logger.exception("start-up failed")
                return await self._without_capture(api, f"could not start ({type(exc).__name__}: {exc})")
            if runtime.problems and self.settings.strict:
                message = "; ".join(runtime.problems)
                logger.error("CAPTURE_STRICT=1 and the configuration has problems: %s", message)
                await _report_init_error(api, "Extension.ConfigError", message)
                return 1
            self.runtime = runtime
            runtime.progress.ready_ms = (time.monotonic() - self.started_at) * 1000
            logger.info(
                "ready in %.1f ms: sinks=%s port=%d socket=%s telemetry=%s environment=%s",
                runtime.progress.ready_ms,
                ",".join(runtime.dispatcher.states) or "none",
                self.settings.port,
                self.settings.socket_path,
                "on" if runtime.telemetry_enabled else "off",
                runtime.environment_id,
            )
            if self.settings.warmup == "init":
                await self._warm_up(runtime)
            code = await EventLoop(runtime).run()
        if runtime.progress.close_by is not None:
            self._log_shutdown(runtime, runtime.progress.close_by)
        return code

    async def _without_capture(self, api: ExtensionsAPI, problem: str) -> int:
        """A resource could not be opened (what was opened is closed already). Capture never fails
        the function: stay registered and answer ``/next`` until SHUTDOWN, capturing nothing; with
        ``CAPTURE_STRICT=1``, fail init instead."""
        if self.settings.strict:
            logger.error("CAPTURE_STRICT=1 and capture-ext could not start: %s", problem)
            await _report_init_error(api, "Extension.StartError", problem)
            return 1
        logger.error("capture-ext %s; nothing is captured in this environment, the function runs as usual", problem)
        while True:
            try:
                event = await api.next_event()
            except (LambdaAPIError, OSError) as exc:
                logger.error("lost the Extensions API (%s); exiting", exc)
                return 1
            if event.event_type == "SHUTDOWN":
                self.shut_down = True
                return 0

    async def _warm_up(self, runtime: Runtime) -> None:
        """Open sink clients before the first /next: this runs beside the function's own init
        (model loading takes seconds), so the first flush, which may be a SHUTDOWN with 1.7 s to
        spare, does not also pay for importing an SDK."""
        started = time.monotonic()
        await runtime.dispatcher.warm_up(started + max(self.settings.flush_timeout_s, 1.0))
        logger.info("sinks warmed up in %.0f ms", (time.monotonic() - started) * 1000)

    def _log_shutdown(self, runtime: Runtime, deadline: float) -> None:
        """After the exit stack closed everything: say what the SHUTDOWN left, and how early."""
        left = sum(runtime.dispatcher.backlog().values()) + len(runtime.buffer)
        if left and runtime.store.durable:
            logger.warning(
                "SHUTDOWN: %d records not delivered before the deadline are kept in the spool %s "
                "for the next start in this environment",
                left,
                self.settings.spool_dir,
            )
        elif left:
            logger.error("SHUTDOWN: %d records could not be delivered before the deadline", left)
        left_ms = (deadline - time.monotonic()) * 1000 + self.settings.shutdown_margin_ms
        logger.info("SHUTDOWN done %.0f ms before the deadline: %s", left_ms, runtime.health())
        self.shut_down = True


class EventLoop:
    """``/next`` until SHUTDOWN over a wired :class:`Runtime`: flush after INVOKE when due, drain
    on SHUTDOWN. Closing is not its job: the exit stack that opened the runtime closes it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.api = runtime.api
        self.ledger = runtime.ledger
        self.buffer = runtime.buffer
        self.store = runtime.store
        self.dispatcher = runtime.dispatcher
        self.ingest = runtime.ingest
        self.tracker = runtime.tracker
        self.metrics = runtime.metrics
        self.telemetry_enabled = runtime.telemetry_enabled
        self.health = runtime.health
        #: The invoke whose handler's socket lines are held (see _hold_records).
        self._held_for = ""
        runtime.tracker.on_runtime_done = self._runtime_done

    async def run(self) -> int:
        while True:
            try:
                event = await self.api.next_event()
            except (LambdaAPIError, OSError) as exc:
                logger.error("lost the Extensions API (%s); exiting", exc)
                return 1
            if event.event_type == "INVOKE":
                self.runtime.progress.invokes += 1
                logs.current_request_id = event.request_id  # JSON log lines carry it
                self.ingest.enricher.invoke_trace = (event.request_id, event.trace_id)
                if self.telemetry_enabled and (self.settings.hold_socket or self.settings.stay_awake):
                    await self._hold_records(event.request_id)
                    if self.settings.stay_awake and self._held_for == event.request_id and self.ingest.connections:
                        # Awake until runtimeDone: the held lines are read now, not in the next
                        # handler's window after a freeze (docs/guarantees.md).
                        margin = self.settings.shutdown_margin_ms / 1000
                        await self._wait_for_handler(
                            event.request_id, self._monotonic_deadline(event.deadline_ms) - margin - MIN_FLUSH_S
                        )
                await self.on_invoke(event)
            elif event.event_type == "SHUTDOWN":
                await self.on_shutdown(event)
                return 0
            else:
                logger.warning("ignoring unknown event type %r", event.event_type)

    async def _hold_records(self, request_id: str) -> None:
        """Leave this handler's lines in the socket until its ``platform.runtimeDone``: reading
        them now would take CPU from the model. Only with telemetry (the runtimeDone that releases
        them must come).

        With no flush due the extension is back in ``/next`` before the runtime is done, so Lambda
        freezes the environment at once and delivers that runtimeDone only after the next thaw:
        the last invoke's lines are then still held here, and are read now, in the wake-up this
        INVOKE costs anyway, before this invoke's lines are held.
        """
        ingest = self.ingest
        if ingest.held:
            ingest.release()
        if ingest.unread:  # released (here, or by a runtimeDone just delivered) but not read yet
            for _ in range(2):  # the released lines are read on the next turn of the loop
                await asyncio.sleep(0)
        self._held_for = ""
        if not self.tracker.is_done(request_id) and ingest.hold():
            self._held_for = request_id

    def _runtime_done(self, request_id: str) -> None:
        """Read the socket again once the invoke it is held for is done (a late runtimeDone of an
        earlier invoke, delivered after a thaw, leaves this handler's lines where they are)."""
        if request_id == self._held_for:
            self.ingest.release()

    def flush_due(self, now: float | None = None) -> str:
        """Why a flush is due now, or "" when none is."""
        now = time.monotonic() if now is None else now
        if self.settings.flush_interval_s == 0:
            return "every_invoke"
        if self.buffer.size_due():
            return "size"
        if len(self.buffer) and self.buffer.age_s(now) >= self.settings.flush_interval_s:
            return "age"
        if self.dispatcher.has_work(now):
            return "retry"
        return ""

    async def on_invoke(self, event: Event) -> None:
        """Flush after the runtime is done with this invoke, if a flush is due.

        The flush budget (``CAPTURE_FLUSH_TIMEOUT_S``) starts when the runtime is done, not when
        the INVOKE arrived: a handler that thinks for seconds must not leave the flush no time.
        Both the wait and the flush end before the invoke's own deadline (minus the safety
        margin): an extension still busy at the deadline would turn the invoke into a timeout.
        When the runtime's end is never signalled, nothing is flushed (the records wait for the
        next invoke) and no sink is blamed.
        """
        reason = self.flush_due()
        if not reason:
            return
        hard_end = self._monotonic_deadline(event.deadline_ms) - self.settings.shutdown_margin_ms / 1000
        if not await self._wait_for_handler(event.request_id, hard_end - MIN_FLUSH_S):
            logger.warning(
                "no signal that the runtime finished %s before its deadline; the flush waits for the next invoke",
                event.request_id,
            )
            return
        deadline = min(time.monotonic() + self.settings.flush_timeout_s, hard_end)
        if deadline - time.monotonic() < MIN_FLUSH_S:
            logger.info("invoke %s left no time to flush before its deadline; the next invoke will", event.request_id)
            return
        try:
            await self.flush(deadline, reason)
        except Exception:  # a bug must cost this flush, not the environment (the spool keeps the records)
            logger.exception("flush after %s failed; its records wait for the next flush", event.request_id)

    async def _wait_for_handler(self, request_id: str, until: float) -> bool:
        """Whether the runtime is done with ``request_id`` (never flush beside the handler).

        With telemetry, ``platform.runtimeDone`` says so; the client's handler-done line (from
        ``@capture_handler``) is a fallback after a grace period, in case the platform event is
        lost. Without telemetry (AWS's RIE) only the client can say: its handler-start line tells
        that a done line will follow, so the first invoke waits for it too instead of guessing a
        fixed time; a function without ``@capture_handler`` gets the fixed wait
        (``CAPTURE_RUNTIME_DONE_TIMEOUT_MS``).
        """
        tracker = self.tracker
        grace = self.settings.runtime_done_timeout_ms / 1000
        if self.telemetry_enabled and self.ingest.held:
            # The client's lines are still in the socket: the platform gets its grace period
            # first, then they are read and the client's handler-done line counts at once.
            done = await tracker.wait_platform(request_id, min(max(grace, 1.0), until - time.monotonic()))
            self.ingest.release()
            if not done:  # a long handler, or a lost runtimeDone: the client's done line counts too
                done = await tracker.wait(request_id, until - time.monotonic(), client_grace=max(grace, 1.0))
        elif self.telemetry_enabled:
            done = await tracker.wait(request_id, until - time.monotonic(), client_grace=max(grace, 1.0))
        elif tracker.is_done(request_id):
            done = True
        else:
            await tracker.wait_started(request_id, min(grace, until - time.monotonic()))
            if tracker.client_signals:
                done = await tracker.wait(request_id, until - time.monotonic())
            else:
                done = True  # no client signals at all: the fixed wait above stood in
        # Let the socket readers take what the handler wrote before it returned.
        for _ in range(3):
            await asyncio.sleep(0)
        return done

    async def flush(self, deadline: float, reason: str, ignore_breakers: bool = False) -> None:
        sealed = self.store.seal()
        if not sealed and not self.dispatcher.has_work(ignore_breakers=ignore_breakers):
            return
        report = await self.dispatcher.flush(deadline, ignore_breakers=ignore_breakers)
        logger.debug("flush (%s) took %.1f ms: delivered %s", reason, report.duration_ms, report.delivered)
        if self.metrics is not None:
            hot, cold = self.dispatcher.backlog_split()
            self.metrics.emit(
                report,
                self.ledger.received,
                len(self.buffer) + sum(hot.values()),
                reason,
                totals=self.health()["sinks"],
                spooled=sum(cold.values()),
            )

    async def on_shutdown(self, event: Event) -> None:
        """Stop listening and drain what we can; the exit stack then closes the sinks with the time
        left before the deadline (minus the safety margin), and the spool."""
        margin = self.settings.shutdown_margin_ms / 1000
        deadline = self._monotonic_deadline(event.deadline_ms) - margin
        if event.deadline_ms <= 0:
            deadline = time.monotonic() + 1.5
        logger.info(
            "SHUTDOWN (%s): draining with %.0f ms left", event.shutdown_reason, (deadline - time.monotonic()) * 1000
        )
        self.ingest.release()
        for _ in range(3):
            await asyncio.sleep(0)
        await self.runtime.listeners.aclose()
        close_reserve = min(0.2, max(deadline - time.monotonic(), 0) / 4)
        try:
            await self.flush(deadline - close_reserve, "shutdown", ignore_breakers=True)
        except Exception:  # still close the sinks and sync the spool: what is left stays on disk
            logger.exception("SHUTDOWN drain failed; undelivered records stay in the spool")
        self.runtime.progress.close_by = deadline  # the sinks close in the time left

    def _monotonic_deadline(self, deadline_ms: int) -> float:
        if deadline_ms <= 0:
            return time.monotonic() + 3.0
        return time.monotonic() + (deadline_ms / 1000 - time.time())


async def _report_init_error(api: ExtensionsAPI, error_type: str, message: str) -> None:
    """Fail Lambda's init with ``message`` (``CAPTURE_STRICT=1``); an API that is gone is only logged."""
    try:
        await api.report_error("init", error_type, message)
    except (LambdaAPIError, OSError) as exc:
        logger.error("could not report the init error: %s", exc)


def _with_function(settings: Settings, name: str, version: str) -> Settings:
    from dataclasses import replace

    # Sinks derive their defaults from the name (the cloudwatch log group) when they are built, after this.
    return replace(settings, function_name=name, function_version=version or settings.function_version)


def install_signal_handlers(loop: asyncio.AbstractEventLoop, task: asyncio.Task[int]) -> None:
    """SIGTERM/SIGINT outside Lambda (local runs): stop the task; Lambda itself sends SHUTDOWN."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
