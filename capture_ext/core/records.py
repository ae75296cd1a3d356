"""Turning request bodies into validated, enriched records.

Parsing is all-or-nothing per request: a malformed body or one invalid record rejects the whole
request with an error that names the record and the field, and nothing from it is kept.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import time
import uuid
from typing import Any

import orjson

#: Fields a record may carry at the top level; anything else is moved into ``metadata``.
KNOWN_FIELDS = frozenset(
    {"input", "output", "inference_id", "request_id", "trace_id", "model", "timestamp", "latency_ms", "metadata"}
)
#: Fields the extension sets; a client cannot override them.
ENRICHED_FIELDS = ("function_name", "function_version", "environment_id", "captured_at", "sequence")
MAX_ID_LENGTH = 256


class RecordError(ValueError):
    """A record or request body the extension refuses; the message names the problem."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


#: ``YYYY-MM-DDTHH:MM:SS`` of recently formatted epoch seconds. More than one: a record's own
#: timestamp and its ``captured_at`` may fall in different seconds, and with a single entry they
#: would evict each other on every record.
_PREFIXES: dict[int, str] = {}
#: The prefixes above of seconds in ``[0, 2**32)``, where a canonical string round-trips exactly.
_CANONICAL_PREFIXES: set[str] = set()
_PREFIX_CACHE_SIZE = 256
#: ``.000Z`` … ``.999Z``: formatting the milliseconds with an f-string cost as much as the rest.
_MS_SUFFIX = tuple(f".{ms:03d}Z" for ms in range(1000))


def _second_prefix(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole epoch second (cached)."""
    prefix = _PREFIXES.get(second)
    if prefix is None:
        moment = dt.datetime.fromtimestamp(second, dt.UTC)
        # Not strftime("%Y"): it does not pad years before 1000, and RFC 3339 needs four digits.
        prefix = (
            f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
        )
        if len(_PREFIXES) >= _PREFIX_CACHE_SIZE:
            _PREFIXES.clear()
            _CANONICAL_PREFIXES.clear()
        _PREFIXES[second] = prefix
        if 0 <= second < 2**32:
            _CANONICAL_PREFIXES.add(prefix)
    return prefix


def rfc3339_ms(epoch_s: float) -> str:
    """UTC RFC 3339 with milliseconds and a ``Z``: sortable, and parsed by Athena and DuckDB.

    Called twice per record on the ingest path; formatting the date was a third of the extension's
    CPU there (benchmark 4), so the ``YYYY-MM-DDTHH:MM:SS`` part is cached per second.
    """
    fraction, whole = math.modf(epoch_s)  # split and rounded exactly as datetime.fromtimestamp does
    second, micros = int(whole), round(fraction * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    return _second_prefix(second) + _MS_SUFFIX[micros // 1000]


#: Below 2**32 s a float epoch is exact to within 0.24 µs, so ``rfc3339_ms(ms / 1000)`` rounds
#: back to the very millisecond it was given: integer milliseconds need no float arithmetic.
_EXACT_MS_LIMIT = 2**32 * 1000


def rfc3339_from_ms(epoch_ms: int) -> str:
    """``rfc3339_ms(epoch_ms / 1000.0)`` for integer milliseconds (the Python client's timestamps)."""
    if 0 <= epoch_ms < _EXACT_MS_LIMIT:
        second, ms = divmod(epoch_ms, 1000)
        return _second_prefix(second) + _MS_SUFFIX[ms]
    return rfc3339_ms(epoch_ms / 1000.0)


#: An integer literal orjson cannot keep exact (outside the signed and unsigned 64-bit ranges)
#: has at least 19 digits; only such payloads take the slow, exact path. Looking for them with
#: the regex ``\d{19}`` cost ~30 µs on every 1 KB line (the largest per-record cost): instead,
#: every ASCII digit is mapped to ``0`` and nineteen ``0`` in a row are looked for.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def has_long_digits(data: bytes) -> bool:
    """Whether ``data`` holds a run of 19 or more ASCII digits (``re.search(rb"\\d{19}", data)``)."""
    return _NINETEEN_DIGITS in data.translate(_DIGITS_TO_ZERO)


INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


def _exact_int(text: str) -> int | str:
    value = int(text)
    return value if INT64_MIN <= value <= UINT64_MAX else text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # orjson refuses a number past a float's range; the exact path must too (it read 1e999 as inf,
    # stored as null, whenever a long integer sat in the same body).
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is infinity when parsed as double")
    return value


def loads_exact(data: bytes) -> Any:
    """``orjson.loads``, except that integers beyond 64 bits keep their exact decimal text.

    orjson reads such integers as floats (``10000000000000000000001`` would become ``1e+22``) and
    cannot write them back; a value a user sent must not change silently, so it is kept as the
    string of its digits. Raises ``orjson.JSONDecodeError`` for invalid JSON either way.
    """
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        if not has_long_digits(data):
            raise
        parsed = None  # orjson refuses integers past a float's range ("number is infinity")
    if not has_long_digits(data):
        return parsed
    try:
        return json.loads(data, parse_int=_exact_int, parse_float=_finite_float, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise orjson.JSONDecodeError(f"invalid JSON: {exc}", "", 0) from None


def parse_body(body: bytes, content_type: str, max_record_bytes: int) -> list[dict[str, Any]]:
    """Split a request body into raw record objects: one object, an array, or NDJSON."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not body.strip():
        raise RecordError("empty body: send a JSON object, a JSON array of objects, or NDJSON")
    if media_type in {"application/x-ndjson", "application/jsonl", "application/json-lines", "application/jsonlines"}:
        lines = [line for line in body.split(b"\n") if line.strip()]
        items: list[Any] = []
        for number, line in enumerate(lines, 1):
            if len(line) > max_record_bytes:
                raise RecordError(
                    f"line {number}: record is {len(line)} bytes, over the {max_record_bytes}-byte limit", 413
                )
            try:
                items.append(loads_exact(line))
            except orjson.JSONDecodeError as exc:
                raise RecordError(f"line {number}: invalid JSON ({exc})") from None
        return _objects(items, "line")
    if media_type not in {"application/json", "", "text/plain"}:
        raise RecordError(f"unsupported Content-Type {media_type!r}: use application/json or application/x-ndjson", 415)
    try:
        parsed = loads_exact(body)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON ({exc})") from None
    if isinstance(parsed, list):
        objects = _objects(parsed, "record")
        for index, item in enumerate(objects):
            try:
                size = len(orjson.dumps(item))
            except orjson.JSONEncodeError as exc:
                raise RecordError(f"record {index}: cannot be stored as JSON ({exc})") from None
            if size > max_record_bytes:
                raise RecordError(f"record {index}: {size} bytes, over the {max_record_bytes}-byte limit", 413)
        return objects
    if len(body) > max_record_bytes:
        raise RecordError(f"record is {len(body)} bytes, over the {max_record_bytes}-byte limit", 413)
    return _objects([parsed], "record")


def _objects(items: list[Any], label: str) -> list[dict[str, Any]]:
    if not items:
        raise RecordError("no records in the body")
    for index, item in enumerate(items, 1 if label == "line" else 0):
        if not isinstance(item, dict):
            raise RecordError(f"{label} {index}: expected a JSON object, got {type(item).__name__}")
    return items


def _timestamp(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise RecordError(f"{where}field 'timestamp': expected an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int | float):
        if not 0 <= value < 4102444800000:  # year 2100 in ms
            raise RecordError(f"{where}field 'timestamp': epoch milliseconds out of range ({value})")
        if type(value) is int:
            return rfc3339_from_ms(value)
        return rfc3339_ms(value / 1000.0)
    if isinstance(value, str):
        if _canonical_in_cached_second(value):
            return value
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            # The value is not echoed: error messages reach logs, and logs never carry record contents.
            raise RecordError(f"{where}field 'timestamp': not an RFC 3339 date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        try:
            epoch = parsed.astimezone(dt.UTC).timestamp()
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise RecordError(f"{where}field 'timestamp': out of range (years 0001 to 9999 in UTC)") from None
        return rfc3339_ms(epoch)
    raise RecordError(f"{where}field 'timestamp': expected an RFC 3339 string or epoch milliseconds")


def _canonical_in_cached_second(value: str) -> bool:
    """Whether ``value`` is ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in a second formatted recently.

    Such a string is exactly what parsing and formatting it again would give (below 2**32 s the
    float epoch rounds back to the same millisecond), so a client that sends canonical timestamps
    costs a set lookup instead of a parse.
    """
    return (
        len(value) == 24
        and value[19] == "."
        and value[23] == "Z"
        and value[20:23].isdigit()
        and value[20:23].isascii()
        and value[:19] in _CANONICAL_PREFIXES
    )


def _model(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"name": value, "version": None}
    if isinstance(value, dict):
        name, version = value.get("name"), value.get("version")
        if name is not None and not isinstance(name, str):
            raise RecordError(f"{where}field 'model.name': expected a string")
        if version is not None and not isinstance(version, str | int | float):
            raise RecordError(f"{where}field 'model.version': expected a string")
        return {"name": name, "version": None if version is None else str(version)}
    raise RecordError(f"{where}field 'model': expected a string or an object with name and version")


def normalize(raw: dict[str, Any], index: int | None = None, now: float | None = None) -> dict[str, Any]:
    """Validate one record and bring it to the canonical shape (see the design's record table)."""
    where = "" if index is None else f"record {index}: "
    if "input" not in raw and "output" not in raw:
        raise RecordError(f"{where}field 'input' is required (or 'output')")
    inference_id = raw.get("inference_id")
    if inference_id is None:
        inference_id = uuid.uuid4().hex
    elif not isinstance(inference_id, str) or not inference_id or len(inference_id) > MAX_ID_LENGTH:
        raise RecordError(f"{where}field 'inference_id': expected a non-empty string of at most {MAX_ID_LENGTH} chars")
    request_id = raw.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID_LENGTH):
        raise RecordError(f"{where}field 'request_id': expected a string of at most {MAX_ID_LENGTH} chars")
    trace_id = raw.get("trace_id")
    if trace_id is not None and (not isinstance(trace_id, str) or len(trace_id) > MAX_ID_LENGTH):
        raise RecordError(f"{where}field 'trace_id': expected a string of at most {MAX_ID_LENGTH} chars")
    latency = raw.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0):
        raise RecordError(f"{where}field 'latency_ms': expected a number >= 0")
    metadata = raw.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise RecordError(f"{where}field 'metadata': expected an object")
    if not KNOWN_FIELDS.issuperset(raw):  # unknown top-level fields go to metadata, never lost or overwritten
        extra = {key: value for key, value in raw.items() if key not in KNOWN_FIELDS}
        moved: dict[str, Any] = {}
        for key, value in extra.items():
            target = f"client_{key}" if key in ENRICHED_FIELDS else key
            if target in metadata or target in moved:
                raise RecordError(
                    f"{where}field {_name(key)} is sent at the top level and as metadata.{_name(target)[1:-1]}: "
                    "send it once"
                )
            moved[target] = value
        metadata = {**metadata, **moved}
    stamp = raw.get("timestamp")
    record: dict[str, Any] = {
        "inference_id": inference_id,
        "request_id": request_id,
        "model": _model(raw.get("model"), where),
        "timestamp": rfc3339_ms(time.time() if now is None else now) if stamp is None else _timestamp(stamp, where),
        "latency_ms": None if latency is None else float(latency),
        "input": raw.get("input"),
        "output": raw.get("output"),
        "metadata": metadata,
    }
    if trace_id is not None:  # only when known: records without tracing keep their size
        record["trace_id"] = trace_id
    return record


def _name(key: str) -> str:
    """A client's field name, quoted and cut short for an error message."""
    return repr(key[:64] + ("…" if len(key) > 64 else ""))


class Enricher:
    """Adds the extension's own fields; one per extension process."""

    def __init__(self, function_name: str, function_version: str, environment_id: str, first_sequence: int = 1) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.environment_id = environment_id
        self._sequence = itertools.count(first_sequence)
        #: (request id, X-Ray trace id) of the INVOKE being handled, from its ``tracing.value``.
        self.invoke_trace: tuple[str, str] = ("", "")

    def enrich(self, record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        if record.get("trace_id") is None and record.get("request_id"):
            request_id, trace_id = self.invoke_trace
            if trace_id and record["request_id"] == request_id:  # a client that did not send it
                record["trace_id"] = trace_id
        record["function_name"] = self.function_name
        record["function_version"] = self.function_version
        record["environment_id"] = self.environment_id
        record["captured_at"] = rfc3339_ms(time.time() if now is None else now)
        record["sequence"] = next(self._sequence)
        return record
