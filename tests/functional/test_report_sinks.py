"""The report reads what the real S3 sinks write (not only our own writer's idea of the layout).

The built-in ``s3_jsonl`` (capture and SageMaker formats) and ``s3_parquet`` sinks write
batches to moto; the report then reads them back over ``s3://`` and must see every record and
flag the drifted day.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from capture_ext.models import Batch, Outcome, SinkContext
from capture_ext.report import main
from capture_ext.report.synth import START, make_records

if TYPE_CHECKING:
    from capture_ext.testing.aws import AwsHelper

BUCKET = "sink-capture"
DAY = timedelta(days=1)


def sink_class(name: str) -> Any:
    from capture_ext.sinks.s3_jsonl import S3JsonlSink
    from capture_ext.sinks.s3_parquet import S3ParquetSink

    return {"s3_jsonl": S3JsonlSink, "s3_parquet": S3ParquetSink}[name]


async def write_with_sink(name: str, env: dict[str, str], records: list[dict[str, Any]]) -> None:
    ctx = SinkContext(name=name, env=env, function_name="qa-fn", environment_id="0a1b2c3d")
    sink = sink_class(name)(ctx)
    await sink.start()
    try:
        for seq, start in enumerate(range(0, len(records), 100), 1):
            chunk = tuple(records[start : start + 100])
            result = await sink.write_batch(Batch(f"0a1b2c3d-{seq:08d}", "0a1b2c3d", seq, chunk))
            assert result.outcome is Outcome.OK, result
    finally:
        await sink.close(5.0)


@pytest.mark.parametrize(
    ("sink", "jsonl_format"), [("s3_jsonl", "capture"), ("s3_jsonl", "sagemaker"), ("s3_parquet", "capture")]
)
async def test_report_reads_what_the_sinks_wrote(
    aws: AwsHelper, aws_env: dict[str, str], sink: str, jsonl_format: str, tmp_path: Path
) -> None:
    aws.create_bucket(BUCKET)
    env = {**aws_env, "CAPTURE_S3_BUCKET": BUCKET, "CAPTURE_JSONL_FORMAT": jsonl_format}
    records = make_records(250, START, seconds=120, seed=1, output_style="hf") + make_records(
        250, START + DAY, seconds=120, seed=3, question_chars=80, score_mean=0.55, output_style="hf"
    )
    await write_with_sink(sink, env, records)
    keys = aws.list_keys(BUCKET)
    folder = "parquet" if sink == "s3_parquet" else "sagemaker" if jsonl_format == "sagemaker" else "jsonl"
    assert keys and all(k.startswith(f"inference-capture/{folder}/") for k in keys)

    def at(offset: int) -> str:
        return (START + offset * DAY).strftime("%Y-%m-%dT%H:%M:%S")

    out = tmp_path / "report"
    args = [
        "--data", f"s3://{BUCKET}/inference-capture",
        "--start", at(1), "--end", at(2), "--baseline-start", at(0), "--baseline-end", at(1),
        "--out", str(out), "--quiet", "--no-html",
    ]  # fmt: skip
    assert main(args) == 1
    doc = json.loads((out / "violations.json").read_text())
    assert doc["num_records"] == {"baseline": 250, "current": 250}
    assert {v["feature_name"] for v in doc["violations"]} == {"question_length", "score"}
    checked = {c["feature_name"] for c in doc["checks"]}
    # The inference function's output has start/end offsets: profiled as generic output fields.
    assert {"output.start", "output.end", "answer_in_context"} <= checked
    if jsonl_format == "capture":  # SageMaker's schema has no latency
        assert "latency_ms" in {c["feature_name"] for c in doc["checks"] if c.get("test")}
