"""A corpus of awkward records, and a strict comparison, for the reader-fidelity tests.

Every record is what a client would send (``capture(...)`` keywords / the HTTP body). The corpus
holds what third-party readers get wrong: right-to-left text, emoji and other astral-plane
characters, NUL, U+2028/U+2029, nested and case-colliding keys, null and missing fields, strings
of hundreds of KB, and numbers at the edges of int64/float64. It is generated from a seed, so a
failure replays: ``awkward_records(seed)`` always gives the same list.

:func:`expected` is the record as the extension stores it (its documented normalisations:
docs/sinks.md, "What comes back"), and :func:`same` compares JSON values strictly (int vs float,
``-0.0`` vs ``0.0``, key order), so a reader that changes anything is caught.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

SEED = 15
COUNT = 300
START = dt.datetime(2026, 11, 22, 3, 59, 30, tzinfo=dt.UTC)

RTL = ["مرحبا بالعالم", "שלום עולם", "سؤال: ما هو النموذج؟", "‏עברית‎ mixed with English"]
ASTRAL = ["😀", "👩‍👩‍👧‍👦", "🇺🇳", "𝕏𝕐ℤ", "𠜎𠜱𠝹", "\U0010fffd", "🏳️‍🌈"]
CONTROL = ["nul\u0000byte", "line\u2028separator", "para\u2029graph", "tab\there", "cr\rlf\nend", '"quoted\\"']
#: Integers the client library and the HTTP ingest must keep exact (int64 and uint64 edges).
INT_EDGES = [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
#: Beyond uint64: kept exact only once the ingest stops turning them into floats (issue #15, item 4).
BIG_INTS = [10**22 + 1, -(10**30) - 7]
FLOAT_EDGES = [5e-324, -0.0, 0.1, 1e-7, 1.7976931348623157e308, 2.2250738585072014e-308, 123456789.12345679]

#: The fields whose exactness depends on item 4 of issue #15 (the lead's ingest fix).
ITEM4_MARK = "big_int"


def _text(rng: random.Random, n: int) -> str:
    pieces = RTL + ASTRAL + CONTROL + ["plain ascii", "é", "ß", "ﬁ", "Ω"]
    return "".join(rng.choice(pieces) for _ in range(n))


def _nested(rng: random.Random, depth: int) -> Any:
    if depth == 0:
        return rng.choice([None, True, False, rng.choice(INT_EDGES), rng.choice(FLOAT_EDGES), _text(rng, 2)])
    return {
        "Level": depth,
        "level": -depth,
        "items": [_nested(rng, depth - 1), rng.choice(FLOAT_EDGES)],
        "a.b": {"c": _text(rng, 1)},
    }


def awkward_records(seed: int = SEED, count: int = COUNT) -> list[dict[str, Any]]:
    """``count`` client records (each with an ``inference_id``), deterministic for ``seed``."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i in range(count):
        kind = i % 12
        record: dict[str, Any] = {
            "inference_id": f"awk-{seed}-{i:04d}",
            "request_id": f"req-{i:04d}",
            "model": {"name": "distilbert-qa", "version": str(i % 3)},
            "timestamp": (START + dt.timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "latency_ms": 10.0 + i / 8,
            "input": {"question": _text(rng, 3), "context": _text(rng, 8)},
            "output": {"answer": _text(rng, 2), "score": rng.random(), "start": i, "end": i + 5},
            "metadata": {"tenant": f"t-{i % 4}", "ab_group": "ab"[i % 2]},
        }
        if kind == 0:  # case-colliding keys at every level
            record["input"] = {"Question": "Upper?", "question": "lower?", "QUESTION": "shout?", "context": "c"}
            record["metadata"] = {"tenant": "a", "Tenant": "b", "TENANT": "c", "nested": {"Key": 1, "key": 2}}
        elif kind == 1:  # null and missing fields
            record["output"] = None
            record.pop("metadata")
            record.pop("latency_ms")
            record.pop("model")
        elif kind == 2:
            record.pop("output")
            record["model"] = "plain-model-name"
        elif kind == 3:
            record.pop("input")
            record["metadata"] = {"deep": _nested(rng, 6), "empty": {}, "list": [], "": "empty key"}
        elif kind == 4:  # numbers at the edges of int64/uint64/float64
            record["output"] = {"ints": INT_EDGES, "floats": FLOAT_EDGES, "neg_zero": -0.0, "tiny": 5e-324}
        elif kind == 5:  # payloads that are not objects
            record["input"] = rng.choice(["just a string", 42, [1, "two", None, 3.5], True])
            record["output"] = rng.choice([[], "", 0, False, [{"k": None}]])
        elif kind == 6:  # unknown top-level fields move into metadata
            record["user_agent"] = "Mozilla/5.0 ‮RTL override‬"
            record["Tenant"] = "top-level Tenant"
            record["sequence"] = "the client's own"  # the extension's field name: kept as client_sequence
        elif kind == 7:
            record["input"] = {"question": "\u2028\u2029\u0000" * 5, "context": "\x00" * 3 + "end"}
        if i in (11, 23):  # big strings: 280 KB and 900 KB (under the 1 MiB record limit)
            size = 280_000 if i == 11 else 900_000
            record["input"] = {"question": "big?", "context": ("abc def ghi " * (size // 12 + 1))[:size]}
        if i == 35:  # 300 KB of three-byte characters
            record["output"] = {"answer": "ﬁ" * 100_000}
        if i in (47, 59):  # integers beyond uint64 (issue #15, item 4)
            record["output"] = {"answer": "big", ITEM4_MARK: BIG_INTS[i == 59]}
        records.append(record)
    return records


def expected(sent: dict[str, Any]) -> dict[str, Any]:
    """What the extension stores for a record ``sent`` by a client (before enrichment)."""
    metadata = dict(sent.get("metadata") or {})
    extra = {k: v for k, v in sent.items() if k not in KNOWN}
    if extra:  # after the client's own metadata; names of the extension's fields get a client_ prefix
        metadata = {**metadata, **{f"client_{k}" if k in ENRICHED else k: v for k, v in extra.items()}}
    model = sent.get("model")
    if isinstance(model, str):
        model = {"name": model, "version": None}
    stamp = dt.datetime.fromisoformat(sent["timestamp"].replace("Z", "+00:00"))
    latency = sent.get("latency_ms")
    return {
        "inference_id": sent["inference_id"],
        "request_id": sent.get("request_id"),
        "model": model,
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "latency_ms": None if latency is None else float(latency),
        "input": as_stored(sent.get("input")),
        "output": as_stored(sent.get("output")),
        "metadata": as_stored(metadata),
    }


def as_stored(value: Any) -> Any:
    """Integers beyond 64 bits are stored as the text of their exact digits (docs/guarantees.md, 11)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {key: as_stored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    return value


KNOWN = frozenset({"input", "output", "inference_id", "request_id", "model", "timestamp", "latency_ms", "metadata"})
ENRICHED = frozenset({"function_name", "function_version", "environment_id", "captured_at", "sequence"})


def depends_on_item4(value: Any) -> bool:
    """True when ``value`` holds an integer beyond 64 bits (stored as the text of its digits)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(depends_on_item4(v) for v in value.values())
    if isinstance(value, list):
        return any(depends_on_item4(v) for v in value)
    return False


def same(a: Any, b: Any, path: str = "$") -> str | None:
    """None when ``a`` and ``b`` are the same JSON value, else the first difference's path.

    Stricter than ``==``: ``1`` is not ``1.0``, ``True`` is not ``1``, ``-0.0`` is not ``0.0``,
    and object keys must come in the same order.
    """
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {_short(a)} != {type(b).__name__} {_short(b)}"
    if isinstance(a, float):
        if a != b or math.copysign(1.0, a) != math.copysign(1.0, b):
            return f"{path}: {a!r} != {b!r}"
        return None
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)[:6]} != {list(b)[:6]}"
        for key in a:
            diff = same(a[key], b[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = same(x, y, f"{path}[{index}]")
            if diff:
                return diff
        return None
    return None if a == b else f"{path}: {_short(a)} != {_short(b)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
