"""Realistic records and batches for sink tests: what the extension hands a sink, odd cases included.

Re-exported by :mod:`capture_ext.testing.contract`, whose tests use them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from capture_ext.models import Batch, Record

__all__ = ["make_batch", "make_record", "odd_records"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_record(environment_id: str = "contract", sequence: int = 0, **fields: Any) -> Record:
    """An enriched record as the extension hands it to sinks (a question-answering inference)."""
    record: Record = {
        "inference_id": uuid.uuid4().hex,
        "request_id": str(uuid.uuid4()),
        "model": {"name": "distilbert-base-cased-distilled-squad", "version": "1"},
        "timestamp": _now(),
        "latency_ms": 42.5,
        "input": {"question": "Where is the extension?", "context": "The extension runs in /opt/extensions."},
        "output": {"answer": "/opt/extensions", "score": 0.93, "start": 23, "end": 38},
        "metadata": {"tenant": "contract"},
        "function_name": "contract-fn",
        "function_version": "$LATEST",
        "environment_id": environment_id,
        "captured_at": _now(),
        "sequence": sequence,
    }
    record.update(fields)
    return record


def make_batch(
    records: Sequence[Record], environment_id: str = "contract", sequence: int = 1, attempt: int = 1
) -> Batch:
    """A sealed batch with the extension's id scheme ``<environment_id>-<sequence:08d>``."""
    return Batch(f"{environment_id}-{sequence:08d}", environment_id, sequence, tuple(records), attempt)


def odd_records(environment_id: str = "contract") -> list[Record]:
    """Records that are legal but unusual: what breaks naive encoders and schemas."""
    base = {"environment_id": environment_id}
    return [
        make_record(**base, sequence=1, input="", output=""),
        make_record(**base, sequence=2, input=None, output={"answer": None}),
        make_record(**base, sequence=3, input={"q": "çava? 日本語 🚀 \u202eRTL", "nul": "a\u0000b"}, output=["é"]),
        make_record(**base, sequence=4, input={"deep": [[[[{"x": [1, 2.5, -0.0, True, None]}]]]]}, output=0),
        make_record(**base, sequence=5, input=9007199254740993, output=1e308, latency_ms=None),
        make_record(**base, sequence=6, input={"text": "x" * 100_000}, output={"answer": "y"}),
        make_record(**base, sequence=7, model=None, request_id=None, metadata={}, input=[], output={}),
        make_record(**base, sequence=8, metadata={'weird key \n\t"': {"nested": ["ok"]}}, input={"": ""}),
    ]
