"""The partition predicates of docs/sinks.md, verbatim, on an hour whose key has a leading zero.

``hour=04`` is where engines disagree: guessed as an integer it no longer equals ``'04'``. The
documented reads make every engine see text, so the documented ``dt = '2026-11-22' AND hour = '04'``
must select exactly the records captured in that hour, in DuckDB and pyarrow, from Parquet and
JSON Lines. (The integration test runs the same queries on the extension's own output, whose hour
is the wall clock's.)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest

from capture_ext.sinks.s3_jsonl import S3JsonlSink
from capture_ext.sinks.s3_parquet import S3ParquetSink
from capture_ext.testing.aws import AwsHelper
from tests.functional.sinks.conftest import BUCKET, MakeContext
from tests.integration.test_reader_fidelity import documented_queries
from tests.unit.sinks.records import make_batch, make_records

START = dt.datetime(2026, 11, 22, 3, 58, 0, tzinfo=dt.UTC)  # 03:58:00 .. 04:01:19: hours 03 and 04


@pytest.fixture
async def written(make_ctx: MakeContext, bucket: str, aws: AwsHelper, tmp_path: Path) -> tuple[Path, list[Any]]:
    records = make_records(200, START, step_s=1.0)
    records[150]["input"] = {"Question": "Upper?", "question": "lower"}
    records[160]["output"] = None
    for sink in (S3JsonlSink(make_ctx("s3_jsonl")), S3ParquetSink(make_ctx("s3_parquet"))):
        try:
            assert (await sink.write_batch(make_batch(records))).is_ok
        finally:
            await sink.close(1.0)
    aws.download(BUCKET, "inference-capture/", str(tmp_path))
    return tmp_path / "inference-capture", records


def _local(text: str, prefix: Path) -> str:
    return text.replace("s3://my-bucket/inference-capture/", f"{prefix}/")


@pytest.mark.parametrize("name", ["duckdb-parquet", "duckdb-jsonl"])
async def test_documented_duckdb_predicate_on_hour_04(written: tuple[Path, list[Any]], name: str) -> None:
    prefix, records = written
    in_04 = [r for r in records if r["captured_at"][11:13] == "04"]
    with duckdb.connect() as con:
        got = con.execute(_local(documented_queries()[name], prefix)).fetchall()
    assert got == [(len(in_04), 1, len(in_04) - 1)]
    assert 0 < len(in_04) < len(records)


async def test_documented_pyarrow_predicate_on_hour_04(written: tuple[Path, list[Any]]) -> None:
    prefix, records = written
    scope: dict[str, Any] = {}
    exec(compile(_local(documented_queries()["pyarrow-parquet"], prefix), "docs/sinks.md", "exec"), scope)
    table = scope["table"]
    assert sorted(table.column("inference_id").to_pylist()) == sorted(
        r["inference_id"] for r in records if r["captured_at"][11:13] == "04"
    )


async def test_guessed_partition_types_disagree_without_the_documented_options(
    written: tuple[Path, list[Any]],
) -> None:
    """What the documented options prevent: DuckDB guesses the partitions' types (``dt`` a DATE)."""
    prefix, _ = written
    pattern = str(prefix / "parquet" / "**" / "*.parquet")
    with duckdb.connect() as con:
        guessed = con.execute(
            "SELECT DISTINCT typeof(dt) FROM read_parquet(?, hive_partitioning = true)", [pattern]
        ).fetchall()
        text = con.execute(
            "SELECT DISTINCT typeof(dt), typeof(hour) FROM read_parquet(?, hive_partitioning = true, "
            "hive_types_autocast = false)",
            [pattern],
        ).fetchall()
    assert guessed == [("DATE",)] and text == [("VARCHAR", "VARCHAR")]
