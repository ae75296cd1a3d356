"""The scaling figure of docs/benchmarks.md (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def scaling_plot(results: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, Any] = {}
    for r in results:
        series.update(r.get("series", {}))
    fig, (calls, ingest, drain) = plt.subplots(1, 3, figsize=(15, 4.5))

    for method, by_size in series.get("capture_call", {}).items():
        if not by_size:
            continue
        sizes = sorted(int(s) for s in by_size)
        kb = [s / 1024 for s in sizes]
        calls.plot(kb, [by_size[str(s)]["p50"] * 1e6 for s in sizes], marker="o", label=method)
        if method.startswith("fast path (Unix"):
            calls.plot(kb, [by_size[str(s)]["p99"] * 1e6 for s in sizes], "--", color="C0", label="fast path p99")
    calls.set(xscale="log", yscale="log", xlabel="record size (KB)", ylabel="µs per call", title="Capture call cost")
    calls.legend(fontsize=7)
    calls.grid(True, which="both", alpha=0.3)

    for method, by_size in series.get("ingest", {}).items():
        sizes = sorted(int(s) for s in by_size)
        medians = [sorted(by_size[str(s)])[len(by_size[str(s)]) // 2] for s in sizes]
        ingest.plot([s / 1024 for s in sizes], medians, marker="o", label=method)
    ingest.set(xscale="log", yscale="log", xlabel="record size (KB)", ylabel="records/s", title="Ingest, one core")
    ingest.legend(fontsize=7)
    ingest.grid(True, which="both", alpha=0.3)

    for warm, color in ((True, "C2"), (False, "C3")):
        trials = sorted((t for t in series.get("drain", []) if t.get("warm", True) == warm), key=lambda t: t["n"])
        if not trials:
            continue
        label = "warm clients" if warm else "cold clients"
        drain.plot([t["n"] for t in trials], [t["exit_ms"] for t in trials], color=color, label=label)
        for t in trials:
            ok = min(t["s3_jsonl"], t["s3_parquet"], t["cloudwatch"]) >= t["n"]
            drain.scatter([t["n"]], [t["exit_ms"]], color=color, facecolors=color if ok else "none", zorder=3)
    drain.axhline(1800, color="grey", linestyle=":", label="SHUTDOWN deadline")
    drain.set(xscale="log", xlabel="backlog (1 KB records)", ylabel="SHUTDOWN → exit (ms)", title="Shutdown drain")
    drain.legend(fontsize=7)
    drain.grid(True, which="both", alpha=0.3)

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
