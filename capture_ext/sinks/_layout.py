"""Where records go: Hive partitions and idempotent object keys, CloudWatch stream names.

The key of an object depends only on the batch id and the partition of its records, never on
the wall clock or a random value. That is what makes a retry overwrite its own object instead
of adding a duplicate next to it: at-least-once delivery with exactly one object per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from capture_ext.models import Record

#: Hive partition columns of the S3 layouts, in key order.
PARTITION_COLUMNS = ("function", "dt", "hour")
#: The production-variant segment of the SageMaker layout: SageMaker's default variant name.
SAGEMAKER_VARIANT = "AllTraffic"


def captured_at(record: Record) -> datetime:
    """The record's capture time as an aware UTC datetime.

    Falls back to the client ``timestamp`` and then to "now": a record must land somewhere,
    and a bad timestamp is not a reason to lose it.
    """
    for field in ("captured_at", "timestamp"):
        value = record.get(field)
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    return datetime.now(UTC)


def parse_time(value: object) -> datetime | None:
    """RFC 3339 text (``Z`` or offset) or epoch milliseconds → aware UTC datetime, else None."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000.0, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def partition_path(function_name: str, moment: datetime) -> str:
    """``function=<name>/dt=YYYY-MM-DD/hour=HH`` for a capture time."""
    return f"function={safe_segment(function_name)}/dt={moment:%Y-%m-%d}/hour={moment:%H}"


def sagemaker_partition_path(function_name: str, moment: datetime) -> str:
    """``<endpoint>/<variant>/yyyy/mm/dd/hh``: SageMaker Data Capture's own key layout.

    The function plays the endpoint and :data:`SAGEMAKER_VARIANT` the variant, so tooling that
    walks ``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl`` finds the files.
    """
    return f"{safe_segment(function_name)}/{SAGEMAKER_VARIANT}/{moment:%Y/%m/%d/%H}"


def object_key(prefix: str, fmt: str, partition: str, batch_id: str, extension: str) -> str:
    """``<prefix>/<fmt>/<partition>/<batch_id>.<extension>`` (no leading slash for an empty prefix)."""
    parts = [p for p in (prefix.strip("/"), fmt, partition, f"{safe_segment(batch_id)}.{extension}") if p]
    return "/".join(parts)


def group_by_partition(
    records: Iterable[Record],
    function_name: str,
    partition: Callable[[str, datetime], str] = partition_path,
) -> dict[str, list[Record]]:
    """Records grouped by their partition (Hive by default), each group keeping the batch order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(partition(function_name, captured_at(record)), []).append(record)
    return groups


def stream_name(function_name: str, environment_id: str, moment: datetime) -> str:
    """CloudWatch stream ``YYYY/MM/DD/<function>/<environment_id>`` (day of the capture time)."""
    return f"{moment:%Y/%m/%d}/{function_name}/{environment_id}"


def safe_segment(value: str) -> str:
    """A key segment without characters that break Hive partition parsing or S3 key hygiene."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_.$" else "_" for ch in value)
    return cleaned or "_"
