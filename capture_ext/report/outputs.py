"""Where a report's files go: staged inside ``--out``, published whole, ``violations.json`` last.

A failed run must never leave a verdict behind, and a half-written report must never look
whole: the writers fill a staging folder and :func:`publish` moves it into place, the verdict
file last. :class:`Findings` is everything one comparison produced, handed to both writers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from capture_ext.report.baseline import to_statistics
from capture_ext.report.descriptors import Profile
from capture_ext.report.drift import DRIFT, Check, Thresholds

PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Findings:
    """One comparison of the current window against its baseline, and the verdict it gives."""

    data: str  # what was read (``--data``), as the user wrote it
    window: str  # the window, described for people
    baseline_source: str  # where the baseline came from, described for people
    baseline: Profile
    current: Profile
    checks: list[Check]
    thresholds: Thresholds
    code: int  # the exit code the verdict gives

    @property
    def drift_detected(self) -> bool:
        return any(c.violated and c.check_type == DRIFT for c in self.checks)


def write_html(found: Findings, stage: str) -> str:
    """Render the plots (as files and embedded) and report.html into ``stage``; return its staged path."""
    from capture_ext.report import html, plots

    out = stage
    baseline, current, checks = found.baseline, found.current, found.checks
    os.makedirs(os.path.join(out, PLOTS_DIR), exist_ok=True)
    verdicts = {c.feature: c for c in checks if c.check_type == DRIFT}
    order = sorted(current.features, key=lambda n: (not (n in verdicts and verdicts[n].violated), n))
    distributions = []
    for name in order:
        check = verdicts.get(name)
        verdict = "drift" if check and check.violated else "not tested" if not check or check.skipped else "no drift"
        distributions.append(plots.distribution(name, baseline.features.get(name), current.features[name], verdict))
    series = [p for p in (plots.volume(current), plots.descriptors_over_time(current, baseline)) if p]
    for plot in (*series, *distributions):
        with open(os.path.join(out, PLOTS_DIR, plot.filename), "wb") as handle:
            handle.write(plot.png)
    ctx = html.Context(found.data, found.window, found.baseline_source, found.thresholds, found.code)
    page = html.render(ctx, baseline, current, checks, series, distributions, PLOTS_DIR)
    report = os.path.join(out, "report.html")
    with open(report, "w", encoding="utf-8") as handle:
        handle.write(page)
    return report


def write_json(found: Findings, stage: str) -> None:
    """Write violations.json and statistics.json into ``stage``."""
    out, checks = stage, found.checks
    violations = {
        "violations": [c.as_json() for c in checks if c.violated],
        "drift_detected": found.drift_detected,
        "exit_code": found.code,
        "data": found.data,
        "window": found.window,
        "baseline": found.baseline_source,
        "num_records": {"baseline": found.baseline.n_rows, "current": found.current.n_rows},
        "checks": [c.as_json() | {"violated": c.violated, "skipped": c.skipped} for c in checks],
    }
    statistics = to_statistics(found.current, found.window, found.data)
    for name, doc in (("statistics.json", statistics), ("violations.json", violations)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=1, ensure_ascii=False, allow_nan=False)
            handle.write("\n")


def prepare_out(path: str) -> None:
    """Check ``--out`` before any work: a folder that is, or can be created, writable.

    A failed run must not leave a verdict behind, so an old ``violations.json`` is removed first.
    """
    out = os.path.abspath(path)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {path} exists and is not a folder")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path} is not a writable folder ({existing} is not writable)")
    stale = os.path.join(out, "violations.json")
    if os.path.lexists(stale):
        try:
            os.unlink(stale)  # a link is removed, never followed
        except OSError as exc:
            raise ValueError(f"--out {path}: cannot replace violations.json: {exc.strerror or exc}") from None


def stage_dir(path: str) -> str:
    """A staging folder inside ``--out``: outputs appear there whole, then move into place."""
    out = os.path.abspath(path)
    os.makedirs(out, exist_ok=True)
    return tempfile.mkdtemp(prefix=".capture-report-", dir=out)


def publish(stage: str, out: str) -> None:
    """Move the staged outputs into ``out``, replacing links rather than following them;
    violations.json last, so its presence means the whole report was written."""
    names = sorted(os.listdir(stage), key=lambda n: n == "violations.json")
    for name in names:
        src, dst = os.path.join(stage, name), os.path.join(out, name)
        if os.path.isdir(src):
            if os.path.islink(dst) or (os.path.lexists(dst) and not os.path.isdir(dst)):
                os.unlink(dst)
            os.makedirs(dst, exist_ok=True)
            for leaf in os.listdir(src):
                os.replace(os.path.join(src, leaf), os.path.join(dst, leaf))
        else:
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
    shutil.rmtree(stage, ignore_errors=True)
