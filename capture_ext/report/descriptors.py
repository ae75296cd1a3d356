"""Turn captured records into per-feature columns that can be profiled and compared.

Two layers: question-answering descriptors (lengths, empty answers, answer found in the
context, score) when the records look like extractive QA, and a generic profile of the flat
``input``/``output`` fields for any model. A field's kind (numeric, categorical or text) is
decided once, on the baseline, and imposed on the current window, so that a field that starts
receiving strings shows up as a type violation instead of silently changing its test.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NUMERIC, CATEGORICAL, TEXT = "numeric", "categorical", "text"
# Strings with few distinct short values are categories (labels, model versions); the rest is
# free text, profiled by its length.
MAX_CATEGORIES = 20
MAX_CATEGORY_CHARS = 64
MAX_FIELDS_PER_SIDE = 40
MAX_DEPTH = 2

QA_FIELDS: dict[str, tuple[str, str]] = {
    "question_length": (NUMERIC, "question length (characters)"),
    "context_length": (NUMERIC, "context length (characters)"),
    "answer_length": (NUMERIC, "answer length (characters)"),
    "answer_empty": (CATEGORICAL, "answer is missing or blank (unanswerable)"),
    "answer_in_context": (CATEGORICAL, "answer occurs in the context (case-insensitive)"),
    "score": (NUMERIC, "model confidence score"),
}
RECORD_FIELDS: dict[str, tuple[str, str]] = {"latency_ms": (NUMERIC, "inference latency (ms)")}
# Fields the QA descriptors already cover; profiling them again would double-count drift.
QA_CONSUMED = {"input.question", "input.context", "output.answer", "output.score", "output.question"}


@dataclass
class Feature:
    """One profiled column. ``values`` holds the present values (maybe a sample, for a baseline
    file); ``series`` is aligned with the profile's timestamps when rows are available."""

    name: str
    kind: str
    description: str
    group: str
    n_rows: int
    n_values: int
    values: list[Any]
    series: list[Any] | None = None
    n_type_errors: int = 0
    check_completeness: bool = True
    # Exact category counts when the engine aggregated them (values then stays empty).
    counts: dict[str, int] | None = None

    @property
    def completeness(self) -> float:
        return self.n_values / self.n_rows if self.n_rows else 0.0

    def category_counts(self) -> Counter[str]:
        """Counts per category, whether the engine returned counts or the values themselves."""
        if self.counts is not None:
            return Counter(self.counts)
        return Counter(map(str, self.values))


@dataclass
class Series:
    """The current window over time, already aggregated per bucket (bounded: ≤ MAX_BUCKETS + 1).

    ``quantiles`` maps a numeric feature to its (median, 90th percentile) per bucket, ``None``
    where the bucket holds no value of it.
    """

    bucket_seconds: int
    starts: list[datetime]
    volume: list[int]
    quantiles: dict[str, tuple[list[float | None], list[float | None]]] = field(default_factory=dict)


@dataclass
class Profile:
    """Everything the report knows about one window (or baseline file)."""

    label: str
    n_rows: int
    qa: bool
    kinds: dict[str, str]
    features: dict[str, Feature]
    series: Series | None = None
    extra_fields: list[str] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None


def _get(obj: Any, name: str) -> Any:
    """Case-insensitive key lookup: the original function answers ``{"Question", "Answer"}``."""
    if not isinstance(obj, dict):
        return None
    if name in obj:  # the common, exact spelling: no scan
        return obj[name]
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == name), None)


def is_qa(records: list[dict[str, Any]]) -> bool:
    """True when most records carry an input with both a question and a context."""
    shaped = sum(
        1
        for r in records
        if isinstance(r.get("input"), dict)
        and _get(r["input"], "question") is not None
        and _get(r["input"], "context") is not None
    )
    return bool(records) and shaped * 2 >= len(records)


def _qa_values(rec: dict[str, Any]) -> dict[str, Any]:
    question = _get(rec.get("input"), "question")
    context = _get(rec.get("input"), "context")
    output = rec.get("output")
    answer = _get(output, "answer") if isinstance(output, dict) else output
    score = _get(output, "score")
    blank = answer is None or (isinstance(answer, str) and not answer.strip())
    found = None
    if not blank and isinstance(context, str):
        found = str(answer).strip().lower() in context.lower()
    return {
        "question_length": len(question) if isinstance(question, str) else None,
        "context_length": len(context) if isinstance(context, str) else None,
        "answer_length": len(answer) if isinstance(answer, str) else (0 if answer is None else None),
        "answer_empty": blank if output is not None else None,
        "answer_in_context": found,
        "score": score,
    }


def flatten(prefix: str, value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Flat fields of a JSON value: nested objects up to MAX_DEPTH, lists by their length."""
    if isinstance(value, dict) and depth < MAX_DEPTH:
        for key, item in value.items():
            yield from flatten(f"{prefix}.{key}", item, depth + 1)
    elif isinstance(value, list):
        yield f"{prefix}.length", len(value)
    elif isinstance(value, dict):
        yield prefix, json.dumps(value, sort_keys=True)
    else:
        yield prefix, value


def raw_fields(records: list[dict[str, Any]], qa: bool) -> dict[str, list[Any]]:
    """Per-field value lists aligned with ``records`` (``None`` where a record lacks the field)."""
    columns: dict[str, list[Any]] = {}
    per_side: dict[str, int] = {"input": 0, "output": 0}

    def put(name: str, row: int, value: Any) -> None:
        if name not in columns:
            side = name.split(".", 1)[0]
            if side in per_side:
                if per_side[side] >= MAX_FIELDS_PER_SIDE:
                    return
                per_side[side] += 1
            columns[name] = [None] * len(records)
        columns[name][row] = value

    for row, rec in enumerate(records):
        put("latency_ms", row, rec.get("latency_ms"))
        if qa:
            for name, value in _qa_values(rec).items():
                put(name, row, value)
        for side in ("input", "output"):
            if side not in rec or rec[side] is None:
                continue
            for name, value in flatten(side, rec[side]):
                if not (qa and name.lower() in QA_CONSUMED):
                    put(name, row, value)
    return columns


def infer_kind(values: list[Any]) -> str | None:
    """numeric / categorical / text for a baseline column, or None when it holds no values."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return NUMERIC
    if all(isinstance(v, str) for v in present):
        distinct = set(present)
        long_text = max(len(v) for v in distinct) > MAX_CATEGORY_CHARS
        return TEXT if long_text or len(distinct) > MAX_CATEGORIES else CATEGORICAL
    return CATEGORICAL


def _convert(value: Any, kind: str) -> tuple[Any, bool]:
    """(converted value, type error?) for one cell under the baseline's kind."""
    if value is None:
        return None, False
    if kind == NUMERIC:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # NaN/inf (Python's json accepts them) count as missing: they would poison every test
            return (float(value), False) if math.isfinite(value) else (None, False)
        return None, True
    if kind == TEXT:
        return (len(value), False) if isinstance(value, str) else (None, True)
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    return str(value), False


def _describe(name: str, kind: str) -> tuple[str, str, str]:
    """(feature kind, description, group) for a raw field."""
    if name in QA_FIELDS:
        return QA_FIELDS[name][0], QA_FIELDS[name][1], "question answering"
    if name in RECORD_FIELDS:
        return RECORD_FIELDS[name][0], RECORD_FIELDS[name][1], "record"
    group = name.split(".", 1)[0]
    if kind == TEXT:
        return NUMERIC, f"length of {name} (characters)", group
    return kind, f"{name} ({kind})", group


def build_profile(
    records: list[dict[str, Any]],
    label: str,
    kinds: dict[str, str] | None = None,
    qa: bool | None = None,
) -> Profile:
    """Profile ``records``; with ``kinds`` (from the baseline) fields are read as the baseline's types."""
    qa = is_qa(records) if qa is None else qa
    columns = raw_fields(records, qa)
    if kinds is None:
        kinds = {}
        for name, values in columns.items():
            fixed = QA_FIELDS.get(name) or RECORD_FIELDS.get(name)
            kind = infer_kind(values)  # None: no record has a value, nothing to compare against
            if kind is not None:
                kinds[name] = fixed[0] if fixed else kind
    features: dict[str, Feature] = {}
    for name, kind in kinds.items():
        cells = columns.get(name, [None] * len(records))
        series, errors = [], 0
        for cell in cells:
            converted, bad = _convert(cell, kind)
            series.append(converted)
            errors += bad
        feature_kind, description, group = _describe(name, kind)
        present = [v for v in series if v is not None]
        features[name] = Feature(
            name=name,
            kind=feature_kind,
            description=description,
            group=group,
            n_rows=len(records),
            n_values=len(present),
            values=present,
            series=series,
            n_type_errors=errors,
            check_completeness=name not in QA_FIELDS,
        )
    extra = sorted(n for n, v in columns.items() if n not in kinds and any(x is not None for x in v))
    timestamps = [r["_ts"] for r in records] if all("_ts" in r for r in records) else []
    profile = Profile(
        label=label,
        n_rows=len(records),
        qa=qa,
        kinds=dict(kinds),
        features=features,
        extra_fields=extra,
        first=min(timestamps) if timestamps else None,
        last=max(timestamps) if timestamps else None,
    )
    if timestamps:
        from capture_ext.report.timeseries import series_from_rows

        profile.series = series_from_rows(timestamps, profile)
    return profile
