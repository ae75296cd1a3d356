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
