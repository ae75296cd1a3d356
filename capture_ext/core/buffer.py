"""The bounded in-memory buffer and the batches it seals.

Memory is bounded by bytes across everything the extension holds: records not yet sealed plus
sealed batches that some sink has not yet taken. A sealed batch is shared by all sinks and its
bytes are released when the last sink is done with it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from capture_ext.models import Batch, Record

if TYPE_CHECKING:
    from capture_ext.core.spool import Location


@dataclass(slots=True, eq=False)
class SealedBatch:
    """A batch plus what it costs in memory and which sinks still need it.

    With the spool on, a batch can be *cold*: ``batch`` is None, its records are only on disk at
    ``location``, and the store reads them back when a sink gets to it. Only the store changes
    ``waiting`` and ``busy``; the dispatcher asks it to (``checkout``, ``pin``, ``done``).
    """

    batch: Batch | None
    size: int
    #: Sinks that have not yet delivered it (or dropped it for good).
    waiting: set[str] = field(default_factory=set)
    batch_id: str = ""
    environment_id: str = ""
    sequence: int = 0
    count: int = 0
    #: Byte range of its record lines in the spool's active segment (-1: not spooled).
    start: int = -1
    end: int = -1
    location: Location | None = None
    #: Seal order; the newest batches are moved out of memory first.
    order: int = 0
    #: Reads, writes and partial retries in progress: while non-zero it stays in memory.
    busy: int = 0

    def __post_init__(self) -> None:
        if self.batch is not None and not self.batch_id:
            self.batch_id = self.batch.batch_id
            self.environment_id = self.batch.environment_id
            self.sequence = self.batch.sequence
            self.count = len(self.batch)


class MemoryBudget:
    """Counts the bytes held in memory against ``CAPTURE_BUFFER_MAX_BYTES``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)

    def force(self, size: int) -> None:
        """Take ``size`` even past the limit; the caller moves something to disk right after."""
        self.used += size


class RecordBuffer:
    """Accepted records waiting to be sealed into batches."""

    def __init__(
        self,
        environment_id: str,
        budget: MemoryBudget,
        max_records: int,
        max_bytes: int,
        first_sequence: int = 1,
    ) -> None:
        self.environment_id = environment_id
        self.budget = budget
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records: list[Record] = []
        self._sizes: list[int] = []
        #: End offset of each record's line in the spool's active segment (-1: not spooled).
        self._ends: list[int] = []
        self.bytes = 0
        self._oldest: float | None = None
        self._batch_sequence = itertools.count(first_sequence)

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: Record, size: int, end: int = -1) -> bool:
        """Keep ``record`` (of ``size`` JSON bytes) unless the memory bound is reached."""
        if not self.budget.reserve(size):
            return False
        self._keep(record, size, end)
        return True

    def keep_reserved(self, record: Record, size: int) -> None:
        """Keep a record whose ``size`` the caller already reserved in the budget."""
        self._keep(record, size, -1)

    def add_spooled(self, record: Record, size: int, end: int) -> None:
        """Keep a record already on disk, even past the bound (the store then relieves memory)."""
        self.budget.force(size)
        self._keep(record, size, end)

    def _keep(self, record: Record, size: int, end: int) -> None:
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._records.append(record)
        self._sizes.append(size)
        self._ends.append(end)
        self.bytes += size

    def age_s(self, now: float | None = None) -> float:
        if self._oldest is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self._oldest

    def size_due(self) -> bool:
        return len(self._records) >= self.max_records or self.bytes >= self.max_bytes

    def next_sequence(self) -> int:
        return next(self._batch_sequence)

    def seal(self) -> list[SealedBatch]:
        """Cut everything buffered into batches of at most ``max_records`` / ``max_bytes``."""
        sealed: list[SealedBatch] = []
        first = 0
        chunk_bytes = 0
        for index, size in enumerate(self._sizes):
            if index > first and (index - first >= self.max_records or chunk_bytes + size > self.max_bytes):
                sealed.append(self._make(first, index, chunk_bytes))
                first, chunk_bytes = index, 0
            chunk_bytes += size
        if self._records:
            sealed.append(self._make(first, len(self._records), chunk_bytes))
        self._records, self._sizes, self._ends, self.bytes, self._oldest = [], [], [], 0, None
        return sealed

    def _make(self, first: int, stop: int, size: int) -> SealedBatch:
        sequence = self.next_sequence()
        batch = Batch(
            batch_id=f"{self.environment_id}-{sequence:08d}",
            environment_id=self.environment_id,
            sequence=sequence,
            records=tuple(self._records[first:stop]),
        )
        ends = self._ends[first:stop]
        spooled = min(ends) >= 0
        start = ends[0] - self._sizes[first] - 1 if spooled else -1
        return SealedBatch(batch=batch, size=size, start=start, end=ends[-1] if spooled else -1)
