"""The report's figures: each feature's distribution against the baseline, and time series.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global state), rendered to PNG bytes that the HTML embeds and that are also written as files.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from capture_ext.report.descriptors import CATEGORICAL, Feature, Profile

BASELINE_COLOUR, CURRENT_COLOUR = "#7f8c9a", "#d9534f"
BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400)
MAX_BUCKETS = 60
MAX_CATEGORIES_SHOWN = 12
TIME_SERIES_PREFERENCE = ("latency_ms", "score", "question_length", "answer_length", "context_length")


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    filename: str
    png: bytes


def _figure(height: float = 3.0, width: float = 6.4) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plain(text: str) -> str:
    """Field names come from user data; a pair of ``$`` would switch matplotlib to math mode."""
    return text.replace("$", r"\$")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "feature"


def distribution(name: str, ref: Feature | None, cur: Feature, verdict: str) -> Plot:
    """Baseline vs current: overlaid density histograms (numeric) or proportions (categorical)."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    ref_values = ref.values if ref is not None else []
    if cur.kind == CATEGORICAL:
        r, c = Counter(ref_values), Counter(cur.values)
        keys = [k for k, _ in (r + c).most_common(MAX_CATEGORIES_SHOWN)]
        x = np.arange(len(keys))
        for offset, counts, total, colour, label in (
            (-0.2, r, len(ref_values), BASELINE_COLOUR, "baseline"),
            (0.2, c, len(cur.values), CURRENT_COLOUR, "current"),
        ):
            if total:
                ax.bar(x + offset, [counts[k] / total for k in keys], 0.4, color=colour, label=label)
        ax.set_xticks(x, [plain(k[:20]) for k in keys], rotation=30 if len(keys) > 4 else 0, ha="right")
        ax.set_ylabel("share of records")
    else:
        ref_arr, cur_arr = np.asarray(ref_values, dtype=float), np.asarray(cur.values, dtype=float)
        ref_arr, cur_arr = ref_arr[np.isfinite(ref_arr)], cur_arr[np.isfinite(cur_arr)]
        both = np.concatenate([ref_arr, cur_arr])
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        # np.histogram + stairs: the same picture as ax.hist, without per-value Python work
        for values, colour, alpha, label in (
            (ref_arr, BASELINE_COLOUR, 0.6, "baseline"),
            (cur_arr, CURRENT_COLOUR, 0.5, "current"),
        ):
            if values.size:
                density, _ = np.histogram(values, bins=bins, density=True)
                ax.stairs(density, bins, fill=True, color=colour, alpha=alpha, label=label)
        ax.set_ylabel("density")
        ax.set_xlabel(plain(cur.description))
    ax.set_title(plain(f"{name} — {verdict}"), fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="#5b6672")
    return Plot(f"dist:{name}", f"{name}: distribution", f"dist_{slug(name)}.png", _png(fig))


def bucket_seconds(timestamps: list[datetime]) -> int:
    """The smallest of 1 min … 1 day that keeps the series within MAX_BUCKETS points."""
    if len(timestamps) < 2:
        return BUCKETS[0]
    span = (max(timestamps) - min(timestamps)).total_seconds()
    return next((b for b in BUCKETS if span / b <= MAX_BUCKETS), BUCKETS[-1])


def _bucket(ts: datetime, seconds: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _bucket_label(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"


def volume(profile: Profile) -> Plot:
    """Records per time bucket in the current window."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    seconds = bucket_seconds(profile.timestamps)
    counts = Counter(_bucket(ts, seconds) for ts in profile.timestamps)
    keys = sorted(counts)
    fig = _figure(height=2.6, width=9)
    ax = fig.add_subplot()
    ax.bar(keys, [counts[k] for k in keys], width=timedelta(seconds=seconds * 0.9), color=CURRENT_COLOUR)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(f"records / {_bucket_label(seconds)}")
    ax.set_title(f"Volume ({profile.n_rows} records)", fontsize=10)
    return Plot("volume", "Volume over time", "timeseries_volume.png", _png(fig))


def _series_features(profile: Profile) -> list[Feature]:
    numeric = [f for f in profile.features.values() if f.kind != CATEGORICAL and f.n_values]
    chosen = [profile.features[n] for n in TIME_SERIES_PREFERENCE if n in profile.features]
    chosen = [f for f in chosen if f.n_values]
    chosen += [f for f in numeric if f not in chosen]
    return chosen[:3]


def descriptors_over_time(profile: Profile, baseline: Profile | None) -> Plot | None:
    """Median and 90th percentile per bucket of up to three numeric descriptors, with the baseline
    median as a dashed line: where a drift started is often the first question after "whether"."""
    import numpy as np
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    features = _series_features(profile)
    if not features or not profile.timestamps:
        return None
    seconds = bucket_seconds(profile.timestamps)
    fig = _figure(height=2.2 * len(features), width=9)
    axes = fig.subplots(len(features), 1, sharex=True, squeeze=False)[:, 0]
    for ax, feat in zip(axes, features, strict=True):
        groups: dict[datetime, list[float]] = {}
        for ts, value in zip(profile.timestamps, feat.series or [], strict=True):
            if value is not None:
                groups.setdefault(_bucket(ts, seconds), []).append(value)
        keys = sorted(groups)
        ax.plot(keys, [np.median(groups[k]) for k in keys], marker=".", color=CURRENT_COLOUR, label="median")
        ax.plot(keys, [np.percentile(groups[k], 90) for k in keys], ":", color=CURRENT_COLOUR, label="p90")
        ref = baseline.features.get(feat.name) if baseline else None
        if ref is not None and ref.values:
            ax.axhline(float(np.median(ref.values)), ls="--", color=BASELINE_COLOUR, label="baseline median")
        ax.set_ylabel(plain(feat.name), fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes[0].set_title(f"Descriptors over time (per {_bucket_label(seconds)})", fontsize=10)
    return Plot("descriptors", "Descriptors over time", "timeseries_descriptors.png", _png(fig))
