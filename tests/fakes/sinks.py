"""The one in-memory sink the core's tests use: it answers from a script and records what it saw.

It stands in for the sink contract (``capture_ext.models.Sink``), not for AWS: tests that need
a real backend use the real sinks against moto's server. One class for every core test, so a
change to the contract is made once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from capture_ext.models import Batch, WriteResult

#: One scripted answer: a result, an exception to raise, or a function of the batch giving either.
Answer = WriteResult | BaseException | Callable[[Batch], Any]


class ScriptedSink:
    """Answers ``write_batch`` from ``script`` (then OK), or retryable while ``down`` is set.

    ``seen`` is every batch offered; ``delivered`` the inference ids that landed (all of an OK
    batch, all but the failed ids of a partial answer); ``batches`` the ids of batches that landed.
    """

    def __init__(self, name: str, script: Iterable[Answer] = (), delay: float = 0.0) -> None:
        self.name = name
        self.script: list[Answer] = list(script)
        self.delay = delay
        self.down = False  # while set, every write is refused as retryable (a 503 SlowDown)
        self.retry_after_s: float | None = None  # the hint sent with that refusal
        self.seen: list[Batch] = []
        self.delivered: list[str] = []
        self.batches: list[str] = []
        self.started = 0
        self.closed = False

    async def start(self) -> None:
        self.started += 1

    async def write_batch(self, batch: Batch) -> WriteResult:
        self.seen.append(batch)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return WriteResult.retryable("503 SlowDown", retry_after_s=self.retry_after_s)
        result = self.script.pop(0) if self.script else WriteResult.ok()
        if callable(result):
            result = result(batch)
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, WriteResult)
        failed = set(result.failed_ids) if not result.is_ok else set()
        if result.is_ok or result.failed_ids:
            self.delivered += [r["inference_id"] for r in batch.records if r["inference_id"] not in failed]
        if result.is_ok:
            self.batches.append(batch.batch_id)
        return result

    async def close(self, timeout_s: float) -> None:
        self.closed = True
