"""The bounded in-memory buffer and the batches it seals.

Memory is bounded by bytes across everything the extension holds: records not yet sealed plus
sealed batches that some sink has not yet taken. A sealed batch is shared by all sinks and its
bytes are released when the last sink is done with it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from capture_ext.models import Batch, Record


@dataclass(slots=True)
class SealedBatch:
    """A batch plus what it costs in memory and how many sinks still need it."""

    batch: Batch
    size: int
    holders: int = 0


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
        self.bytes = 0
        self._oldest: float | None = None
        self._batch_sequence = itertools.count(first_sequence)

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: Record, size: int) -> bool:
        """Keep ``record`` (of ``size`` JSON bytes) unless the memory bound is reached."""
        if not self.budget.reserve(size):
            return False
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._records.append(record)
        self._sizes.append(size)
        self.bytes += size
        return True

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
        chunk: list[Record] = []
        chunk_bytes = 0
        for record, size in zip(self._records, self._sizes, strict=True):
            if chunk and (len(chunk) >= self.max_records or chunk_bytes + size > self.max_bytes):
                sealed.append(self._make(chunk, chunk_bytes))
                chunk, chunk_bytes = [], 0
            chunk.append(record)
            chunk_bytes += size
        if chunk:
            sealed.append(self._make(chunk, chunk_bytes))
        self._records, self._sizes, self.bytes, self._oldest = [], [], 0, None
        return sealed

    def _make(self, records: list[Record], size: int) -> SealedBatch:
        sequence = self.next_sequence()
        batch = Batch(
            batch_id=f"{self.environment_id}-{sequence:08d}",
            environment_id=self.environment_id,
            sequence=sequence,
            records=tuple(records),
        )
        return SealedBatch(batch=batch, size=size)

    def snapshot(self) -> list[dict[str, Any]]:
        """The records currently buffered (for the spool and for tests)."""
        return list(self._records)
