"""Where accepted records live until every sink has them: bounded memory in front of the spool.

With the spool on, every record is on disk before it is acknowledged and memory is only a
cache: when ``CAPTURE_BUFFER_MAX_BYTES`` is reached, the newest sealed batches that no sink is
writing are dropped from memory (they stay on disk, *spooled*) and are read back when a sink
gets to them. A record is refused only when the spool itself is full (``spool_full``).

Without the spool (``CAPTURE_SPOOL_MAX_BYTES=0``, or a spool that cannot be used) records are
held in memory only, and the memory bound refuses new ones (``buffer_full``).

The store owns sealed batches: it alone changes their bookkeeping (which sinks still need a
batch, whether it must stay in memory) and releases their memory and spool space. The dispatcher
takes new batches with :meth:`Store.take_new` and reports back with ``checkout``/``checkin``,
``pin``/``unpin`` and ``done``, as OpenTelemetry's batch processor owns its queue and exporters
never touch it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable
from typing import Any

from capture_ext.core.buffer import MemoryBudget, RecordBuffer, SealedBatch
from capture_ext.core.spool import Spool
from capture_ext.models import Batch, Record

logger = logging.getLogger(__name__)


class Store:
    def __init__(
        self,
        buffer: RecordBuffer,
        budget: MemoryBudget,
        spool: Spool | None = None,
        sinks: Iterable[str] = (),
    ) -> None:
        self.buffer = buffer
        self.budget = budget
        self.spool = spool
        #: The sinks every new batch is for.
        self.sinks = tuple(sinks)
        #: Free memory kept after moving batches to disk, so pressure does not cut tiny batches.
        self.headroom = min(buffer.max_bytes, budget.limit // 4)
        self._hot: dict[int, SealedBatch] = {}
        self._new: list[SealedBatch] = []
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

        A call is all or nothing: with the spool the lines are written in one ``write``; without
        it, memory for all of them is reserved at once.
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
        # Memory only: all or nothing too, so a refused request has kept nothing (a retry of it
        # must not duplicate half of it).
        if not self.budget.reserve(sum(len(data) for _, data in items)):
            return 0, "buffer_full"
        for record, data in items:
            self.buffer.keep_reserved(record, len(data))
        return len(items), ""

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
        """Seal the buffer into batches and write their seal lines; they wait in :meth:`take_new`."""
        sealed = self.buffer.seal()
        for item in sealed:
            item.order = next(self._order)
            item.waiting = set(self.sinks)
            self._hot[item.order] = item
        try:
            spooled = [item for item in sealed if item.start >= 0]
            if self.durable and spooled:
                assert self.spool is not None
                # One write for all seal lines: a kill cannot fall between two of them.
                where = [(i.batch_id, i.sequence, i.count, i.start, i.end) for i in spooled]
                for item, location in zip(spooled, self.spool.seal_many(where), strict=True):
                    item.location = location
            if sealed and self.spool is not None:
                self.spool.sealed_all()
        finally:  # whatever the disk did, the batches are in memory and the sinks must get them
            for item in sealed:
                self._hand_over(item)
        return sealed

    def _hand_over(self, sealed: SealedBatch) -> None:
        if sealed.waiting:
            self._new.append(sealed)
        else:
            self._release(sealed)

    def take_new(self) -> list[SealedBatch]:
        """Batches sealed or adopted since the last call, each with the sinks that need it."""
        new, self._new = self._new, []
        return new

    def has_new(self) -> bool:
        return bool(self._new)

    def adopt(self) -> dict[str, int]:
        """Queue what dead processes left in the spool; returns the records adopted per sink."""
        adopted = dict.fromkeys(self.sinks, 0)
        if self.spool is None:
            return adopted
        try:
            found = self.spool.adopt()
        except OSError as exc:  # an unreadable shared volume must not fail init
            logger.error("spool: could not adopt earlier processes' records: %s", exc)
            return adopted
        batches = 0
        for item in found:
            pending = {name for name in self.sinks if name not in item.acked}
            if not pending:
                continue
            sealed = SealedBatch(
                batch=None,
                size=item.location.end - item.location.start,
                waiting=pending,
                batch_id=item.batch_id,
                environment_id=item.environment_id,
                sequence=item.sequence,
                count=item.count,
                location=item.location,
                order=next(self._order),
            )
            self.spool.hold(item.location)
            self._new.append(sealed)
            batches += 1
            self.replayed += item.count
            for name in pending:
                adopted[name] += item.count
        self.spool.release_empty()
        if batches:
            logger.info("spool: replaying %d batches left by an earlier process (%s)", batches, adopted)
        return adopted

    # -- what the dispatcher reports -----------------------------------------------------------
    def checkout(self, sealed: SealedBatch) -> None:
        """A sink starts reading or writing ``sealed``: keep it in memory until :meth:`checkin`."""
        sealed.busy += 1

    def checkin(self, sealed: SealedBatch) -> None:
        sealed.busy -= 1

    def pin(self, sealed: SealedBatch) -> None:
        """A sink delivered part of ``sealed``: its retry subset needs the records in memory."""
        sealed.busy += 1

    def unpin(self, sealed: SealedBatch) -> None:
        sealed.busy -= 1

    def done(self, sealed: SealedBatch, sink: str) -> None:
        """``sink`` delivered ``sealed`` (or dropped it for good); idempotent per sink."""
        if sink not in sealed.waiting:
            return
        sealed.waiting.discard(sink)
        if self.spool is not None and sealed.location is not None:
            self.spool.ack(sealed.batch_id, sink)
        if not sealed.waiting:
            self._release(sealed)

    def _release(self, sealed: SealedBatch) -> None:
        """No sink needs ``sealed`` any more: free its memory and its spool space."""
        if sealed.batch is not None and self._hot.pop(sealed.order, None) is not None:
            self.budget.release(sealed.size)
        if self.spool is not None and sealed.location is not None:
            self.spool.release(sealed.location)

    async def load(self, sealed: SealedBatch) -> Batch:
        """Read a cold batch back from disk (same id, same records, so the same S3 keys)."""
        assert sealed.location is not None
        records, size = await asyncio.to_thread(Spool.read, sealed.location)
        if len(records) != sealed.count:
            # A damaged range must not reach a sink as a smaller (or empty) batch, as if delivered.
            raise ValueError(f"{len(records)} of {sealed.count} records could be read back")
        batch = Batch(sealed.batch_id, sealed.environment_id, sealed.sequence, tuple(records))
        if sealed.batch is None and sealed.waiting:  # another sink may have loaded it meanwhile
            sealed.batch, sealed.size = batch, size
            self.budget.force(size)
            self._hot[sealed.order] = sealed
            self.loaded += 1
            if self.budget.used > self.budget.limit:
                self.relieve()
        return batch

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close(unsealed=len(self.buffer))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"memory_bytes": self.budget.used, "memory_limit": self.budget.limit}
        if self.spool is not None:
            info.update(spool=self.spool.describe(), evicted=self.evicted, loaded=self.loaded)
        return info
