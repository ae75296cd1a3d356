"""Record encodings shared by the AWS sinks: JSON Lines (capture or SageMaker schema), gzip,
visible truncation for size-capped services. The Parquet encoding lives in ``_parquet.py``
because it needs pyarrow.

Output is deterministic (sorted nothing, gzip ``mtime=0``): the same batch always gives the
same bytes, so a retried object is byte-identical to the first attempt.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from capture_ext.models import Record
from capture_ext.sinks._layout import captured_at, parse_time

#: gzip level 3, not zlib's default 6: on 1 KB QA records (bench/serialize.py) level 3 takes
#: 11.6 ms per 1,000 records against 28 ms for level 6, for objects 13 % larger (0.209 vs 0.185
#: of the raw JSON). Flush time is billed and must fit the SHUTDOWN budget; storage is cheap.
GZIP_LEVEL = 3
#: Envelope fields kept verbatim when a record has to be truncated.
ENVELOPE_FIELDS = (
    "inference_id",
    "request_id",
    "trace_id",
    "model",
    "timestamp",
    "latency_ms",
    "function_name",
    "function_version",
    "environment_id",
    "captured_at",
    "sequence",
)
_EVENT_NAMESPACE = uuid.UUID("6f1c1a52-6c1e-4c4b-9a59-2f0f3c9a1d10")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; orjson when it can, the standard library for what orjson refuses.

    orjson rejects integers beyond 64 bits and non-string keys; a record that valid JSON
    produced can still contain a huge integer, and it must not be lost for that.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def jsonl(lines: Iterable[Any]) -> bytes:
    """Newline-terminated JSON Lines."""
    return b"".join(dumps(line) + b"\n" for line in lines)


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def model_fields(record: Record) -> tuple[str | None, str | None]:
    """(name, version) of the record's model, whatever shape the client sent."""
    model = record.get("model")
    if isinstance(model, dict):
        name, version = model.get("name"), model.get("version")
        return (None if name is None else str(name), None if version is None else str(version))
    if model is None:
        return None, None
    return str(model), None


def event_id(record: Record) -> str:
    """A stable UUID for one captured event: the same record gives the same id on every retry."""
    key = f"{record.get('environment_id', '')}/{record.get('sequence', '')}/{record.get('inference_id', '')}"
    return str(uuid.uuid5(_EVENT_NAMESPACE, key))


def sagemaker_time(record: Record) -> str:
    """``inferenceTime`` as SageMaker writes it: UTC, whole seconds, ``Z`` (``2019-11-20T23:33:12Z``).

    Every sample AWS publishes has whole seconds; readers that parse it with a seconds-only
    pattern would reject milliseconds. The exact time stays in the ``capture`` and Parquet formats.
    """
    moment = parse_time(record.get("timestamp")) or captured_at(record)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _capture_part(value: Any, mode: str) -> dict[str, Any]:
    return {"observedContentType": "application/json", "mode": mode, "data": dumps(value).decode(), "encoding": "JSON"}


def sagemaker_record(record: Record) -> dict[str, Any]:
    """One line of the SageMaker Data Capture schema (``eventVersion`` "0").

    ``data`` holds the JSON text of the payload with ``encoding`` JSON, which is what SageMaker
    writes for ``application/json`` traffic listed in ``JsonContentTypes``; Model Monitor's
    analyzers parse it back. Both ``endpointInput`` and ``endpointOutput`` are always written,
    as SageMaker does in Input+Output mode: a missing or null payload is the JSON text ``null``,
    because tooling written for SageMaker (the preprocessing-record classes of the developer
    guide among it) reads ``.data`` of both without checking. Fields SageMaker has no place for
    (model, latency, metadata) are not written: use the default ``capture`` format when they matter.
    """
    capture = {
        "endpointInput": _capture_part(record.get("input"), "INPUT"),
        "endpointOutput": _capture_part(record.get("output"), "OUTPUT"),
    }
    metadata: dict[str, Any] = {"eventId": event_id(record), "inferenceTime": sagemaker_time(record)}
    if record.get("inference_id"):
        metadata["inferenceId"] = str(record["inference_id"])
    return {"captureData": capture, "eventMetadata": metadata, "eventVersion": "0"}


def encode_jsonl(records: Iterable[Record], fmt: str = "capture") -> bytes:
    """JSON Lines of ``records`` in the ``capture`` (as built) or ``sagemaker`` schema."""
    lines: Iterable[Any] = (sagemaker_record(r) for r in records) if fmt == "sagemaker" else records
    return jsonl(lines)


def encode_jsonl_gz(records: Iterable[Record], fmt: str = "capture") -> bytes:
    """The body of one ``.jsonl.gz`` object."""
    return gzip_bytes(encode_jsonl(records, fmt))


def fit(record: Record, data: bytes, limit: int) -> tuple[bytes, bool]:
    """``data`` (the record's JSON) if it fits in ``limit`` bytes, else a visibly truncated stand-in.

    The stand-in is still one JSON object: the envelope fields, ``"truncated": true``, the
    original size and as much of the original JSON text as fits in ``payload_prefix``. A
    consumer can find every truncated record with one filter, and nothing vanishes silently.
    """
    if len(data) <= limit:
        return data, False
    stub: dict[str, Any] = {k: record.get(k) for k in ENVELOPE_FIELDS if k in record}
    stub.update(truncated=True, original_bytes=len(data), payload_prefix="")
    budget = limit - len(dumps(stub))
    if budget <= 0:
        stub = {"inference_id": record.get("inference_id"), "truncated": True, "original_bytes": len(data)}
        return dumps(stub)[:limit], True
    text = data[:budget].decode("utf-8", "ignore")
    stub["payload_prefix"] = text
    encoded = dumps(stub)
    if len(encoded) <= limit:
        return encoded, True
    # JSON escaping grew the text (quotes, backslashes, control characters): find the longest
    # prefix that still fits. Rare, and log2(limit) encodes at most.
    low, high = 0, len(text) - 1
    while low < high:
        middle = (low + high + 1) // 2
        stub["payload_prefix"] = text[:middle]
        if len(dumps(stub)) <= limit:
            low = middle
        else:
            high = middle - 1
    stub["payload_prefix"] = text[:low]
    return dumps(stub), True
