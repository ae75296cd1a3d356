"""Enriched records as the dispatcher hands them to sinks, for the sink tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from capture_ext.models import Batch

FUNCTION = "qa-fn"
ENV_ID = "env0a1b2c3d"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_record(sequence: int, at: datetime, payload_bytes: int = 700, **extra: Any) -> dict[str, Any]:
    """A ~1 KB enriched record (QA question/context in, answer out)."""
    context = ("The capture extension ships inference records to sinks after each response. " * 20)[:payload_bytes]
    record: dict[str, Any] = {
        "inference_id": uuid.uuid4().hex,
        "request_id": str(uuid.uuid4()),
        "model": {"name": "distilbert-qa", "version": "7"},
        "timestamp": iso(at - timedelta(milliseconds=40)),
        "latency_ms": 38.5 + sequence % 7,
        "input": {"question": f"What happens after response {sequence}?", "context": context},
        "output": {"answer": "ships inference records", "score": 0.91, "start": 22, "end": 45},
        "metadata": {"tenant": "t-1", "ab_group": "b" if sequence % 2 else "a"},
        "function_name": FUNCTION,
        "function_version": "$LATEST",
        "environment_id": ENV_ID,
        "captured_at": iso(at),
        "sequence": sequence,
    }
    record.update(extra)
    return record


def make_records(n: int, start: datetime, step_s: float = 1.0, first_sequence: int = 0) -> list[dict[str, Any]]:
    return [make_record(first_sequence + i, start + timedelta(seconds=i * step_s)) for i in range(n)]


def make_batch(records: list[dict[str, Any]], batch_sequence: int = 1) -> Batch:
    return Batch(f"{ENV_ID}-{batch_sequence:08d}", ENV_ID, batch_sequence, tuple(records))
