"""The synthetic data writers follow the sinks' layout and their knobs move the distributions."""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from capture_ext.report.synth import KEY_RE, PARQUET_COLUMNS, START, capture_objects, make_records


def test_keys_follow_the_hive_layout_and_batches_stay_in_their_hour() -> None:
    records = make_records(160, START, seconds=60)
    for fmt in ("jsonl", "parquet"):
        objects = capture_objects(records, prefix="cap", fmt=fmt, batch_size=40)
        hours = set()
        for key in objects:
            match = KEY_RE.match(key)
            assert match, key
            assert (match["prefix"], match["fmt"], match["fn"]) == ("cap", fmt, "qa-fn")
            hours.add((match["dt"], match["hour"]))
        # 160 minutes from 22:30 cross midnight: partitions 22, 23 on the 20th, 00, 01 on the 21st.
        assert hours == {("2026-11-20", "22"), ("2026-11-20", "23"), ("2026-11-21", "00"), ("2026-11-21", "01")}


def test_jsonl_objects_are_gzip_lines_of_enriched_records() -> None:
    records = make_records(30, START)
    objects = capture_objects(records, batch_size=7)
    lines = [json.loads(line) for body in objects.values() for line in gzip.decompress(body).splitlines()]
    assert lines == records
    assert {"inference_id", "captured_at", "sequence", "environment_id", "function_name"} <= set(lines[0])


def test_parquet_objects_have_the_documented_columns() -> None:
    objects = capture_objects(make_records(20, START), fmt="parquet")
    table = pq.read_table(io.BytesIO(next(iter(objects.values()))))
    assert table.column_names == PARQUET_COLUMNS
    assert table.schema.field("captured_at").type == pa.timestamp("ms", tz="UTC")
    assert json.loads(table.column("input")[0].as_py())["question"].endswith("?")


def test_knobs_move_the_distributions() -> None:
    base = make_records(300, START, seed=3)
    longer = make_records(300, START, seed=3, question_chars=80, score_mean=0.5)

    def mean(rs: list[dict[str, Any]], f: Any) -> float:
        return sum(map(f, rs)) / len(rs)

    q_ratio = mean(longer, lambda r: len(r["input"]["question"])) / mean(base, lambda r: len(r["input"]["question"]))
    assert 1.8 < q_ratio < 2.2
    assert mean(longer, lambda r: r["output"]["score"]) < mean(base, lambda r: r["output"]["score"]) - 0.2


def test_sample_data_command_writes_the_layout_and_drifts_the_last_day(tmp_path: Any) -> None:
    from capture_ext.cli import main as cli_main
    from capture_ext.report.synth import write_sample

    assert cli_main(["sample-data", str(tmp_path / "j"), "--records", "480", "--days", "2", "--format", "jsonl"]) == 0
    files = sorted((tmp_path / "j").rglob("*.jsonl.gz"))
    assert files and all(KEY_RE.match(str(f.relative_to(tmp_path / "j"))) for f in files)
    lines = [json.loads(x) for f in files for x in gzip.decompress(f.read_bytes()).splitlines()]
    assert len(lines) == 480 and len({r["inference_id"] for r in lines}) == 480
    assert all(
        isinstance(r["input"]["question"], str) and r["output"]["answer"] in r["input"]["context"] for r in lines
    )

    write_sample(tmp_path / "p", 400, days=2, drift=("question",), records_per_file=50)
    table = pa.concat_tables(pq.read_table(f) for f in sorted((tmp_path / "p").rglob("*.parquet")))
    assert table.column_names == PARQUET_COLUMNS and table.num_rows == 400
    lengths = [len(json.loads(x)["question"]) for x in table.column("input").to_pylist()]
    first, last = sum(lengths[:200]) / 200, sum(lengths[200:]) / 200
    assert 1.7 < last / first < 2.3  # the last day's questions are twice as long
