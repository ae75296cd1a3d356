"""Time buckets for the report's series, shared by every engine so their plots agree.

The bucket is the smallest of 1 min … 1 day that keeps the series within ``MAX_BUCKETS``
points, and wider still when the window spans years (one record dated 9999-12-31 must not ask
for millions of daily bars). Engines aggregate per bucket; only the buckets come back.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from capture_ext.report.descriptors import CATEGORICAL, Feature, Profile, Series

if TYPE_CHECKING:
    from collections.abc import Sequence

BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400)
MAX_BUCKETS = 60
SERIES_FEATURES = 3
TIME_SERIES_PREFERENCE = ("latency_ms", "score", "question_length", "answer_length", "context_length")


def bucket_seconds(span_seconds: float) -> int:
    """Bucket width for a window whose records span ``span_seconds``."""
    fixed = next((b for b in BUCKETS if span_seconds / b <= MAX_BUCKETS), None)
    if fixed is not None:
        return fixed
    days = math.ceil(span_seconds / BUCKETS[-1] / MAX_BUCKETS)
    return BUCKETS[-1] * max(1, days)


def bucket_start(epoch: float, seconds: int) -> datetime:
    start = math.floor(epoch / seconds) * seconds
    return datetime.fromtimestamp(start, UTC)


def series_features(features: Sequence[Feature]) -> list[str]:
    """Up to three numeric descriptors worth a line over time: latency, score, question length first."""
    by_name = {f.name: f for f in features if f.kind != CATEGORICAL and f.n_values}
    chosen = [n for n in TIME_SERIES_PREFERENCE if n in by_name]
    chosen += [n for n in sorted(by_name) if n not in chosen]
    return chosen[:SERIES_FEATURES]


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation, as numpy's default and SQL's ``quantile_cont``."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def series_from_rows(timestamps: list[datetime], profile: Profile) -> Series:
    """The Python engine's series: the same buckets the SQL engines compute."""
    epochs = [ts.timestamp() for ts in timestamps]
    seconds = bucket_seconds(max(epochs) - min(epochs))
    keys = [math.floor(e / seconds) for e in epochs]
    order = sorted(set(keys))
    index = {k: i for i, k in enumerate(order)}
    volume = [0] * len(order)
    for k in keys:
        volume[index[k]] += 1
    quantiles: dict[str, tuple[list[float | None], list[float | None]]] = {}
    for name in series_features(list(profile.features.values())):
        groups: list[list[float]] = [[] for _ in order]
        for k, value in zip(keys, profile.features[name].series or [], strict=True):
            if value is not None:
                groups[index[k]].append(float(value))
        quantiles[name] = (
            [_quantile(g, 0.5) if g else None for g in groups],
            [_quantile(g, 0.9) if g else None for g in groups],
        )
    return Series(seconds, [datetime.fromtimestamp(k * seconds, UTC) for k in order], volume, quantiles)
