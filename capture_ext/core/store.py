"""Where accepted records live until every sink has them: bounded memory in front of the spool.

With the spool on, every record is on disk before it is acknowledged and memory is only a
cache: when ``CAPTURE_BUFFER_MAX_BYTES`` is reached, the newest sealed batches that no sink is
writing are dropped from memory (they stay on disk, *spooled*) and are read back when a sink
gets to them. A record is refused only when the spool itself is full (``spool_full``).

Without the spool (``CAPTURE_SPOOL_MAX_BYTES=0``, or a spool that cannot be used) records are
held in memory only, and the memory bound refuses new ones (``buffer_full``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from capture_ext.core.buffer import MemoryBudget, RecordBuffer, SealedBatch
from capture_ext.core.spool import Spool
from capture_ext.models import Batch, Record

logger = logging.getLogger(__name__)

Enqueue = Callable[[list[SealedBatch], Iterable[str] | None], None]


class Store:
    def __init__(self, buffer: RecordBuffer, budget: MemoryBudget, spool: Spool | None = None) -> None:
        self.buffer = buffer
        self.budget = budget
        self.spool = spool
        #: Free memory kept after moving batches to disk, so pressure does not cut tiny batches.
        self.headroom = min(buffer.max_bytes, budget.limit // 4)
        self.enqueue: Enqueue = lambda sealed, sinks: None
        self._hot: dict[int, SealedBatch] = {}
        self._order = itertools.count(1)
        self.evicted = 0
        self.loaded = 0
        #: Records adopted from earlier processes (each counted once, whatever the sinks).
        self.replayed = 0

    @property
    def durable(self) -> bool:
        return self.spool is not None and not self.spool.broken

    # -- accepting -----------------------------------------------------------------------------
    def add(self, items: list[tuple[Record, bytes]]) -> tuple[int, str]:
        """Keep ``(record, json_bytes)`` pairs; returns (how many were kept, why the rest were not).

        With the spool, a call is all or nothing: the lines are written in one ``write``.
        """
        if self.durable:
            assert self.spool is not None
            ends = self.spool.append([data for _, data in items])
            if ends is not None:
                for (record, data), end in zip(items, ends, strict=True):
                    self.buffer.add_spooled(record, len(data), end)
                if self.budget.used > self.budget.limit:
                    self.relieve()
                return len(items), ""
            if not self.spool.broken:
                return 0, "spool_full"
        kept = 0
        for record, data in items:
            if not self.buffer.add(record, len(data)):
                return kept, "buffer_full"
            kept += 1
        return kept, ""

    def relieve(self) -> None:
        """Bring memory back under the bound by leaving the newest batches on disk only."""
        target = self.budget.limit - self.headroom
        self._evict(target)
        if self.budget.used > self.budget.limit and len(self.buffer):
            self.seal()
            self._evict(target)

    def _evict(self, target: int) -> None:
        for order in sorted(self._hot, reverse=True):
            if self.budget.used <= target:
                return
            sealed = self._hot[order]
            if sealed.busy or sealed.location is None or sealed.batch is None:
                continue
            sealed.batch = None
            del self._hot[order]
            self.budget.release(sealed.size)
            self.evicted += 1

    # -- sealing and handing over --------------------------------------------------------------
    def seal(self) -> list[SealedBatch]:
        """Seal the buffer into batches, write their seal lines, and give them to the sinks."""
        sealed = self.buffer.seal()
        for item in sealed:
            item.order = next(self._order)
            if self.durable and item.start >= 0:
                assert self.spool is not None
                item.location = self.spool.seal(item.batch_id, item.sequence, item.count, item.start, item.end)
            self._hot[item.order] = item
        if sealed and self.spool is not None:
            self.spool.sealed_all()
        if sealed:
            self.enqueue(sealed, None)
        return sealed

    def adopt(self, sinks: list[str]) -> dict[str, int]:
        """Queue what dead processes left in the spool; returns the records adopted per sink."""
        adopted = dict.fromkeys(sinks, 0)
        if self.spool is None:
            return adopted
        batches = 0
        for item in self.spool.adopt():
            pending = [name for name in sinks if name not in item.acked]
            if not pending:
                continue
            sealed = SealedBatch(
                batch=None,
                size=item.location.end - item.location.start,
                batch_id=item.batch_id,
                environment_id=item.environment_id,
                sequence=item.sequence,
                count=item.count,
                location=item.location,
                order=next(self._order),
            )
            self.spool.hold(item.location)
            self.enqueue([sealed], pending)
            batches += 1
            self.replayed += item.count
            for name in pending:
                adopted[name] += item.count
        self.spool.release_empty()
        if batches:
            logger.info("spool: replaying %d batches left by an earlier process (%s)", batches, adopted)
        return adopted

    async def load(self, sealed: SealedBatch) -> Batch:
        """Read a cold batch back from disk (same id, same records, so the same S3 keys)."""
        assert sealed.location is not None
        records, size = await asyncio.to_thread(Spool.read, sealed.location)
        batch = Batch(sealed.batch_id, sealed.environment_id, sealed.sequence, tuple(records))
        if sealed.batch is None:  # another sink may have loaded it meanwhile
            sealed.batch, sealed.size = batch, size
            self.budget.force(size)
            self._hot[sealed.order] = sealed
            self.loaded += 1
            if self.budget.used > self.budget.limit:
                self.relieve()
        return batch

    def acked(self, sealed: SealedBatch, sink: str) -> None:
        if self.spool is not None and sealed.location is not None:
            self.spool.ack(sealed.batch_id, sink)

    def release(self, sealed: SealedBatch) -> None:
        """No sink needs ``sealed`` any more."""
        if sealed.batch is not None:
            self.budget.release(sealed.size)
        self._hot.pop(sealed.order, None)
        if self.spool is not None and sealed.location is not None:
            self.spool.release(sealed.location)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close(unsealed=len(self.buffer))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"memory_bytes": self.budget.used, "memory_limit": self.budget.limit}
        if self.spool is not None:
            info.update(spool=self.spool.describe(), evicted=self.evicted, loaded=self.loaded)
        return info
