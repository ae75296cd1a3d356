"""Opening the extension's resources in order, and closing them in reverse, with one exit stack.

Each resource is opened by one step and its close is pushed onto a
:class:`contextlib.AsyncExitStack` at once, so whatever happens later (a port already taken, a
socket directory that cannot be created, a SHUTDOWN) closes exactly what was opened, newest
first: the listeners, then the sinks (within the time the SHUTDOWN left), then the spool (synced,
its lock released), then the Extensions API connection. The result is a frozen :class:`Runtime`
that the event loop (``core/lifecycle.py``) takes; nothing in it is set later. The order and what
happens when a step fails are in docs/architecture.md, "Start-up and clean-up".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capture_ext.core.config import Settings
from capture_ext.core.lambda_api import ExtensionsAPI, telemetry_bind_address

if TYPE_CHECKING:
    from capture_ext.core.buffer import RecordBuffer
    from capture_ext.core.dispatcher import Dispatcher
    from capture_ext.core.ingest import Ingest
    from capture_ext.core.ledger import Ledger
    from capture_ext.core.metrics import MetricsEmitter
    from capture_ext.core.spool import Spool
    from capture_ext.core.store import Store
    from capture_ext.core.telemetry import RuntimeDoneTracker

logger = logging.getLogger("capture_ext")

#: Time the sinks get to close when the extension stops outside a SHUTDOWN (which sets its own).
CLOSE_BUDGET_S = 0.5


class StartError(RuntimeError):
    """A resource could not be opened; the message names it and says why, on one line."""


@dataclass(slots=True)
class Progress:
    """What the event loop learns while it runs; ``/v1/health`` reports it."""

    invokes: int = 0
    ready_ms: float = 0.0
    #: Monotonic time by which the sinks must be closed (set by SHUTDOWN; otherwise CLOSE_BUDGET_S).
    close_by: float | None = None


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the event loop works with, opened and ready; closed by the stack that opened it."""

    settings: Settings
    environment_id: str
    api: ExtensionsAPI
    ledger: Ledger
    buffer: RecordBuffer
    store: Store
    dispatcher: Dispatcher
    tracker: RuntimeDoneTracker
    ingest: Ingest
    metrics: MetricsEmitter | None
    telemetry_enabled: bool
    #: The listeners (telemetry, HTTP, socket): SHUTDOWN closes them before its drain.
    listeners: contextlib.AsyncExitStack
    #: Configuration problems (``CAPTURE_STRICT=1`` turns them into an init error).
    problems: tuple[str, ...]
    progress: Progress

    def health(self) -> dict[str, Any]:
        return _health(
            self.ledger,
            self.buffer,
            self.store,
            self.dispatcher,
            self.environment_id,
            self.telemetry_enabled,
            self.progress,
        )


def _health(
    ledger: Ledger,
    buffer: RecordBuffer,
    store: Store,
    dispatcher: Dispatcher,
    environment_id: str,
    telemetry: bool,
    progress: Progress,
) -> dict[str, Any]:
    hot, cold = dispatcher.backlog_split()
    body = ledger.health(len(buffer), hot, cold, states=dispatcher.states_by_name())
    body["store"] = store.describe()
    body.update(
        status="ok",
        environment_id=environment_id,
        telemetry=telemetry,
        invokes=progress.invokes,
        ready_ms=round(progress.ready_ms, 1),
    )
    return body


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Turn a failure to open ``what`` into a StartError naming it."""
    try:
        yield
    except Exception as exc:
        raise StartError(f"could not open {what}: {exc}") from exc


def push_close(stack: contextlib.AsyncExitStack, what: str, close: Callable[[], Awaitable[None] | None]) -> None:
    """Push ``close`` onto ``stack``, logged so that the order can be followed (and is tested)."""

    async def run() -> None:
        result = close()
        if result is not None:
            await result
        logger.debug("closed %s", what)

    logger.debug("opened %s", what)
    stack.push_async_callback(run)


async def open_runtime(
    stack: contextlib.AsyncExitStack, settings: Settings, env: Mapping[str, str], api: ExtensionsAPI
) -> Runtime:
    """Open every resource in order; their closes go onto ``stack`` only once all are open.

    A step that fails closes what the steps before it opened, newest first, and raises
    StartError. Heavy modules are imported here, after registration, not at import time.
    """
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

    environment_id = os.urandom(8).hex()
    progress = Progress()
    settings.log_problems()
    async with contextlib.AsyncExitStack() as opening:
        ledger = Ledger()
        budget = MemoryBudget(settings.buffer_max_bytes)
        buffer = RecordBuffer(environment_id, budget, settings.flush_max_records, settings.flush_max_bytes)
        spool = _open_spool(settings, environment_id)
        if spool is not None:
            push_close(opening, f"the spool {settings.spool_dir}", lambda: spool.close(unsealed=len(buffer)))
        sinks, prepare, sink_problems = build_sinks(settings, env, environment_id)
        store = Store(buffer, budget, spool, sinks=list(sinks))
        dispatcher = Dispatcher(
            sinks,
            ledger,
            store,
            settings.retry_max_attempts,
            breaker_max_s=settings.breaker_max_s,
            fair_budget_s=settings.flush_timeout_s,
        )

        def close_sinks() -> Awaitable[None]:
            close_by = progress.close_by
            return dispatcher.close(CLOSE_BUDGET_S if close_by is None else max(close_by - time.monotonic(), 0.01))

        push_close(opening, f"the sinks ({','.join(sinks) or 'none'})", close_sinks)
        with _step(f"the spool's earlier batches in {settings.spool_dir}"):
            for name, count in store.adopt().items():
                ledger.sink(name).adopted += count
        ledger.replayed = store.replayed
        tracker = RuntimeDoneTracker()
        listeners = await opening.enter_async_context(contextlib.AsyncExitStack())
        telemetry = TelemetryListener(tracker.deliver, 4 * 1024 * 1024)
        address = telemetry_bind_address()
        with _step(f"the Telemetry listener on {address}"):
            telemetry_port = await telemetry.start(address, 0)
        push_close(listeners, "the Telemetry listener", telemetry.close)
        with _step("the Telemetry API subscription"):
            telemetry_enabled = await api.subscribe_telemetry(telemetry_port)
        ingest = Ingest(
            store,
            ledger,
            Enricher(settings.function_name, settings.function_version, environment_id),
            settings.max_record_bytes,
            prepare=prepare,
            on_handler_done=functools.partial(tracker.mark_done, from_client=True),
            on_handler_started=tracker.mark_started,
            health=functools.partial(
                _health, ledger, buffer, store, dispatcher, environment_id, telemetry_enabled, progress
            ),
            redactor=Redactor(settings.redact, settings.redact_key),
        )

        def refused(reason: str) -> None:
            ledger.rejected[reason] += 1  # refused before ingest saw it: counted like any refusal

        http = HTTPServer(ingest.handle_http, settings.max_request_bytes, on_refused=refused)
        with _step(f"the ingest endpoint 127.0.0.1:{settings.port} (CAPTURE_PORT)"):
            await http.start("127.0.0.1", settings.port)
        push_close(listeners, f"the ingest endpoint 127.0.0.1:{settings.port}", http.close)
        with _step(f"the capture socket {settings.socket_path} (CAPTURE_SOCKET)"):
            socket_server = await start_socket_server(ingest, settings.socket_path)

        def close_socket() -> None:
            socket_server.close()
            with contextlib.suppress(OSError):
                os.unlink(settings.socket_path)

        push_close(listeners, f"the capture socket {settings.socket_path}", close_socket)
        metrics = MetricsEmitter(settings.metrics_namespace, settings.function_name) if settings.metrics else None
        runtime = Runtime(
            settings=settings,
            environment_id=environment_id,
            api=api,
            ledger=ledger,
            buffer=buffer,
            store=store,
            dispatcher=dispatcher,
            tracker=tracker,
            ingest=ingest,
            metrics=metrics,
            telemetry_enabled=telemetry_enabled,
            listeners=listeners,
            problems=(*settings.problems, *sink_problems),
            progress=progress,
        )
        stack.push_async_exit(opening.pop_all())
    return runtime


def _open_spool(settings: Settings, environment_id: str) -> Spool | None:
    """The write-ahead spool, or None (memory only) when it is off or cannot be used safely.

    A spool that cannot be opened is not a start-up failure: records are then held in memory
    only (docs/guarantees.md), with one error line.
    """
    if settings.spool_max_bytes <= 0:
        return None
    from capture_ext.core.spool import Spool

    spool = Spool(settings.spool_dir, settings.spool_max_bytes, settings.spool_fsync, environment_id)
    try:
        spool.open()
    except OSError as exc:
        logger.error("spool disabled, records are held in memory only: %s", exc)
        return None
    return spool
