"""Fan-out of sealed batches to every sink, with retries, deadlines and isolation.

Each sink has its own backlog, its own retry state and its own circuit breaker, and all sinks are
drained concurrently: a slow or failing sink never holds up the others. Retries use capped
exponential backoff with full jitter, honour the sink's ``retry_after_s`` hint, resend only the
records that failed (named by position in the batch, so records that share a client id cannot be
confused), and never run past the deadline they are given. Time the flush did not have is not the
sink's fault: a write that was never started, or was cut short by a budget smaller than a full
flush, leaves the batch waiting without counting as a failure or opening the breaker. A batch that still fails
when the flush ends stays in the backlog for the next flush: only a ``FATAL`` answer (or the
memory bound, counted elsewhere) drops records.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field

from capture_ext.core.buffer import SealedBatch
from capture_ext.core.isolation import LoopWatchdog, describe
from capture_ext.core.ledger import Ledger, SinkLedger
from capture_ext.core.store import Store
from capture_ext.core.write_results import failed_part, well_formed
from capture_ext.models import Batch, Outcome, Sink, WriteResult

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
BREAKER_BASE_S = 1.0
BREAKER_CAP_S = 300.0
#: A write is not started with less time than this left: it could not finish, and a write cut
#: short by the flush's own deadline says nothing about the sink.
MIN_WRITE_S = 0.01


@dataclass(slots=True)
class Pending:
    """One batch waiting for one sink.

    ``subset`` is None while the sink still needs the whole sealed batch (which may be on disk
    only); after a partial failure it holds the records that failed, and pins the batch in memory.
    """

    sealed: SealedBatch
    subset: Batch | None = None

    def __len__(self) -> int:
        return len(self.subset) if self.subset is not None else self.sealed.count

    @property
    def cold(self) -> bool:
        return self.subset is None and self.sealed.batch is None


@dataclass(slots=True)
class SinkState:
    name: str
    sink: Sink
    ledger: SinkLedger
    backlog: deque[Pending] = field(default_factory=deque)
    started: bool = False
    #: Monotonic time before which the breaker keeps this sink out of ordinary flushes.
    retry_at: float = 0.0
    consecutive_failures: int = 0
    last_error: str = ""

    @property
    def pending_records(self) -> int:
        return sum(len(p) for p in self.backlog)

    def state(self, now: float) -> str:
        if self.retry_at > now:
            return "open"
        return "retrying" if self.consecutive_failures else "ok"


@dataclass(slots=True)
class FlushReport:
    """What one flush did, for logs and the EMF metrics line."""

    duration_ms: float = 0.0
    delivered: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        sinks: dict[str, Sink],
        ledger: Ledger,
        store: Store,
        max_attempts: int = 5,
        rng: random.Random | None = None,
        breaker_max_s: float = BREAKER_CAP_S,
        fair_budget_s: float = 2.0,
    ) -> None:
        self.breaker_max_s = breaker_max_s
        #: A write given at least this long that still times out is the sink's failure.
        self.fair_budget_s = fair_budget_s
        self.ledger = ledger
        self.store = store
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()
        self.states = {name: SinkState(name, sink, ledger.sink(name)) for name, sink in sinks.items()}
        self.watchdog = LoopWatchdog(sinks)

    # -- bookkeeping ------------------------------------------------------------------------
    def _intake(self) -> None:
        """Put the store's new batches in the backlog of every sink that needs them."""
        for sealed in self.store.take_new():
            for name in sorted(sealed.waiting):
                state = self.states.get(name)
                if state is None:  # adopted for a sink this process does not have
                    self.store.done(sealed, name)
                else:
                    state.backlog.append(Pending(sealed))

    def _finish(self, state: SinkState) -> None:
        """``state``'s sink is done with the head of its backlog (delivered or dropped)."""
        pending = state.backlog.popleft()
        if pending.subset is not None:
            self.store.unpin(pending.sealed)
        self.store.done(pending.sealed, state.name)

    def backlog(self) -> dict[str, int]:
        self._intake()
        return {name: state.pending_records for name, state in self.states.items()}

    def backlog_split(self) -> tuple[dict[str, int], dict[str, int]]:
        """Records waiting per sink: (held in memory, held on disk only)."""
        self._intake()
        hot: dict[str, int] = {}
        cold: dict[str, int] = {}
        for name, state in self.states.items():
            hot[name] = cold[name] = 0
            for pending in state.backlog:
                if pending.cold:
                    cold[name] += len(pending)
                else:
                    hot[name] += len(pending)
        return hot, cold

    def states_by_name(self) -> dict[str, str]:
        now = time.monotonic()
        return {name: state.state(now) for name, state in self.states.items()}

    def has_work(self, now: float | None = None, ignore_breakers: bool = False) -> bool:
        self._intake()
        now = time.monotonic() if now is None else now
        return any(s.backlog and (ignore_breakers or s.retry_at <= now) for s in self.states.values())

    # -- flushing ---------------------------------------------------------------------------
    async def flush(self, deadline: float, ignore_breakers: bool = False) -> FlushReport:
        """Drain every sink's backlog until done or until ``deadline`` (monotonic seconds)."""
        self._intake()
        started = time.monotonic()
        report = FlushReport()
        before = {
            name: (s.ledger.delivered, sum(s.ledger.dropped.values()), s.ledger.retried)
            for name, s in self.states.items()
        }
        async with self.watchdog.armed():
            await asyncio.gather(
                *(self._drain(state, deadline, ignore_breakers) for state in self.states.values()),
            )
        for name, state in self.states.items():
            delivered, dropped, retried = before[name]
            report.delivered[name] = state.ledger.delivered - delivered
            report.dropped[name] = sum(state.ledger.dropped.values()) - dropped
            report.retried[name] = state.ledger.retried - retried
        report.duration_ms = (time.monotonic() - started) * 1000
        self.ledger.flushes += 1
        return report

    async def _drain(self, state: SinkState, deadline: float, ignore_breakers: bool) -> None:
        now = time.monotonic()
        if not state.backlog or (state.retry_at > now and not ignore_breakers):
            return
        if not state.started and not await self._start(state, deadline):
            return
        attempts = 0
        while state.backlog:
            if deadline - time.monotonic() < MIN_WRITE_S:
                return  # no time left: the rest waits, and that is nobody's failure
            pending = state.backlog[0]
            sealed = pending.sealed
            self.store.checkout(sealed)
            try:
                batch = pending.subset if pending.subset is not None else sealed.batch
                if batch is None:
                    batch = await self._load(state, pending, deadline)
                if batch is None:
                    if state.backlog and state.backlog[0] is pending:
                        return  # out of time before it was read back
                    continue  # unreadable: dropped and counted by _load
                budget = deadline - time.monotonic()
                result = await self._write(state, batch, deadline)
            finally:
                self.store.checkin(sealed)
            if result is None:
                return  # cut short by this flush's deadline: try again next flush, no failure
            if result.outcome is Outcome.OK:
                state.ledger.delivered += len(batch)
                self._finish(state)
                state.consecutive_failures = 0
                attempts = 0
                continue
            if result.outcome is Outcome.FATAL:
                logger.error(
                    "sink %s: dropping %d records of batch %s: %s",
                    state.name,
                    len(batch),
                    batch.batch_id,
                    result.error,
                )
                state.ledger.dropped["fatal"] += len(batch)
                self._finish(state)
                continue
            attempts += 1
            retry = failed_part(batch, result)
            state.ledger.delivered += len(batch) - len(retry)
            state.ledger.retried += len(retry)
            if pending.subset is None:
                self.store.pin(sealed)  # partly delivered: keep it in memory until this sink is done
            pending.subset = retry
            state.last_error = result.error or "retryable error"
            delay = self._backoff(attempts, result.retry_after_s)
            if attempts >= self.max_attempts or time.monotonic() + delay >= deadline:
                self._open_breaker(state, result.retry_after_s)
                return
            logger.warning(
                "sink %s: batch %s attempt %d failed (%s); retrying %d records in %.0f ms (budget %.0f ms)",
                state.name,
                retry.batch_id,
                retry.attempt - 1,
                state.last_error,
                len(retry),
                delay * 1000,
                budget * 1000,
            )
            await asyncio.sleep(delay)

    async def _load(self, state: SinkState, pending: Pending, deadline: float) -> Batch | None:
        """Read a batch that waits on disk only; a segment that cannot be read drops it, counted."""
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await self.store.load(pending.sealed)
        except TimeoutError:
            return None
        except (OSError, ValueError) as exc:
            logger.error(
                "sink %s: batch %s cannot be read back from the spool (%s)", state.name, pending.sealed.batch_id, exc
            )
            state.ledger.dropped["spool_lost"] += len(pending)
            self._finish(state)
            return None

    async def warm_up(self, deadline: float) -> None:
        """Start every sink now (open clients, import SDKs) so the first flush is not a cold one."""
        cold = [state for state in self.states.values() if not state.started]
        await asyncio.gather(*(self._start(state, deadline) for state in cold))

    async def _start(self, state: SinkState, deadline: float) -> bool:
        budget = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(budget, 0.001)):
                await state.sink.start()
        except TimeoutError:
            state.last_error = f"start() did not finish within {budget * 1000:.0f} ms"
            if budget >= self.fair_budget_s:  # else the flush had too little time: not the sink's fault
                state.ledger.faults += 1
            logger.error("sink %s: %s", state.name, state.last_error)
            self._open_breaker(state)
            return False
        except BaseException as exc:
            state.last_error = f"start failed: {self._fault(state, 'start', exc)}"
            self._open_breaker(state)
            return False
        state.started = True
        return True

    async def _write(self, state: SinkState, batch: Batch, deadline: float) -> WriteResult | None:
        """The sink's answer, classified; None when this flush's deadline cut a fair write short."""
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(remaining):
                result = await state.sink.write_batch(batch)
        except TimeoutError:
            # Judged by the time this write had, not the flush's: a sink that hangs on a write
            # given half a flush budget or more has failed, whatever the flush had left after it.
            if remaining < self.fair_budget_s / 2:
                logger.info(
                    "sink %s: batch %s cut short by the flush deadline after %.0f ms; it waits for the next flush",
                    state.name,
                    batch.batch_id,
                    remaining * 1000,
                )
                return None
            return WriteResult.retryable(f"write did not finish within {remaining * 1000:.0f} ms")
        except BaseException as exc:
            return WriteResult.retryable(self._fault(state, "write_batch", exc))
        if not isinstance(result, WriteResult):
            return WriteResult.retryable(f"write_batch returned {type(result).__name__}, not WriteResult")
        return well_formed(result, len(batch), state.name)

    def _fault(self, state: SinkState, what: str, exc: BaseException) -> str:
        """Count and name, in one line, a sink's own code raising; re-raise a real cancellation.

        Anything a sink raises is its failure alone: ``SystemExit``, ``KeyboardInterrupt`` and a
        ``CancelledError`` nobody asked for included. Only the cancellation of the flush itself
        (the extension is being stopped) goes on up.
        """
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise exc
        error = describe(exc)
        state.ledger.faults += 1
        logger.error("sink %s raised from %s(), counted as its failure: %s", state.name, what, error)
        logger.debug("sink %s: %s() traceback", state.name, what, exc_info=exc)
        return error

    def _backoff(self, attempt: int, hint: float | None) -> float:
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        delay = self.rng.uniform(ceiling / 2, ceiling)
        return max(delay, hint or 0.0)

    def _open_breaker(self, state: SinkState, hint: float | None = None) -> None:
        state.consecutive_failures += 1
        cap = self.breaker_max_s
        pause = min(cap, BREAKER_BASE_S * 2 ** min(state.consecutive_failures - 1, 30))
        pause = max(pause, min(hint or 0.0, cap))  # the service said when to come back
        state.retry_at = time.monotonic() + pause
        logger.warning(
            "sink %s: %d records kept for a later flush (%s); next attempt in %.0f s",
            state.name,
            state.pending_records,
            state.last_error,
            pause,
        )

    async def close(self, timeout_s: float) -> None:
        """Close every sink concurrently; a sink that hangs is abandoned at the timeout."""

        async def close_one(state: SinkState) -> None:
            try:
                async with asyncio.timeout(max(timeout_s, 0.001)):
                    await state.sink.close(timeout_s)
            except TimeoutError:
                state.ledger.faults += 1
                logger.error("sink %s: close() did not finish within %.0f ms; abandoned", state.name, timeout_s * 1000)
            except BaseException as exc:
                self._fault(state, "close", exc)

        async with self.watchdog.armed():
            await asyncio.gather(*(close_one(s) for s in self.states.values()))
