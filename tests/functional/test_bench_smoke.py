"""Every benchmark runs end to end at its tiny ``--quick`` size, so that ``make bench`` cannot rot.

No timing is asserted anywhere (the machine is shared; benchmarks are not tests): only that each
benchmark runs in a fresh process, produces its tables and summary rows, and that the records it
pushed through the real extension all arrived.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.plots import scaling_plot
from bench.run import BENCHMARKS, render

ROOT = Path(__file__).resolve().parents[2]


def run_quick(name: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists(), proc.stdout[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", [b for b in BENCHMARKS if b != "ingest"] + ["ingest"])
def test_benchmark_runs_at_tiny_size(name, tmp_path):
    if name == "ingest" and not shutil.which("wrk"):
        pytest.skip("wrk is not installed (make bench installs it)")
    result = run_quick(name, tmp_path)
    assert result["name"] == name
    assert result["tables"] and all(t["rows"] for t in result["tables"])
    assert result["summary"], "every benchmark reports at least one summary row"
    for table in result["tables"]:
        assert all(len(row) == len(table["headers"]) for row in table["rows"])
    if name == "capture_call":
        note = next(n for n in result["notes"] if "received" in n)
        received, sent = (int(x.replace(",", "")) for x in re.findall(r"([\d,]+) of the ([\d,]+)", note)[0])
        assert received == sent > 0, note
    if name == "drain":
        read_back = next(n for n in result["notes"] if n.startswith("Read back"))
        counts = [
            int(x.replace(",", "")) for x in re.findall(r"(?:s3_jsonl|s3_parquet|cloudwatch) ([\d,]+)", read_back)
        ]
        assert len(counts) == 3 and len(set(counts)) == 1, read_back


def test_report_and_plot_render_from_results(tmp_path):
    results = [
        {
            "name": "capture_call",
            "title": "1. Cost",
            "seconds": 1.0,
            "load": (0.1, 0.2),
            "tables": [{"title": "t", "headers": ["a", "b"], "rows": [["1", "2"]]}],
            "summary": [{"benchmark": "1. Cost", "metric": "p50", "value": "5 µs", "goal": "≤ 10 µs", "met": True}],
            "notes": ["a note"],
            "series": {
                "capture_call": {"fast path (Unix socket)": {"1024": {"p50": 5e-6, "p99": 2e-5}}},
                "ingest": {"fast path (Unix socket)": {"1024": [1000.0, 1200.0]}},
                "drain": [
                    {"n": 100, "warm": True, "exit_ms": 300.0, "s3_jsonl": 100, "s3_parquet": 100, "cloudwatch": 99}
                ],
            },
        },
        {"name": "drain", "title": "drain", "error": "exited with 1", "seconds": 2.0},
    ]
    plot = scaling_plot(results, tmp_path / "scaling.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = render(results, quick=True, total_s=3.0, plot=plot)
    assert "| 1. Cost | p50 | 5 µs | ≤ 10 µs | met |" in text
    assert "| drain | did not run | exited with 1 |  | **failed** |" in text
    assert "![scaling](scaling.png)" in text and "cores (nproc)" in text and "Python" in text
