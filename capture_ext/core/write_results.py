"""Reading a sink's answer: what is usable in a ``WriteResult``, and which records a retry resends.

Kept apart from the dispatcher because these rules are the part of retrying that a plugin's
answer can steer: a partial failure names records by position (or, only when unambiguous, by
id), and an answer that cannot be trusted costs a retry of the whole batch, never a record.
"""

from __future__ import annotations

import logging
from collections import Counter

from capture_ext.models import Batch, Outcome, WriteResult

logger = logging.getLogger("capture_ext.core.dispatcher")


def well_formed(result: WriteResult, size: int, sink: str) -> WriteResult:
    """``result`` with its partial-failure fields usable, or the whole batch retried.

    A plugin's answer is not trusted to be well typed: a string index or a NaN hint must cost a
    retry of the batch, never the process (the batch would be replayed into the same crash).
    """
    if result.outcome is not Outcome.RETRYABLE:
        return result
    indices_ok = all(type(i) is int and 0 <= i < size for i in result.failed_indices)
    ids_ok = all(isinstance(i, str) for i in result.failed_ids)
    hint = result.retry_after_s
    hint_ok = hint is None or (isinstance(hint, int | float) and not isinstance(hint, bool) and 0 <= hint < 1e9)
    if indices_ok and ids_ok and hint_ok:
        return result
    logger.warning("sink %s: a malformed WriteResult (failed_indices/failed_ids/retry_after_s); retrying it all", sink)
    return WriteResult.retryable(result.error or "retryable error", retry_after_s=hint if hint_ok else None)


def failed_part(batch: Batch, result: WriteResult) -> Batch:
    """The records a retry must resend, as the next attempt of ``batch``.

    Positions (``failed_indices``) say exactly which records failed. Client ids
    (``failed_ids``) are honoured only when each names one record of the batch: ids are not
    unique, and a retry that picked a record of a part that already succeeded would make the sink
    rewrite that part from the retry alone. When the answer cannot be trusted to name records,
    the whole batch goes again: idempotent sinks rewrite the same objects with the same content.
    """
    positions: list[int] = []
    if result.failed_indices:
        positions = sorted(set(result.failed_indices))
        if positions[0] < 0 or positions[-1] >= len(batch):
            positions = []
    elif result.failed_ids:
        wanted = set(result.failed_ids)
        ids = [record.get("inference_id") for record in batch.records]
        positions = [index for index, value in enumerate(ids) if value in wanted]
        uses = Counter(ids)
        if any(uses[ids[index]] > 1 for index in positions):
            positions = []
    if positions:
        return batch.subset(positions, batch.attempt + 1)
    return Batch(batch.batch_id, batch.environment_id, batch.sequence, batch.records, batch.attempt + 1)
