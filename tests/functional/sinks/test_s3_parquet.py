"""s3_parquet against moto: read back with pyarrow datasets and DuckDB using hive partitioning."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from capture_ext.models import Outcome
from capture_ext.sinks._parquet import COLUMNS
from capture_ext.sinks.s3_parquet import S3ParquetSink
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.conftest import BUCKET, MakeContext, ids
from tests.unit.sinks.records import ENV_ID, make_batch, make_records

START = datetime(2026, 11, 21, 23, 59, 0, tzinfo=UTC)  # crosses midnight: two dt= and two hour=


async def _write_two_batches(make_ctx: MakeContext) -> list[dict]:
    first = make_records(100, START, step_s=1.0)  # 23:59:00 .. 00:00:39
    second = make_records(50, START.replace(day=22, hour=0, minute=5), first_sequence=100)
    sink = S3ParquetSink(make_ctx("s3_parquet"))
    try:
        assert (await sink.write_batch(make_batch(first, batch_sequence=1))).is_ok
        assert (await sink.write_batch(make_batch(second, batch_sequence=2))).is_ok
    finally:
        await sink.close(1.0)
    return first + second


async def test_layout_and_pyarrow_dataset_with_hive_partitioning(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, tmp_path: Path
) -> None:
    records = await _write_two_batches(make_ctx)

    keys = aws.list_keys(BUCKET)
    assert keys == [
        f"inference-capture/parquet/function=qa-fn/dt=2026-11-21/hour=23/{ENV_ID}-00000001.parquet",
        f"inference-capture/parquet/function=qa-fn/dt=2026-11-22/hour=00/{ENV_ID}-00000001.parquet",
        f"inference-capture/parquet/function=qa-fn/dt=2026-11-22/hour=00/{ENV_ID}-00000002.parquet",
    ]
    aws.download(BUCKET, "inference-capture/parquet/", str(tmp_path))
    dataset = ds.dataset(tmp_path / "inference-capture" / "parquet", format="parquet", partitioning="hive")
    table = dataset.to_table()

    assert table.num_rows == len(records)
    assert sorted(table.column("inference_id").to_pylist()) == ids(records)
    file_columns = [name for name, _ in COLUMNS]
    assert table.schema.names[: len(file_columns)] == file_columns
    assert set(table.schema.names[len(file_columns) :]) == {"function", "dt", "hour"}
    assert table.schema.field("captured_at").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("sequence").type == pa.int64()

    # Partition pruning sees the right rows: everything before midnight is in dt=2026-11-21.
    before_midnight = dataset.to_table(filter=ds.field("dt") == "2026-11-21")
    expected = [r["inference_id"] for r in records if r["captured_at"].startswith("2026-11-21")]
    assert sorted(before_midnight.column("inference_id").to_pylist()) == sorted(expected)

    by_id = {r["inference_id"]: r for r in records}
    for row in table.to_pylist():
        original = by_id[row["inference_id"]]
        assert json.loads(row["input"]) == original["input"]
        assert json.loads(row["output"]) == original["output"]
        assert json.loads(row["metadata"]) == original["metadata"]
        assert row["model_name"] == "distilbert-qa" and row["model_version"] == "7"
        assert row["captured_at"].strftime("%Y-%m-%dT%H:%M:%S") == original["captured_at"][:19]
        assert row["latency_ms"] == original["latency_ms"] and row["sequence"] == original["sequence"]


async def test_duckdb_reads_the_downloaded_copy_with_hive_partitioning(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, tmp_path: Path
) -> None:
    import duckdb

    records = await _write_two_batches(make_ctx)
    aws.download(BUCKET, "inference-capture/parquet/", str(tmp_path))
    pattern = str(tmp_path / "inference-capture" / "parquet" / "**" / "*.parquet")

    con = duckdb.connect()
    rows = con.execute(
        "SELECT dt, hour, count(*), count(DISTINCT inference_id), min(sequence), max(sequence) "
        "FROM read_parquet(?, hive_partitioning = true) GROUP BY dt, hour ORDER BY dt, hour",
        [pattern],
    ).fetchall()
    got_ids = con.execute(
        "SELECT inference_id, input->>'$.question', typeof(captured_at) FROM read_parquet(?, hive_partitioning = true)",
        [pattern],
    ).fetchall()
    con.close()

    before = sum(r["captured_at"].startswith("2026-11-21") for r in records)
    assert [(str(dt), int(hour), n, d) for dt, hour, n, d, _, _ in rows] == [
        ("2026-11-21", 23, before, before),
        ("2026-11-22", 0, len(records) - before, len(records) - before),
    ]
    assert sorted(i for i, _, _ in got_ids) == ids(records)
    questions = {i: q for i, q, _ in got_ids}
    assert all(questions[r["inference_id"]] == r["input"]["question"] for r in records)
    assert {t for _, _, t in got_ids} == {"TIMESTAMP WITH TIME ZONE"}


async def test_retry_rewrites_the_same_parquet_key(make_ctx: MakeContext, bucket: str, aws: AwsHelper) -> None:
    records = make_records(30, START.replace(hour=12))
    batch = make_batch(records, batch_sequence=5)
    sink = S3ParquetSink(make_ctx("s3_parquet"))
    assert (await sink.write_batch(batch)).is_ok
    assert (await sink.write_batch(batch)).is_ok
    await sink.close(1.0)
    (key,) = aws.list_keys(BUCKET)
    assert aws.read_parquet(BUCKET, key).num_rows == 30


async def test_missing_bucket_is_fatal(make_ctx: MakeContext, aws_env: dict[str, str]) -> None:
    sink = S3ParquetSink(make_ctx("s3_parquet", CAPTURE_S3_BUCKET="gone"))
    result = await sink.write_batch(make_batch(make_records(2, START)))
    await sink.close(1.0)
    assert result.outcome is Outcome.FATAL and "'gone' does not exist" in (result.error or "")
