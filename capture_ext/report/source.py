"""Read captured records back from the S3 layout the sinks write (S3 or a local copy).

Discovery and partition pruning go through ``pyarrow.dataset`` with Hive partitioning, so a
one-hour report over a year of data lists everything once but opens only the hours it needs.
Rows are then parsed in Python because ``input``/``output`` are free-form JSON whose shape
differs between models (and between files), which a fixed Arrow schema cannot hold.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs

log = logging.getLogger(__name__)

#: Format folders in order of preference: Parquet is the cheaper read. ``sagemaker/`` holds the
#: ``s3_jsonl`` sink's SageMaker-schema lines (Hive layout only).
FORMATS = ("parquet", "jsonl", "sagemaker")
SUFFIXES = {"jsonl": (".jsonl.gz", ".jsonl"), "sagemaker": (".jsonl.gz", ".jsonl"), "parquet": (".parquet",)}
# Our sinks file a record under the hour of its own captured_at, but a SageMaker-format line
# carries the client's timestamp, and other writers (Firehose, copies) may file by arrival
# time: widen the pruned range by this so those records are still found, then filter exactly.
PARTITION_SLACK = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_EPOCH_MS, MAX_EPOCH_MS = -62135596800000, 253402300799999  # 0001-01-01 … 9999-12-31T23:59:59.999


class SourceError(Exception):
    """The data cannot be located or read; the message names the location and the problem."""


@dataclass(frozen=True)
class Window:
    """Half-open time window [start, end) on ``captured_at``; ``None`` means unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, ts: datetime) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)

    def describe(self) -> str:
        def fmt(ts: datetime | None) -> str:
            return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "…"

        return f"{fmt(self.start)} → {fmt(self.end)}"


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time; naive values are UTC, as every captured timestamp is."""
    try:
        ts = datetime.fromisoformat(text.strip())
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ValueError(f"not an ISO 8601 date or date-time in years 1-9999 UTC: {text!r}") from exc


def parse_duration(text: str) -> timedelta:
    """Parse ``90m``, ``24h``, ``7d`` (the units a monitoring schedule is written in)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units or not text[:-1].replace(".", "", 1).isdigit():
        raise ValueError(f"not a duration like 30m, 24h or 7d: {text!r}")
    try:
        duration = timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (ValueError, OverflowError):  # '²h', or more days than a datetime spans
        raise ValueError(f"not a duration like 30m, 24h or 7d (at most 3650000d): {text!r}") from None
    if duration <= timedelta(0):
        raise ValueError(f"a duration is longer than zero: {text!r}")
    return duration


def open_filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """Map ``s3://bucket/prefix`` or a local folder to a pyarrow filesystem and a path on it.

    ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` are honoured like botocore does, so the same
    command reads real S3, moto or any S3-compatible store.
    """
    import pyarrow.fs as pafs

    if uri.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        kwargs: dict[str, Any] = {"region": region}
        if endpoint:
            scheme, _, host = endpoint.rstrip("/").partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        return pafs.S3FileSystem(**kwargs), uri[len("s3://") :].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise SourceError(f"unsupported location {uri!r}: use s3://bucket/prefix or a local folder")
    path = os.path.abspath(uri.removeprefix("file://"))
    if not os.path.isdir(path):
        raise SourceError(f"no such folder: {path}")
    return pafs.LocalFileSystem(), path


def _is_dir(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type == pafs.FileType.Directory


def locate(fs: pyarrow.fs.FileSystem, path: str, fmt: str) -> tuple[str, str]:
    """Find the format folder: ``path`` may be the capture prefix or its ``jsonl/``/``parquet/`` child."""
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    if tail in FORMATS:
        if fmt not in ("auto", tail):
            raise SourceError(f"{path} holds {tail} data but --format {fmt} was asked for")
        return path, tail
    candidates = FORMATS if fmt == "auto" else (fmt,)
    found = [f for f in candidates if _is_dir(fs, f"{path}/{f}")]
    if not found:
        want = " or ".join(f"{path}/{f}/" for f in candidates)
        raise SourceError(f"no captured data: expected {want}")
    if len(found) > 1:
        # Several sinks may have captured the same records; read the first in order of preference.
        log.info("%s exist under %s; reading %s", " and ".join(f"{f}/" for f in found), path, found[0])
    return f"{path}/{found[0]}", found[0]


def _partition_filter(window: Window, function: str | None) -> Any:
    import pyarrow.compute as pc

    from capture_ext.report.files import partition_bounds

    dt, hour = pc.field("dt"), pc.field("hour")
    expr = None

    def both(a: Any, b: Any) -> Any:
        return b if a is None else a & b

    lo, hi = partition_bounds(window)
    if lo is not None:
        expr = both(expr, (dt > lo[0]) | ((dt == lo[0]) & (hour >= lo[1])))
    if hi is not None:
        expr = both(expr, (dt < hi[0]) | ((dt == hi[0]) & (hour <= hi[1])))
    if function is not None:
        expr = both(expr, pc.field("function") == function)
    return expr


def list_files(fs: pyarrow.fs.FileSystem, base: str, fmt: str, window: Window, function: str | None) -> list[str]:
    """Files under ``base`` whose ``function=/dt=/hour=`` partition can hold records in ``window``."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    schema = pa.schema([("function", pa.string()), ("dt", pa.string()), ("hour", pa.string())])
    try:
        dataset = ds.dataset(
            base,
            filesystem=fs,
            format="parquet" if fmt == "parquet" else "json",
            partitioning=ds.partitioning(schema, flavor="hive"),
            schema=schema,  # an explicit schema: discovery does not open any file
        )
        fragments = dataset.get_fragments(filter=_partition_filter(window, function))
        paths = [f.path for f in fragments]
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceError(f"cannot list {base}: {exc}") from exc
    return sorted(p for p in paths if p.endswith(SUFFIXES[fmt]))


def _read_bytes(fs: pyarrow.fs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path, compression=None) as stream:
        data: bytes = stream.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def from_sagemaker(rec: dict[str, Any]) -> dict[str, Any]:
    """Turn a SageMaker Data Capture line (``CAPTURE_JSONL_FORMAT=sagemaker``) into our record shape."""
    capture = rec.get("captureData", {})
    meta = rec.get("eventMetadata", {})

    def payload(part: dict[str, Any] | None) -> Any:
        if not part:
            return None
        data = part.get("data")
        if part.get("encoding", "").upper() == "JSON" and isinstance(data, str):
            try:
                return json.loads(data)
            except ValueError:
                return data
        return data

    return {
        "inference_id": meta.get("inferenceId") or meta.get("eventId"),
        "captured_at": meta.get("inferenceTime"),
        "input": payload(capture.get("endpointInput")),
        "output": payload(capture.get("endpointOutput")),
        "metadata": {k: v for k, v in meta.items() if k not in ("inferenceId", "eventId", "inferenceTime")},
    }


def _jsonl_records(fs: pyarrow.fs.FileSystem, path: str) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(io.BytesIO(_read_bytes(fs, path)), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"{path} line {n}: not JSON ({exc})") from exc
        if not isinstance(rec, dict):
            raise SourceError(f"{path} line {n}: expected a JSON object, got {type(rec).__name__}")
        out.append(from_sagemaker(rec) if "captureData" in rec else rec)
    return out


def _parquet_records(fs: pyarrow.fs.FileSystem, path: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    with fs.open_input_file(path) as handle:
        rows = pq.read_table(handle).to_pylist()
    for row in rows:
        for key in ("input", "output", "metadata"):
            if isinstance(row.get(key), str):
                with contextlib.suppress(ValueError):  # a plain-text payload stays text
                    row[key] = json.loads(row[key])
        row["model"] = {"name": row.pop("model_name", None), "version": row.pop("model_version", None)}
    return rows


def record_time(rec: dict[str, Any]) -> datetime | None:
    """``captured_at`` (falling back to the client ``timestamp``) as an aware UTC datetime."""
    for key in ("captured_at", "timestamp"):
        value = rec.get(key)
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value
        if isinstance(value, str):
            try:
                return parse_time(value)
            except ValueError:
                continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        # epoch ms, within the years a datetime holds (1e20, NaN, Infinity are no time)
        if number and MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:  # type: ignore[operator]
            return EPOCH + timedelta(milliseconds=value)  # type: ignore[arg-type]
    return None


def _progress(total: int, quiet: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=quiet or not sys.stderr.isatty())


def read_records(
    uri: str,
    window: Window,
    *,
    fmt: str = "auto",
    function: str | None = None,
    quiet: bool = False,
    label: str = "reading",
    workers: int = 8,
) -> list[dict[str, Any]]:
    """Every record under ``uri`` captured in ``window``, oldest first, each with a parsed ``_ts``.

    A record whose ``inference_id`` was already read (a replay, a copied file) counts once: the
    earliest capture is kept.
    """
    import pyarrow.fs as pafs

    from capture_ext.report.files import find

    listing = find(uri, fmt, window, function)
    fs = listing.filesystem or pafs.LocalFileSystem()
    files = [p.removeprefix("s3://") for p in listing.paths]
    log.info("%s: %d %s file(s) under %s for %s", label, len(files), listing.fmt, uri, window.describe())
    reader = _parquet_records if listing.fmt == "parquet" else _jsonl_records
    records: list[dict[str, Any]] = []
    undated = 0
    with _progress(len(files), quiet, label) as bar, ThreadPoolExecutor(max(1, workers)) as pool:
        for batch in pool.map(lambda p: _safe_read(reader, fs, p), files):
            for rec in batch:
                ts = record_time(rec)
                undated += ts is None
                if ts is not None and window.contains(ts):
                    rec["_ts"] = ts
                    records.append(rec)
            bar.update(1)
    if undated:
        log.warning("%s: skipped %d record(s) without a readable captured_at/timestamp", label, undated)
    records.sort(key=lambda r: r["_ts"])
    seen: set[str] = set()
    unique = []
    for rec in records:
        iid = rec.get("inference_id")
        if iid is None:
            unique.append(rec)
            continue
        key = iid if isinstance(iid, str) else json.dumps(iid)
        if key not in seen:
            seen.add(key)
            unique.append(rec)
    if len(unique) < len(records):
        log.info("%s: %d duplicate record(s) counted once (same inference_id)", label, len(records) - len(unique))
    return unique


def _safe_read(reader: Any, fs: pyarrow.fs.FileSystem, path: str) -> list[dict[str, Any]]:
    try:
        result: list[dict[str, Any]] = reader(fs, path)
    except SourceError:
        raise
    except Exception as exc:  # any decoder error: name the file, not just the library's message
        raise SourceError(f"cannot read {path}: {exc}") from exc
    return result
