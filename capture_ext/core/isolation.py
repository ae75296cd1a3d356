"""Keeping a third-party sink's faults its own: a private loop per sink, copies, a watchdog.

A plugin sink is code the extension cannot trust to follow the contract (docs/plugins.md). Each
one runs on its own event loop in its own daemon thread, behind :class:`IsolatedSink`, which the
dispatcher sees as an ordinary sink:

- a sink that blocks its loop (``time.sleep``, blocking I/O) stalls its own thread only; the
  extension's loop, the other sinks and the function's socket keep running;
- a sink that swallows cancellation, or never returns, is abandoned at the deadline: the caller
  gets its answer on time and the sink is marked busy (later calls fail at once, counted as the
  sink's faults and named) until its stuck call ends;
- whatever it raises (``SystemExit``, ``KeyboardInterrupt``, a ``CancelledError`` of its own)
  becomes a failure of that call, never of the thread or the extension;
- it gets its own copy of each batch's records, so a sink that mutates them cannot change what
  the other sinks store or what a retry resends.

Built-in sinks are contract-tested and run inline on the extension's loop (no thread hop, no
copy); :class:`LoopWatchdog` names any code that blocks that loop during a flush.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import pickle
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from capture_ext.models import Batch, Record, Sink, WriteResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a plugin's sink factory may take (it runs during the function's init).
FACTORY_TIMEOUT_S = 3.0
#: The extension's loop not turning for this long during a flush is reported, naming the culprit.
BLOCKED_LOOP_S = 0.5


class SinkFault(Exception):
    """A sink's call ended with something that is not an ordinary exception (``SystemExit`` …)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"{what} raised {type(exc).__name__}: {exc}")
        self.original = exc


def describe(exc: BaseException) -> str:
    """``Type: message`` of the exception a sink really raised."""
    original = exc.original if isinstance(exc, SinkFault) else exc
    text = str(original)
    return f"{type(original).__name__}: {text}" if text else type(original).__name__


def copy_records(records: tuple[Record, ...]) -> tuple[Record, ...]:
    """Deep copies of ``records`` (a pickle round trip: several times faster than ``deepcopy``)."""
    try:
        copied: tuple[Record, ...] = pickle.loads(pickle.dumps(records, pickle.HIGHEST_PROTOCOL))
    except Exception:  # records hold only JSON values; this is belt and braces
        return copy.deepcopy(records)
    return copied


class SinkThread:
    """A daemon thread running a private event loop for one sink."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"capture-sink-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            while True:
                try:
                    self.loop.run_forever()
                    break
                except BaseException as exc:  # a KeyboardInterrupt escaping a callback: keep serving
                    logger.error("sink %s: its event loop was interrupted by %s; restarted", self.name, describe(exc))
        finally:
            self.loop.close()  # stopped only when idle: nothing is left to run

    def call(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run the plain function ``fn(*args)`` in this thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                fault = exc if isinstance(exc, Exception) else SinkFault(getattr(fn, "__name__", "factory"), exc)
                future.set_exception(fault)

        self.loop.call_soon_threadsafe(run)
        return future

    def submit(
        self, what: str, make: Callable[[], Awaitable[T]], idle: threading.Event
    ) -> concurrent.futures.Future[T]:
        """Run the coroutine ``make()`` on this loop; ``idle`` is set when it has really ended."""

        async def guarded() -> T:
            try:
                return await make()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the caller's deadline: a real cancellation
                raise SinkFault(what, asyncio.CancelledError()) from None
            except (KeyboardInterrupt, SystemExit, GeneratorExit) as exc:
                raise SinkFault(what, exc) from None
            finally:
                idle.set()

        idle.clear()
        return asyncio.run_coroutine_threadsafe(guarded(), self.loop)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)


class IsolatedSink:
    """A third-party sink on its own loop and thread, seen by the dispatcher as a plain sink."""

    def __init__(self, name: str, sink: Sink, thread: SinkThread) -> None:
        self.name = name
        self.inner = sink
        self.thread = thread
        self._idle = threading.Event()
        self._idle.set()
        self._stuck_in = ""

    @classmethod
    def build(
        cls, name: str, factory: Callable[[Any], Sink], context: Any, timeout_s: float = FACTORY_TIMEOUT_S
    ) -> IsolatedSink:
        """Call a plugin's factory in the sink's own thread, waiting at most ``timeout_s``.

        Raises ``TimeoutError`` when the factory hangs (its thread is abandoned) and whatever
        the factory raised, ``BaseException`` turned into :class:`SinkFault`, otherwise.
        """
        thread = SinkThread(name)
        try:
            sink = thread.call(factory, context).result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            thread.stop()
            raise TimeoutError(f"its factory did not return within {timeout_s:.0f} s") from None
        except BaseException:
            thread.stop()
            raise
        return cls(name, sink, thread)

    @property
    def busy(self) -> bool:
        """A call that ignored its deadline is still running in the sink's thread."""
        return not self._idle.is_set()

    async def _run(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        if self.busy:
            raise SinkFault(what, RuntimeError(f"still running {self._stuck_in}, which ignored its deadline"))
        future = self.thread.submit(what, make, self._idle)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            if not self._idle.wait(0.05):
                self._stuck_in = f"{what}()"
                logger.error(
                    "sink %s: %s() did not stop at its deadline (it blocks or ignores cancellation); "
                    "it is abandoned in its own thread and the sink is skipped until it returns",
                    self.name,
                    what,
                )
            raise

    async def start(self) -> None:
        await self._run("start", self.inner.start)

    async def write_batch(self, batch: Batch) -> WriteResult:
        own = Batch(batch.batch_id, batch.environment_id, batch.sequence, copy_records(batch.records), batch.attempt)
        return await self._run("write_batch", lambda: self.inner.write_batch(own))

    async def close(self, timeout_s: float) -> None:
        try:
            if not self.busy:
                await self._run("close", lambda: self.inner.close(timeout_s))
        finally:
            if not self.busy:
                self.thread.stop()


class LoopWatchdog:
    """Reports (once per episode, naming the sink) the extension's loop being blocked in a flush.

    Armed only while a flush runs: between invokes Lambda freezes the environment, and a
    heartbeat then would read as a blocked loop.
    """

    def __init__(self, sinks: Mapping[str, Any], threshold_s: float = BLOCKED_LOOP_S) -> None:
        self.sinks = sinks
        self.threshold_s = threshold_s
        #: Blocked episodes by culprit (a sink name, or "file:line" of other code).
        self.blocked: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def armed(self) -> Any:
        """Watch the running loop for the duration of the block.

        The watching thread posts a callback and waits for the loop to run it; no timer is added
        to the loop, so a flush is scheduled exactly as without the watchdog.
        """
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        stop = threading.Event()

        def watch() -> None:
            reported = False
            while not stop.is_set():
                answered = threading.Event()
                posted = time.monotonic()
                try:
                    loop.call_soon_threadsafe(answered.set)
                except RuntimeError:  # the loop is closed
                    return
                while not answered.wait(self.threshold_s / 5):
                    if stop.is_set():
                        return
                    stalled = time.monotonic() - posted
                    if stalled >= self.threshold_s and not reported:
                        reported = True
                        self._report(loop_thread, stalled)
                reported = False
                stop.wait(self.threshold_s / 5)

        watcher = threading.Thread(target=watch, name="capture-loop-watchdog", daemon=True)
        watcher.start()
        try:
            yield self
        finally:
            stop.set()

    def culprit(self, thread_id: int) -> str:
        """The sink (or else the innermost code) the loop's thread is running now."""
        frame = sys._current_frames().get(thread_id)
        by_id = {id(sink): name for name, sink in self.sinks.items()}
        innermost = ""
        for current in _frames(frame):
            if not innermost:
                innermost = f"{current.f_code.co_filename}:{current.f_lineno}"
            owner = current.f_locals.get("self")
            if owner is not None and id(owner) in by_id:
                return f"sink {by_id[id(owner)]}"
        return innermost or "unknown code"

    def _report(self, thread_id: int, stalled: float) -> None:
        culprit = self.culprit(thread_id)
        self.blocked[culprit] = self.blocked.get(culprit, 0) + 1
        logger.error(
            "the extension's event loop has been blocked for %.0f ms by %s: sinks must not block "
            "(use await, or asyncio.to_thread for blocking calls)",
            stalled * 1000,
            culprit,
        )


def _frames(frame: Any) -> Iterator[Any]:
    """From the innermost frame outwards."""
    while frame is not None:
        yield frame
        frame = frame.f_back
