"""Render the report as one self-contained HTML file (inline CSS, plots as data: URIs).

One file that can be mailed, attached to a pipeline run or opened from S3 without a server;
each ``<img>`` also names its PNG file (``data-file``) for tools that want the images alone.
"""

from __future__ import annotations

import base64
import re
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from capture_ext.report.descriptors import CATEGORICAL, Feature, Profile
from capture_ext.report.drift import DRIFT, TEST_NAMES, Check, Thresholds
from capture_ext.report.plots import Plot

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{color:#5b6672;font-size:13px}
.banner{padding:14px 18px;border-radius:8px;font-size:16px;font-weight:600;margin:16px 0}
.drift{background:#fde8e7;color:#a12622;border:1px solid #f3b9b6}
.quality{background:#fff4dc;color:#8a5a00;border:1px solid #f1d48f}
.ok{background:#e5f5ea;color:#1d6b35;border:1px solid #b3dfc0}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{padding:6px 9px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.tag.bad{background:#fde8e7;color:#a12622}.tag.good{background:#e5f5ea;color:#1d6b35}
.tag.skip{background:#eef1f4;color:#5b6672}
.stack{display:grid;gap:14px;max-width:980px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:8px}
figure img{width:100%;height:auto;display:block}figcaption{font-size:12px;color:#5b6672;padding:4px}
.kv td:first-child{width:190px;color:#5b6672}
"""


@dataclass(frozen=True)
class Context:
    """What the page says about where the numbers came from."""

    source: str
    window: str
    baseline_source: str
    thresholds: Thresholds
    exit_code: int


def _img(plot: Plot, plots_dir: str) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="{_text(plot.key)}"><img src="data:image/png;base64,{data}" '
        f'data-file="{_text(plots_dir)}/{_text(plot.filename)}" alt="{_text(plot.title)}">'
        f"<figcaption>{_text(plot.title)} · {_text(plots_dir)}/{_text(plot.filename)}</figcaption></figure>"
    )


def _text(value: str) -> str:
    """HTML-escaped, with control characters (NUL included) shown as ``\\xNN``: names come from data."""
    return escape(CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value))


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


def _summary(feat: Feature | None) -> str:
    if feat is None:
        return "–"
    if feat.kind == CATEGORICAL:
        counts = feat.category_counts()
        total = counts.total()
        top = counts.most_common(3)
        return ", ".join(f"{_text(str(k)[:24])} {n / total:.0%}" for k, n in top) if total else "–"
    if not feat.values:
        return "–"
    values = sorted(feat.values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"mean {statistics.fmean(values):.4g} · median {statistics.median(values):.4g} · p90 {p90:.4g}"


def _banner(checks: list[Check]) -> str:
    drifted = sorted({c.feature for c in checks if c.violated and c.check_type == DRIFT})
    quality = [c for c in checks if c.violated and c.check_type != DRIFT]
    if drifted:
        names = ", ".join(_text(n) for n in drifted)
        return f'<div class="banner drift">Drift detected in {len(drifted)} feature(s): {names}</div>'
    if quality:
        return f'<div class="banner quality">No drift, but {len(quality)} data-quality violation(s)</div>'
    return '<div class="banner ok">No drift detected</div>'


def _checks_table(checks: list[Check]) -> str:
    rows = []
    order = sorted(checks, key=lambda c: (not c.violated, c.check_type != DRIFT, c.feature))
    for c in order:
        tag = (
            '<span class="tag bad">violation</span>'
            if c.violated
            else '<span class="tag skip">skipped</span>'
            if c.skipped
            else '<span class="tag good">ok</span>'
        )
        rows.append(
            f"<tr><td>{_text(c.feature)}</td><td>{_text(c.check_type)}</td>"
            f"<td>{_text(TEST_NAMES.get(c.test or '', '–'))}</td><td class=num>{_fmt(c.statistic)}</td>"
            f"<td class=num>{_fmt(c.p_value)}</td><td class=num>{_fmt(c.threshold)}</td>"
            f"<td>{tag}</td><td>{_text(c.description)}</td></tr>"
        )
    head = (
        "<tr><th>feature</th><th>check</th><th>test</th><th>statistic</th><th>p-value</th>"
        "<th>threshold</th><th>result</th><th>detail</th></tr>"
    )
    return f"<table id=checks>{head}{''.join(rows)}</table>"


def _profile_table(baseline: Profile, current: Profile) -> str:
    rows = []
    for name, cur in current.features.items():
        ref = baseline.features.get(name)
        rows.append(
            f"<tr><td>{_text(name)}</td><td>{_text(cur.description)}</td>"
            f"<td>{_summary(ref)}</td><td>{_summary(cur)}</td>"
            f"<td class=num>{cur.completeness:.0%}</td></tr>"
        )
    head = "<tr><th>feature</th><th>descriptor</th><th>baseline</th><th>current</th><th>current completeness</th></tr>"
    return f"<table id=profile>{head}{''.join(rows)}</table>"


def render(
    ctx: Context,
    baseline: Profile,
    current: Profile,
    checks: list[Check],
    series: list[Plot],
    distributions: list[Plot],
    plots_dir: str,
) -> str:
    t = ctx.thresholds
    kv: list[tuple[str, Any]] = [
        ("data", ctx.source),
        ("current window", f"{ctx.window} · {current.n_rows} records"),
        ("baseline", f"{ctx.baseline_source} · {baseline.n_rows} records"),
        ("model type", "extractive question answering" if current.qa else "generic (flat input/output fields)"),
        (
            "tests",
            f"reference ≤ {t.small_sample} values: KS / chi-squared (z-test if binary), p < {t.p_value}; "
            f"larger: Wasserstein (normed) / Jensen–Shannon ≥ {t.distance}",
        ),
        ("exit code", ctx.exit_code),
        ("generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    meta = "".join(f"<tr><td>{_text(k)}</td><td>{_text(str(v))}</td></tr>" for k, v in kv)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>capture-ext drift report — {_text(ctx.window)}</title><style>{CSS}</style></head>
<body><main>
<h1>capture-ext drift report</h1>
<div class="meta">{_text(ctx.source)} · {_text(ctx.window)}</div>
{_banner(checks)}
<table class="kv">{meta}</table>
<h2>Checks</h2>
{_checks_table(checks)}
<h2>Distributions against the baseline</h2>
<div class="grid">{"".join(_img(p, plots_dir) for p in distributions)}</div>
<h2>Over time</h2>
<div class="stack">{"".join(_img(p, plots_dir) for p in series)}</div>
<h2>Profile</h2>
{_profile_table(baseline, current)}
</main></body></html>
"""
