"""A crash must never read as drift: hostile options, baselines, outputs and records.

Each case: one clear line on stderr, a documented non-drift exit code (2 for the command line,
3 for no report), never a traceback, and never a ``violations.json`` from a run that failed.
The property test feeds both local engines seeded random hostile records next to valid ones
(identical in both windows, so no drift exists) and asserts exactly that.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from capture_ext.report.cli import main
from capture_ext.report.synth import START, capture_objects, make_records, write_tree

ENGINES = ["duckdb", "python"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("capture")
    records = make_records(120, START, seconds=600, seed=1) + make_records(
        120, START + timedelta(days=1), seconds=600, seed=2
    )
    write_tree(root, capture_objects(records, fmt="jsonl", batch_size=60))
    return root / "inference-capture"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(
    "option",
    [
        ["--p-value", "nan"],
        ["--p-value", "7"],
        ["--p-value", "0"],
        ["--p-value", "-0.1"],
        ["--distance", "-1"],
        ["--distance", "inf"],
        ["--distance", "nan"],
        ["--small-sample", "-5"],
        ["--last", "999999999d"],
        ["--last", "0h"],
        ["--start", "0001-01-01T00:00+05:00"],
    ],
)
def test_bad_thresholds_and_windows_are_usage_errors(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str]
) -> None:
    code, err = run(capsys, "--data", str(capture), "--out", str(tmp_path / "out"), *option)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("capture-ext report: error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_extreme_but_valid_windows_give_a_report(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    code, _ = run(
        capsys, "--data", str(capture), "--start", "0001-01-01T00:00", "--end", "9999-12-31T23:59",
        "--out", str(tmp_path), "--engine", engine, "--no-html", "-q",
    )  # fmt: skip
    assert code in (0, 4)


def test_out_that_is_a_file_or_under_a_file_is_refused_before_any_work(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out in (afile, afile / "sub"):
        code, err = run(capsys, "--data", str(capture), "--out", str(out))
        assert code == 2 and "--out" in err
    assert afile.read_text() == "keep"


def test_links_out_of_the_output_folder_are_replaced_not_followed(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "violations.json").symlink_to(outside)
    (out / "statistics.json").symlink_to(outside)
    (out / "plots").symlink_to(elsewhere, target_is_directory=True)
    code, _ = run(capsys, "--data", str(capture), "--out", str(out), "-q")
    assert code in (0, 4)
    assert outside.read_text() == "precious" and not list(elsewhere.iterdir())
    assert not (out / "violations.json").is_symlink() and json.loads((out / "violations.json").read_text())
    assert not (out / "plots").is_symlink() and list((out / "plots").iterdir())


def test_a_failed_run_leaves_no_violations_json(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "violations.json").write_text('{"drift_detected": true}')  # from an earlier run
    code, err = run(capsys, "--data", str(capture), "--start", "2001-01-01", "--end", "2001-01-02", "--out", str(out))
    assert code == 3 and "no records" in err
    assert not (out / "violations.json").exists()


@pytest.mark.parametrize(
    "doc",
    [
        {"capture_ext_statistics": 1, "features": {"score": {}}},
        {"capture_ext_statistics": 1, "num_records": 10, "features": []},
        {"capture_ext_statistics": 1, "num_records": 10, "features": {}},
        {"capture_ext_statistics": 1, "num_records": "10", "features": {"a": {}}},
        {"capture_ext_statistics": 1, "num_records": 10, "features": {"a": {"kind": "numeric"}}},
        {
            "capture_ext_statistics": 1,
            "num_records": 10,
            "features": {"a": {"kind": "numeric", "raw_kind": "numeric", "num_present": 99, "sample": [1]}},
        },
        {
            "capture_ext_statistics": 1,
            "num_records": 10,
            "features": {"a": {"kind": "numeric", "raw_kind": "numeric", "num_present": 2, "sample": ["x"]}},
        },
    ],
)
def test_malformed_baselines_are_a_baseline_error(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any]
) -> None:
    path = tmp_path / "statistics.json"
    path.write_text(json.dumps(doc))
    code, err = run(capsys, "--data", str(capture), "--baseline", str(path), "--out", str(tmp_path / "out"))
    assert code == 3 and "baseline file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "violations.json").exists()


def _write(root: Path, records: list[dict[str, Any]], dt: str = "2026-11-20") -> None:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    name = "e-00000001"
    folder = root / "c" / "jsonl" / "function=f" / f"dt={dt}" / "hour=22"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl.gz").write_bytes(gzip.compress(body))


def _rec(i: int, **fields: Any) -> dict[str, Any]:
    ts = (START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"inference_id": f"id-{i}", "captured_at": ts} | fields


@pytest.mark.parametrize("engine", ENGINES)
def test_a_numeric_field_that_turns_to_strings_is_a_type_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    rows = [_rec(i, input={"n": i % 17, "k": "x"}) for i in range(100)]
    rows += [_rec(i, input={"n": f"v{i}", "k": "x"}) for i in range(100, 200)]
    _write(tmp_path, rows)
    out = tmp_path / "out"
    code, _ = run(capsys, "--data", str(tmp_path / "c"), "--out", str(out), "--engine", engine, "--no-html", "-q")
    checks = json.loads((out / "violations.json").read_text())["violations"]
    kinds = {(c["feature_name"], c["constraint_check_type"]) for c in checks}
    assert ("input.n", "data_type_check") in kinds and ("input.n", "missing_column_check") not in kinds
    assert code == 4


@pytest.mark.parametrize("engine", ENGINES)
def test_awkward_field_names_get_distinct_plots_and_escaped_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    names = ["a b", "a_b", "a/b", "nul\x00here", "x" * 300, "~0/1"]
    rows = [_rec(i, input={n: (i * 7 + k) % 23 for k, n in enumerate(names)}) for i in range(120)]
    _write(tmp_path, rows)
    out = tmp_path / "out"
    code, _ = run(capsys, "--data", str(tmp_path / "c"), "--out", str(out), "--engine", engine, "-q")
    assert code in (0, 4)
    plots = sorted(p.name for p in (out / "plots").iterdir() if p.name.startswith("dist_input."))
    assert len(plots) == len(names) and all(len(p) < 255 for p in plots)
    page = (out / "report.html").read_text()
    assert "\x00" not in page and "nul\\x00here" in page


@pytest.mark.parametrize("engine", ENGINES)
def test_extreme_timestamps_never_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str) -> None:
    """One record dated 9999-12-31 (once a matplotlib traceback), and numeric times that
    overflow (1e20, Infinity, -1e30) or an offset before year 1: skipped or reported, never a crash."""
    rows = [_rec(i, input={"n": i % 11}) for i in range(60)]
    stamps: list[Any] = ["9999-12-31T23:59:59Z", 1e20, "INF", -1e30, "0001-01-01T00:00:00+05:00", 1e308]
    rows += [{"inference_id": f"odd-{k}", "captured_at": st, "input": {"n": 3}} for k, st in enumerate(stamps)]
    _write(tmp_path, rows)
    path = next((tmp_path / "c").rglob("*.gz"))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()).replace(b'"INF"', b"Infinity")))
    code, _ = run(capsys, "--data", str(tmp_path / "c"), "--out", str(tmp_path / "out"), "--engine", engine, "-q")
    assert code in (0, 4)
    assert json.loads((tmp_path / "out" / "violations.json").read_text())["num_records"]["current"] > 0


# --- the property test -------------------------------------------------------------------

WEIRD_KEYS = ["", "a b", "a/b", "~", '"q"', "$x$", "nul\x00", "é" * 70, "x" * 300, "question"]


def _weird(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(10)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, 2**70])
    if choice == 2:
        return rng.choice(["", " ", "\x00", "\ud7ff", "x" * 5000, "9999-12-31T23:59:59Z"])
    if choice == 3:
        return rng.choice([True, False])
    if choice == 4 and depth < 3:
        return [_weird(rng, depth + 1) for _ in range(rng.randrange(3))]
    if choice in (5, 6) and depth < 3:
        return {rng.choice(WEIRD_KEYS): _weird(rng, depth + 1) for _ in range(rng.randrange(4))}
    return rng.choice([0, 1, -5, 3.25, "abc", "Question"])


def _hostile(rng: random.Random, i: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"inference_id": rng.choice([f"h-{i}", f"h-{i}", None, i, "id-dup"])}
    rec["captured_at"] = rng.choice(
        [
            (START + timedelta(seconds=rng.randrange(0, 1200))).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "9999-12-31T23:59:59Z", 1e20, math.inf, math.nan, -1, True, None, "not a date", "0001-01-01T00:00+05:00",
        ]
    )  # fmt: skip
    for key in ("input", "output", "latency_ms", "timestamp"):
        if rng.random() < 0.8:
            rec[key] = _weird(rng)
    if rng.random() < 0.3:
        rec["input"] = {"question": _weird(rng), "context": _weird(rng)}
    if rng.random() < 0.3:
        rec["output"] = {"answer": _weird(rng), "score": _weird(rng)}
    return rec


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_hostile_records_never_crash_and_never_read_as_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str, seed: int
) -> None:
    """Valid records and hostile ones, the same in both windows: no drift exists, so the
    report must end in 0 or 4 (or 3 with a clear line and no violations.json), never in 1."""
    rng = random.Random(seed)
    valid = make_records(60, START, seconds=10, seed=seed)
    hostile = [_hostile(rng, i) for i in range(25)]
    for day in (0, 1):
        rows = []
        for rec in valid + hostile:
            copy = json.loads(json.dumps(rec))
            if isinstance(copy.get("inference_id"), str):
                copy["inference_id"] = f"{day}-{copy['inference_id']}"
            if isinstance(copy.get("captured_at"), str) and copy["captured_at"].startswith("2026-11-20T22"):
                moved = START + timedelta(days=day, seconds=rng.randrange(0, 1200))
                copy["captured_at"] = moved.strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(copy)
        rng.shuffle(rows)
        _write(tmp_path, rows, dt=f"2026-11-{20 + day}")
    out = tmp_path / "out"
    code, err = run(
        capsys, "--data", str(tmp_path / "c"), "--out", str(out), "--engine", engine,
        "--start", "2026-11-21T22:30", "--end", "2026-11-22T22:30",
        "--baseline-start", "2026-11-20T22:30", "--baseline-end", "2026-11-21T22:30", "-q",
    )  # fmt: skip
    assert code != 1, f"seed {seed}: drift on identical data"
    if code == 3:
        assert len(err.strip().splitlines()) == 1 and not (out / "violations.json").exists()
    else:
        assert code in (0, 4), err
        assert not json.loads((out / "violations.json").read_text())["drift_detected"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".capture-report-")]
