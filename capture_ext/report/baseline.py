"""``statistics.json``: a baseline that can be stored and reused without the raw capture data.

SageMaker's ``suggest_baseline`` keeps KLL sketches; we keep a bounded, evenly spaced sample of
each feature (plus exact counts), which is what the KS and Wasserstein tests need and stays
small (at most ``SAMPLE_SIZE`` values per feature). Every report writes one for its current
window, so today's report can be tomorrow's baseline.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from typing import Any

from capture_ext.report.descriptors import CATEGORICAL, NUMERIC, TEXT, Feature, Profile

FORMAT_VERSION = 1
SAMPLE_SIZE = 5000


class BaselineError(Exception):
    """The baseline file is missing or malformed; the message says which and why."""


def _sample(values: list[Any], size: int = SAMPLE_SIZE) -> list[Any]:
    """Evenly spaced over sorted values: keeps the shape of the distribution, deterministic."""
    if len(values) <= size:
        return list(values)
    ordered = sorted(values)
    step = len(ordered) / size
    return [ordered[math.floor(i * step)] for i in range(size)]


def to_statistics(profile: Profile, window: str, source: str) -> dict[str, Any]:
    """The JSON document for ``profile`` (see docs/report.md for the schema)."""
    features: dict[str, Any] = {}
    for name, feat in profile.features.items():
        entry: dict[str, Any] = {
            "kind": feat.kind,
            "raw_kind": profile.kinds[name],
            "description": feat.description,
            "group": feat.group,
            "num_present": feat.n_values,
            "num_missing": feat.n_rows - feat.n_values,
            "check_completeness": feat.check_completeness,
        }
        if feat.kind == CATEGORICAL:
            entry["counts"] = dict(feat.category_counts().most_common())
        else:
            entry["sample"] = _sample(feat.values)
        features[name] = entry
    return {
        "capture_ext_statistics": FORMAT_VERSION,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "window": window,
        "num_records": profile.n_rows,
        "question_answering": profile.qa,
        "features": features,
    }


def write_statistics(path: str, profile: Profile, window: str, source: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(to_statistics(profile, window, source), handle, indent=1, sort_keys=False)
        handle.write("\n")


def _feature(name: str, entry: dict[str, Any], n_rows: int) -> tuple[Feature, str]:
    """One feature of a baseline file, checked: a bad one raises, it never reaches a test."""
    kind, raw_kind = entry["kind"], entry["raw_kind"]
    if kind not in (CATEGORICAL, NUMERIC) or raw_kind not in (CATEGORICAL, NUMERIC, TEXT):
        raise ValueError(f"unknown kind {kind!r}/{raw_kind!r}")
    present = int(entry["num_present"])
    if not 0 <= present <= n_rows:
        raise ValueError(f"num_present {present} is not between 0 and num_records {n_rows}")
    counts: dict[str, int] | None = None
    values: list[Any] = []
    if kind == CATEGORICAL:
        counts = {str(k): int(n) for k, n in entry["counts"].items()}
        if any(n < 0 for n in counts.values()):
            raise ValueError("negative category count")
    else:
        values = [float(v) for v in entry["sample"]]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("sample holds a value that is not a finite number")
    feature = Feature(
        name=name,
        kind=kind,
        description=str(entry.get("description", name)),
        group=str(entry.get("group", "")),
        n_rows=n_rows,
        n_values=present,
        values=values,
        check_completeness=bool(entry.get("check_completeness", True)),
        counts=counts,
    )
    return feature, raw_kind


def read_statistics(path: str) -> tuple[Profile, str]:
    """Load a baseline file as a Profile (no time series) and a description of where it came from."""
    if not os.path.isfile(path):
        raise BaselineError(f"baseline file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except ValueError as exc:
        raise BaselineError(f"baseline file {path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("capture_ext_statistics") != FORMAT_VERSION:
        raise BaselineError(
            f"{path} is not a capture-ext statistics file (version {FORMAT_VERSION}); "
            "make one with 'capture-ext report ... --out DIR' (DIR/statistics.json)"
        )
    n_rows = doc.get("num_records")
    if not isinstance(n_rows, int) or isinstance(n_rows, bool) or n_rows < 1:
        raise BaselineError(f"baseline file {path}: num_records must be a positive integer, got {n_rows!r}")
    entries = doc.get("features")
    if not isinstance(entries, dict) or not entries:
        raise BaselineError(f"baseline file {path}: features must be a non-empty object of features")
    features: dict[str, Feature] = {}
    kinds: dict[str, str] = {}
    name = "?"
    try:
        for name, entry in entries.items():
            features[name], kinds[name] = _feature(name, entry, n_rows)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BaselineError(f"baseline file {path} is malformed near feature {name!r}: {exc!r}") from exc
    label = f"baseline file {os.path.basename(path)} ({doc.get('window', '?')})"
    profile = Profile(
        label=label, n_rows=n_rows, qa=bool(doc.get("question_answering")), kinds=kinds, features=features
    )
    return profile, f"{path} ({doc.get('source', '?')}, {doc.get('window', '?')})"
