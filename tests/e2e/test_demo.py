"""``make demo`` keeps working: the demo as a process, two requests per phase, and its summary."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.fixtures.full_stack import REPO
from tests.helpers import coverage_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_answers_captures_into_every_sink_and_summarises(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODEL_DIR": str(tmp_path / "no-model-here")}
    env.update(coverage_env())  # the demo's processes are measured too under `make test`
    done = subprocess.run(
        [sys.executable, "-m", "demo", "--requests", "3", "--report-dir", str(tmp_path / "report")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "requests answered: 6/6 (3 warm-up + 3 timed" in out  # the first 3 requests are all distinct
    assert "TINY RANDOM stand-in" in out and "make model" in out
    for sink in ("s3_jsonl", "s3_parquet", "cloudwatch"):
        row = next(line for line in out.splitlines() if line.strip().startswith(f"{sink} ") and "all" in line)
        assert row.split()[1] == "6", row
    assert "with capture" in out and "without extension" in out
    assert "SIGKILLed: none" in out
    report = tmp_path / "report" / "report.html"
    assert f"open {report}" in out
    assert report.read_text().startswith("<!DOCTYPE html>") and (tmp_path / "report" / "violations.json").exists()
