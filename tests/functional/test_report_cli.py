"""``capture-ext report`` end to end over a local copy of the capture layout.

Day 1 is the baseline, day 2 has the same distributions (new random draws), day 3 has questions
twice as long and lower scores. The report must flag day 3, and only the drifted descriptors,
and must not flag day 2.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from capture_ext.report import main
from capture_ext.report.synth import START, capture_objects, make_records, write_tree

DAY = timedelta(days=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def day(n: int, offset: int) -> str:
    return (START + offset * DAY).strftime("%Y-%m-%dT%H:%M:%S")


def write_days(root: Path, n: int, fmt: str) -> Path:
    seconds = 6 * 3600 / n  # each day's records spread over six hours
    records = (
        make_records(n, START, seconds=seconds, seed=1)
        + make_records(n, START + DAY, seconds=seconds, seed=2)
        + make_records(n, START + 2 * DAY, seconds=seconds, seed=3, question_chars=80, score_mean=0.55)
    )
    write_tree(root, capture_objects(records, prefix="capture", fmt=fmt, batch_size=100))
    return root / "capture"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_days(tmp_path_factory.mktemp("small"), 300, "jsonl")


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_days(tmp_path_factory.mktemp("large"), 1500, "parquet")


def window_args(data: Path, current: int, baseline: int = 0) -> list[str]:
    return [
        "--data", str(data),
        "--start", day(0, current), "--end", day(0, current + 1),
        "--baseline-start", day(0, baseline), "--baseline-end", day(0, baseline + 1),
        "--quiet",
    ]  # fmt: skip


def violations(out: Path) -> dict:
    doc: dict = json.loads((out / "violations.json").read_text())
    return doc


@pytest.mark.parametrize(("dataset", "tests"), [("small", {"ks"}), ("large", {"wasserstein"})])
def test_known_drift_is_flagged_and_only_there(
    dataset: str, tests: set[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    data = request.getfixturevalue(dataset)
    assert main([*window_args(data, current=2), "--out", str(tmp_path / "drift")]) == 1
    doc = violations(tmp_path / "drift")
    assert doc["drift_detected"] and doc["exit_code"] == 1
    flagged = {v["feature_name"] for v in doc["violations"]}
    assert flagged == {"question_length", "score"}
    assert {v["test"] for v in doc["violations"]} == tests
    assert {v["constraint_check_type"] for v in doc["violations"]} == {"baseline_drift_check"}

    assert main([*window_args(data, current=1), "--out", str(tmp_path / "same"), "--no-html"]) == 0
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["statistics.json", "violations.json"]
    same = violations(tmp_path / "same")
    assert same["violations"] == [] and not same["drift_detected"]
    assert same["num_records"] == doc["num_records"]


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_html_report_embeds_every_plot_and_each_plot_is_a_real_png(small: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = tmp_path / "report"
    assert main([*window_args(small, current=2), "--out", str(out)]) == 1
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = Images()
    parser.feed(page)
    parser.close()
    assert parser.headings == ["Checks", "Distributions against the baseline", "Over time", "Profile"]
    assert "Drift detected in 2 feature(s): question_length, score" in page
    assert "http://" not in page and "https://" not in page  # self-contained

    files = sorted(p.name for p in (out / "plots").iterdir())
    referenced = sorted(Path(str(img["data-file"])).name for img in parser.images)
    assert referenced == files
    assert {"timeseries_volume.png", "timeseries_descriptors.png", "dist_question_length.png"} <= set(files)
    for img in parser.images:
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        embedded = base64.b64decode(src.split(",", 1)[1])
        on_disk = (out / str(img["data-file"])).read_bytes()
        assert embedded == on_disk
        assert on_disk.startswith(PNG_MAGIC)
        pixels = imread(out / str(img["data-file"]))
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300
        assert pixels.std() > 0.01  # not a blank canvas


def test_statistics_json_is_a_reusable_baseline(small: Path, tmp_path: Path) -> None:
    first = tmp_path / "day0"
    assert main([*window_args(small, current=0), "--out", str(first), "--no-html"]) == 0
    stats = first / "statistics.json"
    assert json.loads(stats.read_text())["num_records"] == 300
    common = ["--data", str(small), "--baseline", str(stats), "--quiet", "--no-html"]
    drifted = ["--start", day(0, 2), "--end", day(0, 3), "--out", str(tmp_path / "d2")]
    assert main([*common, *drifted]) == 1
    assert {v["feature_name"] for v in violations(tmp_path / "d2")["violations"]} == {"question_length", "score"}
    assert main([*common, "--start", day(0, 1), "--end", day(0, 2), "--out", str(tmp_path / "d1")]) == 0


def test_default_baseline_is_the_older_half_of_the_window(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    # days 1 and 2: the older half (day 1) is the baseline, the newer half (day 2) drifted
    assert (
        main(["--data", str(small), "--start", day(0, 1), "--end", day(0, 3), "--out", str(out), "-q", "--no-html"])
        == 1
    )
    doc = violations(out)
    assert doc["num_records"] == {"baseline": 300, "current": 300}
    assert doc["baseline"].startswith("older half")


def test_exit_codes_for_no_data_quality_only_and_exit_zero(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = ["--data", str(small), "--start", "2020-01-01", "--end", "2020-01-02", "-q", "--no-html"]
    message = tmp_path / "message"
    assert main([*empty, "--out", str(tmp_path / "none"), "--exit-message", str(message)]) == 3
    assert "no records captured in 2020-01-01T00:00:00Z" in capsys.readouterr().err
    assert message.read_text().startswith("error: no records captured")
    assert not (tmp_path / "none").exists()

    zero = [*window_args(small, current=2), "--exit-zero", "--exit-message", str(message), "--no-html"]
    assert main([*zero, "--out", str(tmp_path / "z")]) == 0
    assert violations(tmp_path / "z")["drift_detected"]
    assert (
        message.read_text()
        == "drift in question_length, score; 0 data-quality violation(s); 300 records vs 300 baseline (exit 1)\n"
    )

    # Same distributions, but the current window's function answers with extra output fields.
    root = tmp_path / "quality"
    base = make_records(200, START, seconds=60, seed=1)
    cur = make_records(200, START + DAY, seconds=60, seed=2, output_style="hf")
    write_tree(root, capture_objects(base + cur, prefix="c"))
    args = ["--data", str(root / "c"), "--start", day(0, 1), "--end", day(0, 2)]
    assert main([*args, "--baseline-end", day(0, 1), "--out", str(tmp_path / "q"), "-q", "--no-html"]) == 4
    doc = violations(tmp_path / "q")
    assert {(v["feature_name"], v["constraint_check_type"]) for v in doc["violations"]} == {
        ("output.start", "extra_column_check"),
        ("output.end", "extra_column_check"),
    }


def test_bad_arguments_exit_2_with_a_named_problem(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data", "x", "--start", "yesterday"])
    assert exc.value.code == 2
    assert "not an ISO 8601 date" in capsys.readouterr().err
    for argv, message in (
        (["--start", "2026-01-02", "--end", "2026-01-01"], "is not before its end"),
        (["--baseline-start", "2026-01-02", "--baseline-end", "2026-01-01"], "is not before its end"),
        (["--baseline", "s.json", "--baseline-start", "2026-01-01"], "either --baseline (a statistics file) or"),
        (["--start", "2026-01-01", "--last", "1h"], "either --start or --last"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["--data", "x", "-q", *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_runs_as_a_module_and_through_the_capture_ext_command(small: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lazy = subprocess.run(
        [sys.executable, "-c", "import sys, capture_ext.report; "
         "print(sorted(m for m in ('pyarrow', 'scipy', 'matplotlib') if m in sys.modules))"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert lazy.stdout.strip() == "[]"
    module = subprocess.run(
        [sys.executable, "-m", "capture_ext.report", *window_args(small, current=2), "--out", str(tmp_path / "m")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert module.returncode == 1, module.stderr
    assert f"report: {tmp_path / 'm' / 'report.html'}" in module.stdout
    assert "drift in question_length, score" in module.stdout
    command = subprocess.run(
        [sys.executable, "-m", "capture_ext.cli", "report", "--help"], capture_output=True, text=True, env=env
    )
    assert command.returncode == 0 and "Exit codes: 0 no violations, 1 drift" in " ".join(command.stdout.split())


def test_generic_model_with_awkward_field_names(tmp_path: Path) -> None:
    """Any model: flat fields profiled; user-chosen names ($, spaces, unicode) reach the plots safely."""
    from capture_ext.report.synth import write_tree as write

    def rec(i: int, shift: float) -> dict:
        ts = (START + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {
            "inference_id": f"{i:032x}", "captured_at": ts, "function_name": "tabular", "environment_id": "e",
            "input": {"$min_$price": 10 + (i % 50) + shift, "région": ["nord", "sud", "est"][i % 3]},
            "output": {"label": "buy" if i % 4 else "sell", "p": (i % 10) / 10},
        }  # fmt: skip

    records = [rec(i, 0) for i in range(200)] + [rec(i, 25) for i in range(200, 400)]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    import gzip

    write(tmp_path, {"c/jsonl/function=tabular/dt=2026-11-20/hour=22/e-00000001.jsonl.gz": gzip.compress(lines)})
    out = tmp_path / "out"
    assert main(["--data", str(tmp_path / "c"), "--out", str(out), "-q"]) == 1
    doc = violations(out)
    # two $ would make matplotlib parse "min_" as math and fail: names are shown as plain text
    assert {v["feature_name"] for v in doc["violations"]} == {"input.$min_$price"}
    assert {c["feature_name"] for c in doc["checks"]} == {
        "input.$min_$price", "input.région", "output.label", "output.p"
    }  # fmt: skip
    from capture_ext.report.plots import slug

    assert slug("input.$min_$price").startswith("input._min__price-")  # not a safe name: hashed, distinct
    assert (out / "plots" / f"dist_{slug('input.$min_$price')}.png").read_bytes().startswith(PNG_MAGIC)
    assert "input.$min_$price" in (out / "report.html").read_text(encoding="utf-8")
