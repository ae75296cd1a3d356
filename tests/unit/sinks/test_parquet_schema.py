"""The Parquet schema is stable: column names, types and how odd records are encoded."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from capture_ext.sinks._parquet import COLUMNS, SCHEMA_VERSION, encode_parquet, schema, table
from tests.unit.sinks.records import make_record

AT = datetime(2026, 11, 22, 4, 1, 7, 123000, tzinfo=UTC)

DOCUMENTED = [
    ("inference_id", pa.string()),
    ("request_id", pa.string()),
    ("function_name", pa.string()),
    ("function_version", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("timestamp", pa.timestamp("ms", tz="UTC")),
    ("captured_at", pa.timestamp("ms", tz="UTC")),
    ("latency_ms", pa.float64()),
    ("environment_id", pa.string()),
    ("sequence", pa.int64()),
    ("input", pa.string()),
    ("output", pa.string()),
    ("metadata", pa.string()),
    ("trace_id", pa.string()),  # appended: older files simply lack it
]


def test_schema_is_the_documented_one() -> None:
    assert [(f.name, f.type) for f in schema()] == DOCUMENTED
    assert [name for name, _ in COLUMNS] == [name for name, _ in DOCUMENTED]
    assert schema().metadata == {b"capture_ext.schema_version": SCHEMA_VERSION.encode()}


def test_file_round_trip_with_zstd() -> None:
    records = [make_record(i, AT) for i in range(5)]
    data = encode_parquet(records)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    back = pq.read_table(io.BytesIO(data))
    assert back.schema.equals(schema(), check_metadata=False)
    row = back.to_pylist()[0]
    assert row["captured_at"] == AT.replace(microsecond=123000)
    assert json.loads(row["input"]) == records[0]["input"]


def test_odd_records_lose_nothing() -> None:
    record = make_record(1, AT, extra_field={"k": 1})  # an unknown top-level field (e.g. from a plugin hook)
    record["model"] = "plain-model-name"
    record["latency_ms"] = "fast"  # wrong type: null, not a crash
    record["sequence"] = True
    minimal = {"inference_id": "x", "captured_at": "2026-11-22T04:01:07.123Z"}
    rows = table([record, minimal]).to_pylist()
    assert json.loads(rows[0]["metadata"]) == {**record["metadata"], "extra_field": {"k": 1}}
    assert rows[0]["model_name"] == "plain-model-name" and rows[0]["model_version"] is None
    assert rows[0]["latency_ms"] is None and rows[0]["sequence"] is None
    assert rows[1]["input"] is None and rows[1]["metadata"] is None and rows[1]["captured_at"] == AT


def test_empty_table_has_the_schema() -> None:
    assert table([]).schema.equals(schema())
