"""The report's figures: each feature's distribution against the baseline, and time series.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global state), rendered to PNG bytes that the HTML embeds and that are also written as files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from capture_ext.report.descriptors import CATEGORICAL, Feature, Profile, Series

log = logging.getLogger(__name__)

BASELINE_COLOUR, CURRENT_COLOUR = "#7f8c9a", "#d9534f"
MAX_CATEGORIES_SHOWN = 12
MAX_SLUG = 80
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    text = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text.replace("$", r"\$")


def slug(name: str) -> str:
    """A file name for a feature, distinct per name: ``a b``, ``a_b`` and ``a/b`` must not share one.

    Names that are not already safe get a short hash; long names are cut (NAME_MAX is 255 bytes).
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "feature"
    if safe == name and len(safe) <= MAX_SLUG:
        return safe
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe[:MAX_SLUG]}-{digest}"


def distribution(name: str, ref: Feature | None, cur: Feature, verdict: str) -> Plot:
    """Baseline vs current: overlaid density histograms (numeric) or proportions (categorical)."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    ref_values = ref.values if ref is not None else []
    if cur.kind == CATEGORICAL:
        r = ref.category_counts() if ref is not None else Counter[str]()
        c = cur.category_counts()
        keys = [k for k, _ in (r + c).most_common(MAX_CATEGORIES_SHOWN)]
        x = np.arange(len(keys))
        for offset, counts, total, colour, label in (
            (-0.2, r, r.total(), BASELINE_COLOUR, "baseline"),
            (0.2, c, c.total(), CURRENT_COLOUR, "current"),
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


def _bucket_label(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds // 86400} d"
    return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"


def _plottable(series: Series | None) -> bool:
    """Matplotlib dates stop at year 9999: a window reaching its edges is reported, not plotted."""
    if series is None or not series.starts:
        return False
    room = (datetime.max.replace(tzinfo=UTC) - series.starts[-1]).total_seconds()
    if series.starts[0].year < 2 or room < 2 * series.bucket_seconds + 366 * 86400:
        log.warning("time series not plotted: captured_at reaches %s", series.starts[-1].date())
        return False
    return True


def volume(profile: Profile) -> Plot | None:
    """Records per time bucket in the current window."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    series = profile.series
    if not _plottable(series):
        return None
    assert series is not None
    fig = _figure(height=2.6, width=9)
    ax = fig.add_subplot()
    width = timedelta(seconds=series.bucket_seconds * 0.9)
    ax.bar(series.starts, series.volume, width=width, color=CURRENT_COLOUR)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(f"records / {_bucket_label(series.bucket_seconds)}")
    ax.set_title(f"Volume ({profile.n_rows} records)", fontsize=10)
    return Plot("volume", "Volume over time", "timeseries_volume.png", _png(fig))


def _median(feat: Feature) -> float | None:
    import numpy as np

    values = np.asarray(feat.values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def descriptors_over_time(profile: Profile, baseline: Profile | None) -> Plot | None:
    """Median and 90th percentile per bucket of up to three numeric descriptors, with the baseline
    median as a dashed line: where a drift started is often the first question after "whether"."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    series = profile.series
    if not _plottable(series) or series is None or not series.quantiles:
        return None
    names = list(series.quantiles)
    fig = _figure(height=2.2 * len(names), width=9)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        medians, p90 = series.quantiles[name]
        points = [(t, m, p) for t, m, p in zip(series.starts, medians, p90, strict=True) if m is not None]
        ax.plot([t for t, _, _ in points], [m for _, m, _ in points], marker=".", color=CURRENT_COLOUR, label="median")
        ax.plot([t for t, _, _ in points], [p for _, _, p in points], ":", color=CURRENT_COLOUR, label="p90")
        ref = baseline.features.get(name) if baseline else None
        ref_median = _median(ref) if ref is not None and ref.kind != CATEGORICAL else None
        if ref_median is not None:
            ax.axhline(ref_median, ls="--", color=BASELINE_COLOUR, label="baseline median")
        ax.set_ylabel(plain(name), fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes[0].set_title(f"Descriptors over time (per {_bucket_label(series.bucket_seconds)})", fontsize=10)
    return Plot("descriptors", "Descriptors over time", "timeseries_descriptors.png", _png(fig))
