"""The extension's life on one asyncio loop: register, serve, flush after invokes, drain on SHUTDOWN.

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
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from capture_ext.core import logs
from capture_ext.core.config import Settings
from capture_ext.core.lambda_api import Event, ExtensionsAPI, LambdaAPIError, Registration, telemetry_bind_address

if TYPE_CHECKING:
    from capture_ext.core.buffer import RecordBuffer
    from capture_ext.core.dispatcher import Dispatcher
    from capture_ext.core.http11 import HTTPServer
    from capture_ext.core.ingest import Ingest
    from capture_ext.core.ledger import Ledger
    from capture_ext.core.metrics import MetricsEmitter
    from capture_ext.core.store import Store
    from capture_ext.core.telemetry import RuntimeDoneTracker

logger = logging.getLogger("capture_ext")

#: A flush is not started with less time than this before the invoke's deadline.
MIN_FLUSH_S = 0.05


class Extension:
    """One extension process: owns the servers, the buffer, the dispatcher and the event loop."""

    def __init__(
        self,
        settings: Settings,
        name: str = "capture-ext",
        env: Mapping[str, str] | None = None,
        started_at: float | None = None,
        registration: Registration | None = None,
    ) -> None:
        self.settings = settings
        #: Given when ``__main__`` registered before importing asyncio (the fast path on Lambda).
        self.registration = registration
        self.name = name
        self.env = dict(os.environ if env is None else env)
        self.started_at = time.monotonic() if started_at is None else started_at
        self.environment_id = uuid.uuid4().hex[:16]
        self.api: ExtensionsAPI | None = None
        self.telemetry_enabled = False
        self.ready = asyncio.Event()
        self.ready_ms = 0.0
        self.invokes = 0
        self.stopping = False
        #: Set when a SHUTDOWN drain has finished: nothing is left that only memory holds.
        self.shut_down = False
        self._servers: list[Any] = []
        #: The invoke whose handler's socket lines are held (see _hold_records).
        self._held_for = ""
        # Built in _build(), after registration, so registration is not delayed by imports.
        self.ledger: Ledger
        self.buffer: RecordBuffer
        self.store: Store
        self.dispatcher: Dispatcher
        self.ingest: Ingest
        self.tracker: RuntimeDoneTracker
        self.metrics: MetricsEmitter | None = None
        self.http: HTTPServer

    # -- start-up ------------------------------------------------------------------------------
    async def run(self) -> int:
        runtime_api = self.env.get("AWS_LAMBDA_RUNTIME_API")
        if not runtime_api:
            logger.error("AWS_LAMBDA_RUNTIME_API is not set: capture-ext runs only as a Lambda extension")
            return 2
        self.api = ExtensionsAPI(runtime_api)
        registration = self.registration
        if registration is None:
            try:
                registration = await self.api.register(self.name)
            except (LambdaAPIError, OSError) as exc:
                logger.error("could not register as extension %r: %s", self.name, exc)
                return 1
        else:
            self.api.extension_id = registration.extension_id
        if registration.function_name:
            self.settings = _with_function(self.settings, registration.function_name, registration.function_version)
        problems = await self._build()
        if problems and self.settings.strict:
            message = "; ".join(problems)
            logger.error("CAPTURE_STRICT=1 and the configuration has problems: %s", message)
            await self.api.report_error("init", "Extension.ConfigError", message)
            await self._stop_servers()
            return 1
        self.ready_ms = (time.monotonic() - self.started_at) * 1000
        logger.info(
            "ready in %.1f ms: sinks=%s port=%d socket=%s telemetry=%s environment=%s",
            self.ready_ms,
            ",".join(self.dispatcher.states) or "none",
            self.settings.port,
            self.settings.socket_path,
            "on" if self.telemetry_enabled else "off",
            self.environment_id,
        )
        self.ready.set()
        if self.settings.warmup == "init":
            await self._warm_up()
        return await self._event_loop()

    async def _warm_up(self) -> None:
        """Open sink clients before the first /next: this runs beside the function's own init
        (model loading takes seconds), so the first flush, which may be a SHUTDOWN with 1.7 s to
        spare, does not also pay for importing an SDK."""
        started = time.monotonic()
        await self.dispatcher.warm_up(started + max(self.settings.flush_timeout_s, 1.0))
        logger.info("sinks warmed up in %.0f ms", (time.monotonic() - started) * 1000)

    async def _build(self) -> list[str]:
        """Create sinks, buffer, servers and the telemetry subscription; returns config problems."""
        from capture_ext.core.buffer import MemoryBudget, RecordBuffer
        from capture_ext.core.dispatcher import Dispatcher
        from capture_ext.core.http11 import HTTPServer
        from capture_ext.core.ingest import Ingest, start_socket_server
        from capture_ext.core.ledger import Ledger
        from capture_ext.core.metrics import MetricsEmitter
        from capture_ext.core.records import Enricher
        from capture_ext.core.redact import Redactor
        from capture_ext.core.sink_setup import build_sinks
        from capture_ext.core.store import Store
        from capture_ext.core.telemetry import RuntimeDoneTracker
        from capture_ext.core.telemetry_listener import TelemetryListener

        settings = self.settings
        settings.log_problems()
        problems = list(settings.problems)
        sinks, prepare, sink_problems = build_sinks(settings, self.env, self.environment_id)
        problems += sink_problems
        self.ledger = Ledger()
        budget = MemoryBudget(settings.buffer_max_bytes)
        self.buffer = RecordBuffer(self.environment_id, budget, settings.flush_max_records, settings.flush_max_bytes)
        self.store = Store(self.buffer, budget, self._open_spool(), sinks=list(sinks))
        self.dispatcher = Dispatcher(
            sinks,
            self.ledger,
            self.store,
            settings.retry_max_attempts,
            breaker_max_s=settings.breaker_max_s,
            fair_budget_s=settings.flush_timeout_s,
        )
        for name, count in self.store.adopt().items():
            self.ledger.sink(name).adopted += count
        self.ledger.replayed = self.store.replayed
        self.tracker = RuntimeDoneTracker()
        self.tracker.on_runtime_done = self._runtime_done
        enricher = Enricher(settings.function_name, settings.function_version, self.environment_id)
        self.ingest = Ingest(
            self.store,
            self.ledger,
            enricher,
            settings.max_record_bytes,
            prepare=prepare,
            on_handler_done=self._client_handler_done,
            on_handler_started=self._client_handler_started,
            health=self.health,
            redactor=Redactor(settings.redact, settings.redact_key),
        )
        if settings.metrics:
            self.metrics = MetricsEmitter(settings.metrics_namespace, settings.function_name)
        self.http = HTTPServer(self.ingest.handle_http, settings.max_request_bytes, on_refused=self._refused)
        await self.http.start("127.0.0.1", settings.port)
        self._servers.append(self.http)
        self._servers.append(await start_socket_server(self.ingest, settings.socket_path))
        telemetry_server = TelemetryListener(self.tracker.deliver, 4 * 1024 * 1024)
        telemetry_port = await telemetry_server.start(telemetry_bind_address(), 0)
        self._servers.append(telemetry_server)
        assert self.api is not None
        self.telemetry_enabled = await self.api.subscribe_telemetry(telemetry_port)
        return problems

    def _open_spool(self) -> Any:
        """The write-ahead spool, or None (memory only) when it is off or cannot be used safely."""
        if self.settings.spool_max_bytes <= 0:
            return None
        from capture_ext.core.spool import Spool

        spool = Spool(
            self.settings.spool_dir, self.settings.spool_max_bytes, self.settings.spool_fsync, self.environment_id
        )
        try:
            spool.open()
        except OSError as exc:
            logger.error("spool disabled, records are held in memory only: %s", exc)
            return None
        return spool

    # -- the event loop ------------------------------------------------------------------------
    async def _event_loop(self) -> int:
        assert self.api is not None
        while True:
            try:
                event = await self.api.next_event()
            except (LambdaAPIError, OSError) as exc:
                logger.error("lost the Extensions API (%s); exiting", exc)
                await self._stop_servers()
                return 1
            if event.event_type == "INVOKE":
                self.invokes += 1
                logs.current_request_id = event.request_id  # JSON log lines carry it
                self.ingest.enricher.invoke_trace = (event.request_id, event.trace_id)
                if self.telemetry_enabled and self.settings.hold_socket:
                    await self._hold_records(event.request_id)
                await self.on_invoke(event)
            elif event.event_type == "SHUTDOWN":
                await self.on_shutdown(event)
                return 0
            else:
                logger.warning("ignoring unknown event type %r", event.event_type)

    def _refused(self, reason: str) -> None:
        """A request the HTTP server refused before ingest saw it: counted like any other refusal."""
        self.ledger.rejected[reason] += 1

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

    def _client_handler_done(self, request_id: str) -> None:
        """The client's handler-done line. With telemetry it is only a fallback (the handler
        returning is not the runtime being done: a wrapper may still run, the response is still
        being sent), used when runtimeDone does not come within a grace period."""
        self.tracker.mark_done(request_id, from_client=True)

    def _client_handler_started(self, request_id: str) -> None:
        self.tracker.mark_started(request_id)

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
        """Drain everything we can before the deadline (minus the safety margin), then close."""
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
        await self._stop_servers()
        close_reserve = min(0.2, max(deadline - time.monotonic(), 0) / 4)
        try:
            await self.flush(deadline - close_reserve, "shutdown", ignore_breakers=True)
        except Exception:  # still close the sinks and sync the spool: what is left stays on disk
            logger.exception("SHUTDOWN drain failed; undelivered records stay in the spool")
        await self.dispatcher.close(max(deadline - time.monotonic(), 0.01))
        self.store.close()
        left = sum(self.dispatcher.backlog().values()) + len(self.buffer)
        if left and self.store.durable:
            logger.warning(
                "SHUTDOWN: %d records not delivered before the deadline are kept in the spool %s "
                "for the next start in this environment",
                left,
                self.settings.spool_dir,
            )
        elif left:
            logger.error("SHUTDOWN: %d records could not be delivered before the deadline", left)
        left_ms = (deadline - time.monotonic()) * 1000 + self.settings.shutdown_margin_ms
        logger.info("SHUTDOWN done %.0f ms before the deadline: %s", left_ms, self.health())
        self.shut_down = True

    def _monotonic_deadline(self, deadline_ms: int) -> float:
        if deadline_ms <= 0:
            return time.monotonic() + 3.0
        return time.monotonic() + (deadline_ms / 1000 - time.time())

    async def _stop_servers(self) -> None:
        if self.api is not None:
            self.api.close()
        for server in self._servers:
            close = server.close()
            if asyncio.iscoroutine(close):
                await close
        self._servers.clear()
        with contextlib.suppress(OSError):
            os.unlink(self.settings.socket_path)

    # -- observability -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        hot, cold = self.dispatcher.backlog_split()
        body = self.ledger.health(len(self.buffer), hot, cold, states=self.dispatcher.states_by_name())
        body["store"] = self.store.describe()
        body.update(
            status="ok",
            environment_id=self.environment_id,
            telemetry=self.telemetry_enabled,
            invokes=self.invokes,
            ready_ms=round(self.ready_ms, 1),
        )
        return body


def _with_function(settings: Settings, name: str, version: str) -> Settings:
    from dataclasses import replace

    # Sinks derive their defaults from the name (the cloudwatch log group) when they are built, after this.
    return replace(settings, function_name=name, function_version=version or settings.function_version)


def install_signal_handlers(loop: asyncio.AbstractEventLoop, task: asyncio.Task[int]) -> None:
    """SIGTERM/SIGINT outside Lambda (local runs): stop the task; Lambda itself sends SHUTDOWN."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
