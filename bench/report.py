"""Benchmark 9: the drift report at 100k, 1M and 10M records, per engine.

``capture-ext sample-data`` writes N QA records over four days (the last day drifts: questions
twice as long) as zstd Parquet and as gzip JSON Lines. Each report runs as its own
``python -m capture_ext.report`` process (``--no-html``; the window's older half is the
baseline, so every record is read); wall time and the process's peak RSS (``wait4``) are taken.
The Python engine holds every record in memory, so it runs up to 1M only. Athena cannot be
reached from here: its SQL is checked offline by the tests, not timed. Data is kept between
runs in ``$CAPTURE_BENCH_DATA`` (default: a folder in the temp dir): 10M records take minutes
to write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import PYTHON, ROOT, Result

NAME = "report"
SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1_000, 2_000)
PYTHON_ENGINE_MAX = 1_000_000
JSONL_MAX = 1_000_000
PLOT = ROOT / "docs" / "benchmarks-report.png"


def data_dir() -> Path:
    return Path(os.environ.get("CAPTURE_BENCH_DATA", Path(tempfile.gettempdir()) / "capture-bench-report"))


def dataset(n: int, fmt: str) -> Path:
    """N records in ``fmt`` (written once, then reused)."""
    root = data_dir() / f"{fmt}-{n}"
    done = root / "done"
    if not done.exists():
        argv = [PYTHON, "-m", "capture_ext.report.synth", str(root), "--records", str(n), "--days", "4"]
        argv += ["--drift", "question", "--format", fmt]
        subprocess.run(argv, cwd=str(ROOT), check=True, stdout=subprocess.DEVNULL)
        done.write_text("ok")
    return root / "inference-capture"


def run_report(data: Path, engine: str, fmt: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="capture-bench-out-") as out:
        argv = [PYTHON, "-m", "capture_ext.report", "--data", str(data), "--format", fmt]
        argv += ["--engine", engine, "--out", out, "--no-html", "-q", "--exit-zero"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        violations = Path(out) / "violations.json"
        if proc.returncode != 0 or not violations.exists():
            return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"}
        doc = json.loads(violations.read_text())
    drifted = sorted(
        {c["feature_name"] for c in doc["violations"] if c["constraint_check_type"] == "baseline_drift_check"}
    )
    records = doc["num_records"]["baseline"] + doc["num_records"]["current"]
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "records": records, "drifted": drifted}


def plot(runs: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label in sorted({r["label"] for r in runs}):
        rows = sorted((r for r in runs if r["label"] == label and "wall_s" in r), key=lambda r: r["n"])
        if not rows:
            continue
        left.plot([r["n"] for r in rows], [r["wall_s"] for r in rows], marker="o", label=label)
        right.plot([r["n"] for r in rows], [r["rss_mb"] for r in rows], marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="records", ylabel="wall time (s)", title="Report wall time")
    right.set(xscale="log", xlabel="records", ylabel="peak RSS (MB)", title="Report peak memory")
    right.axhline(1024, ls="--", color="grey", lw=1)
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


def run(quick: bool) -> Result:
    result = Result(NAME, "9. Drift report at scale (per engine)")
    sizes = QUICK_SIZES if quick else SIZES
    runs: list[dict[str, Any]] = []
    for n in sizes:
        combos = [("duckdb", "parquet")]
        full = not quick or n == sizes[0]  # --quick: the other engines at the smallest size only
        if n <= JSONL_MAX and full:
            combos.append(("duckdb", "jsonl"))
        if n <= PYTHON_ENGINE_MAX and full:
            combos.append(("python", "parquet"))
        for engine, fmt in combos:
            print(f"report: {n:,} records, {engine} on {fmt}", flush=True)
            data = dataset(n, fmt)
            runs.append({"n": n, "label": f"{engine} · {fmt}", **run_report(data, engine, fmt)})
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([f"{r['n']:,}", r["label"], "failed", "", "", r["error"]])
            continue
        rows.append(
            [
                f"{r['n']:,}",
                r["label"],
                f"{r['wall_s']:.1f}",
                f"{r['rss_mb']:.0f}",
                f"{r['n'] / r['wall_s']:,.0f}",
                ", ".join(r["drifted"]) or "none",
            ]
        )
    result.table(
        "Whole report (--no-html), every record read",
        ["records", "engine · format", "wall time (s)", "peak RSS (MB)", "records/s", "drift found in"],
        rows,
    )
    by = {(r["n"], r["label"]): r for r in runs if "wall_s" in r}
    big, lo, hi = sizes[-1], sizes[0], sizes[1]
    top = by.get((big, "duckdb · parquet"))
    if top:
        result.goal(
            f"peak RSS, {big:,} records, duckdb on Parquet",
            f"{top['rss_mb']:.0f} MB",
            "≤ 1024 MB",
            top["rss_mb"] <= 1024,
        )
        rate = big / top["wall_s"]
        result.goal(
            f"input rate, {big:,} records, duckdb on Parquet", f"{rate:,.0f} records/s", "≥ 1,000,000/s", rate >= 1e6
        )
    small, mid = by.get((lo, "duckdb · parquet")), by.get((hi, "duckdb · parquet"))
    if small and mid:
        mem, t = mid["rss_mb"] / small["rss_mb"], mid["wall_s"] / small["wall_s"]
        result.goal(f"memory {hi:,} / {lo:,} records (duckdb)", f"{mem:.2f}×", "≤ 2×", mem <= 2)
        result.goal(f"time {hi:,} / {lo:,} records (duckdb)", f"{t:.2f}×", "≤ 6×", t <= 6)
    verdicts: dict[int, set[tuple[str, ...]]] = {}
    for r in runs:
        if "drifted" in r:
            verdicts.setdefault(r["n"], set()).add(tuple(r["drifted"]))
    same = all(len(v) == 1 for v in verdicts.values())
    result.goal("same drifted features from every engine and format", "yes" if same else "no", "same", same)
    if not quick:
        plot(runs, PLOT)
        result.notes.append(f"Plot: [{PLOT.name}]({PLOT.name}).")
    result.notes.append("Athena is not timed here (no AWS); see docs/report.md for its cost per report.")
    result.series[NAME] = runs
    return result


def main(argv: list[str] | None = None) -> int:
    from bench._harness import cli

    return cli(NAME, "Drift report wall time and peak RSS per engine at 100k, 1M and 10M records.", run, argv)


if __name__ == "__main__":
    sys.exit(main())
