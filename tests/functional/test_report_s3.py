"""The report reads ``s3://`` directly (pyarrow's S3 filesystem) from moto in server mode.

The same layout as the local tests, uploaded through the S3 API; ``AWS_ENDPOINT_URL`` (set by
the ``aws_env`` fixture) is what points the report at moto, exactly as it would at any S3.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from capture_ext.report import main
from capture_ext.report.synth import START, capture_objects, make_records

if TYPE_CHECKING:
    from capture_ext.testing.aws import AwsHelper

BUCKET = "capture-bucket"
DAY = timedelta(days=1)


def upload(aws: AwsHelper, fmt: str) -> None:
    records = (
        make_records(200, START, seconds=60, seed=1)
        + make_records(200, START + DAY, seconds=60, seed=2)
        + make_records(200, START + 2 * DAY, seconds=60, seed=3, question_chars=80, score_mean=0.55)
    )
    aws.create_bucket(BUCKET)
    for key, body in capture_objects(records, prefix="inference-capture", fmt=fmt, batch_size=40).items():
        aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)


def args(current: int, out: Path) -> list[str]:
    def at(offset: int) -> str:
        return (START + offset * DAY).strftime("%Y-%m-%dT%H:%M:%S")

    return [
        "--data", f"s3://{BUCKET}/inference-capture",
        "--start", at(current), "--end", at(current + 1),
        "--baseline-start", at(0), "--baseline-end", at(1),
        "--out", str(out), "--quiet",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_report_over_the_s3_layout_on_moto(aws: AwsHelper, fmt: str, tmp_path: Path) -> None:
    upload(aws, fmt)
    assert main(args(2, tmp_path / "drift")) == 1
    doc = json.loads((tmp_path / "drift" / "violations.json").read_text())
    assert {v["feature_name"] for v in doc["violations"]} == {"question_length", "score"}
    assert doc["num_records"] == {"baseline": 200, "current": 200}
    assert doc["data"] == f"s3://{BUCKET}/inference-capture"

    assert (tmp_path / "drift" / "report.html").stat().st_size > 10_000
    assert main([*args(1, tmp_path / "same"), "--no-html"]) == 0
    assert json.loads((tmp_path / "same" / "violations.json").read_text())["violations"] == []


def test_a_missing_bucket_prefix_is_a_clear_error(
    aws: AwsHelper, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.create_bucket(BUCKET)
    assert main(["--data", f"s3://{BUCKET}/nothing-here", "--out", str(tmp_path), "-q"]) == 3
    assert f"no captured data: expected {BUCKET}/nothing-here/parquet/" in capsys.readouterr().err


def test_a_missing_bucket_is_a_clear_error(aws: AwsHelper, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", "s3://no-such-bucket/capture", "--out", str(tmp_path), "-q"]) == 3
    err = capsys.readouterr().err
    assert "no-such-bucket" in err and "error:" in err
