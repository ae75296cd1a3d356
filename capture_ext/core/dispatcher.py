"""Fan-out of sealed batches to every sink, with retries, deadlines and isolation.

Each sink has its own backlog, its own retry state and its own circuit breaker, and all sinks are
drained concurrently: a slow or failing sink never holds up the others. Retries use capped
exponential backoff with full jitter, honour the sink's ``retry_after_s`` hint, resend only the
records that failed, and never run past the deadline they are given. A batch that still fails
when the flush ends stays in the backlog for the next flush: only a ``FATAL`` answer (or the
memory bound, counted elsewhere) drops records.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capture_ext.core.buffer import MemoryBudget, SealedBatch
from capture_ext.core.ledger import Ledger, SinkLedger
from capture_ext.models import Batch, Outcome, Sink, WriteResult

if TYPE_CHECKING:
    from capture_ext.core.store import Store

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
BREAKER_BASE_S = 1.0
BREAKER_CAP_S = 300.0


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
        budget: MemoryBudget,
        max_attempts: int = 5,
        rng: random.Random | None = None,
        store: Store | None = None,
        breaker_max_s: float = BREAKER_CAP_S,
    ) -> None:
        self.breaker_max_s = breaker_max_s
        self.ledger = ledger
        self.budget = budget
        self.store = store
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()
        self.states = {name: SinkState(name, sink, ledger.sink(name)) for name, sink in sinks.items()}

    # -- bookkeeping ------------------------------------------------------------------------
    def enqueue(self, sealed: list[SealedBatch], sinks: Iterable[str] | None = None) -> None:
        """Hand sealed batches to the backlog of every sink (or of ``sinks`` only)."""
        states = list(self.states.values()) if sinks is None else [self.states[n] for n in sinks if n in self.states]
        for item in sealed:
            if not states:
                self._release(item)
                continue
            for state in states:
                item.holders += 1
                state.backlog.append(Pending(item))

    def _done_with(self, pending: Pending) -> None:
        if pending.subset is not None:
            pending.sealed.busy -= 1
        pending.sealed.holders -= 1
        if pending.sealed.holders <= 0:
            self._release(pending.sealed)

    def _release(self, sealed: SealedBatch) -> None:
        if self.store is not None:
            self.store.release(sealed)
        elif sealed.batch is not None:
            self.budget.release(sealed.size)

    def backlog(self) -> dict[str, int]:
        return {name: state.pending_records for name, state in self.states.items()}

    def backlog_split(self) -> tuple[dict[str, int], dict[str, int]]:
        """Records waiting per sink: (held in memory, held on disk only)."""
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
        now = time.monotonic() if now is None else now
        return any(s.backlog and (ignore_breakers or s.retry_at <= now) for s in self.states.values())

    # -- flushing ---------------------------------------------------------------------------
    async def flush(self, deadline: float, ignore_breakers: bool = False) -> FlushReport:
        """Drain every sink's backlog until done or until ``deadline`` (monotonic seconds)."""
        started = time.monotonic()
        report = FlushReport()
        before = {
            name: (s.ledger.delivered, sum(s.ledger.dropped.values()), s.ledger.retried)
            for name, s in self.states.items()
        }
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
            pending = state.backlog[0]
            sealed = pending.sealed
            sealed.busy += 1
            try:
                batch = pending.subset if pending.subset is not None else sealed.batch
                if batch is None:
                    batch = await self._load(state, pending, deadline)
                if batch is None:
                    if state.backlog and state.backlog[0] is pending:
                        return  # out of time before it was read back
                    continue  # unreadable: dropped and counted by _load
                result = await self._write(state, batch, deadline)
            finally:
                sealed.busy -= 1
            if result.outcome is Outcome.OK:
                state.ledger.delivered += len(batch)
                self._acked(state, pending)
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
                self._acked(state, pending)
                self._finish(state)
                continue
            attempts += 1
            retry = self._failed_part(batch, result)
            state.ledger.delivered += len(batch) - len(retry)
            state.ledger.retried += len(retry)
            if pending.subset is None:
                sealed.busy += 1  # partly delivered: keep it in memory until this sink is done
            pending.subset = retry
            state.last_error = result.error or "retryable error"
            delay = self._backoff(attempts, result.retry_after_s)
            if attempts >= self.max_attempts or time.monotonic() + delay >= deadline:
                self._open_breaker(state, result.retry_after_s)
                return
            logger.warning(
                "sink %s: batch %s attempt %d failed (%s); retrying %d records in %.0f ms",
                state.name,
                retry.batch_id,
                retry.attempt - 1,
                state.last_error,
                len(retry),
                delay * 1000,
            )
            await asyncio.sleep(delay)

    def _finish(self, state: SinkState) -> None:
        self._done_with(state.backlog.popleft())

    def _acked(self, state: SinkState, pending: Pending) -> None:
        if self.store is not None:
            self.store.acked(pending.sealed, state.name)

    async def _load(self, state: SinkState, pending: Pending, deadline: float) -> Batch | None:
        """Read a batch that waits on disk only; a segment that cannot be read drops it, counted."""
        assert self.store is not None, "a cold batch without a store"
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
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                await state.sink.start()
        except Exception as exc:
            state.last_error = f"start failed: {type(exc).__name__}: {exc}"
            logger.error("sink %s: %s", state.name, state.last_error)
            self._open_breaker(state)
            return False
        state.started = True
        return True

    async def _write(self, state: SinkState, batch: Batch, deadline: float) -> WriteResult:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return WriteResult.retryable("deadline reached before the write")
        try:
            async with asyncio.timeout(remaining):
                result = await state.sink.write_batch(batch)
        except TimeoutError:
            return WriteResult.retryable(f"write did not finish within {remaining * 1000:.0f} ms")
        except Exception as exc:
            logger.exception("sink %s raised from write_batch; treating as retryable", state.name)
            return WriteResult.retryable(f"{type(exc).__name__}: {exc}")
        if not isinstance(result, WriteResult):
            return WriteResult.retryable(f"write_batch returned {type(result).__name__}, not WriteResult")
        return result

    def _failed_part(self, batch: Batch, result: WriteResult) -> Batch:
        if result.failed_ids:
            subset = batch.subset(set(result.failed_ids), batch.attempt + 1)
            if len(subset):
                return subset
        return Batch(batch.batch_id, batch.environment_id, batch.sequence, batch.records, batch.attempt + 1)

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
            except Exception as exc:
                logger.warning("sink %s: close failed: %s", state.name, exc)

        await asyncio.gather(*(close_one(s) for s in self.states.values()))

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            name: {"state": s.state(now), "pending": s.pending_records, "last_error": s.last_error}
            for name, s in self.states.items()
        }
