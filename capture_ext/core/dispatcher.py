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
from dataclasses import dataclass, field
from typing import Any

from capture_ext.core.buffer import MemoryBudget, SealedBatch
from capture_ext.core.ledger import Ledger, SinkLedger
from capture_ext.models import Batch, Outcome, Sink, WriteResult

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
BREAKER_BASE_S = 1.0
BREAKER_CAP_S = 300.0


@dataclass(slots=True)
class Pending:
    """One batch waiting for one sink (possibly only the records that failed last time)."""

    sealed: SealedBatch
    batch: Batch


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
        return sum(len(p.batch) for p in self.backlog)

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
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()
        self.states = {name: SinkState(name, sink, ledger.sink(name)) for name, sink in sinks.items()}

    # -- bookkeeping ------------------------------------------------------------------------
    def enqueue(self, sealed: list[SealedBatch]) -> None:
        """Hand freshly sealed batches to every sink's backlog."""
        for item in sealed:
            if not self.states:
                self.budget.release(item.size)
                continue
            for state in self.states.values():
                item.holders += 1
                state.backlog.append(Pending(item, item.batch))

    def _done_with(self, pending: Pending) -> None:
        pending.sealed.holders -= 1
        if pending.sealed.holders <= 0:
            self.budget.release(pending.sealed.size)

    def backlog(self) -> dict[str, int]:
        return {name: state.pending_records for name, state in self.states.items()}

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
            result = await self._write(state, pending.batch, deadline)
            if result.outcome is Outcome.OK:
                state.ledger.delivered += len(pending.batch)
                self._finish(state)
                state.consecutive_failures = 0
                attempts = 0
                continue
            if result.outcome is Outcome.FATAL:
                logger.error(
                    "sink %s: dropping %d records of batch %s: %s",
                    state.name,
                    len(pending.batch),
                    pending.batch.batch_id,
                    result.error,
                )
                state.ledger.dropped["fatal"] += len(pending.batch)
                self._finish(state)
                continue
            attempts += 1
            retry = self._failed_part(pending.batch, result)
            state.ledger.delivered += len(pending.batch) - len(retry)
            state.ledger.retried += len(retry)
            pending.batch = retry
            state.last_error = result.error or "retryable error"
            delay = self._backoff(attempts, result.retry_after_s)
            if attempts >= self.max_attempts or time.monotonic() + delay >= deadline:
                self._open_breaker(state)
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

    def _open_breaker(self, state: SinkState) -> None:
        state.consecutive_failures += 1
        pause = min(BREAKER_CAP_S, BREAKER_BASE_S * 2 ** (state.consecutive_failures - 1))
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
