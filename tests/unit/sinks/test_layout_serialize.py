"""Keys, partitions and encodings: pure functions, no network."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from capture_ext.sinks._layout import (
    captured_at,
    group_by_partition,
    object_key,
    parse_time,
    partition_path,
    safe_segment,
    stream_name,
)
from capture_ext.sinks._serialize import dumps, encode_jsonl_gz, event_id, fit, sagemaker_record
from tests.unit.sinks.records import make_record, make_records

AT = datetime(2026, 11, 22, 4, 1, 7, 123000, tzinfo=UTC)


def test_object_key_follows_the_documented_layout() -> None:
    partition = partition_path("qa-fn", AT)
    assert partition == "function=qa-fn/dt=2026-11-22/hour=04"
    assert object_key("inference-capture", "jsonl", partition, "env1-00000042", "jsonl.gz") == (
        "inference-capture/jsonl/function=qa-fn/dt=2026-11-22/hour=04/env1-00000042.jsonl.gz"
    )
    assert object_key("", "parquet", partition, "e-1", "parquet") == "parquet/" + partition + "/e-1.parquet"


def test_hostile_names_cannot_break_the_partition_path() -> None:
    assert safe_segment("a/b=c d") == "a_b_c_d"
    assert safe_segment("") == "_"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-22T04:01:07.123Z", AT),
        ("2026-11-22T06:01:07.123+02:00", AT),
        ("2026-11-22T04:01:07.123", AT),
        (int(AT.timestamp() * 1000), AT),
        ("not a time", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    assert parse_time(value) == expected


def test_captured_at_falls_back_to_the_client_timestamp() -> None:
    assert captured_at({"captured_at": "garbage", "timestamp": "2026-11-22T04:01:07.123Z"}) == AT


def test_grouping_keeps_batch_order_within_a_partition() -> None:
    records = make_records(10, datetime(2026, 11, 22, 3, 59, 55, tzinfo=UTC))
    groups = group_by_partition(records, "qa-fn")
    assert list(groups) == ["function=qa-fn/dt=2026-11-22/hour=03", "function=qa-fn/dt=2026-11-22/hour=04"]
    assert [r["sequence"] for r in groups["function=qa-fn/dt=2026-11-22/hour=03"]] == [0, 1, 2, 3, 4]
    assert [r["sequence"] for r in groups["function=qa-fn/dt=2026-11-22/hour=04"]] == [5, 6, 7, 8, 9]


def test_stream_name() -> None:
    assert stream_name("qa-fn", "env1", AT) == "2026/11/22/qa-fn/env1"


def test_jsonl_gz_is_deterministic_and_round_trips() -> None:
    records = make_records(50, AT)
    body = encode_jsonl_gz(records)
    assert body == encode_jsonl_gz(records)  # same batch, same bytes: a retry rewrites identically
    assert [json.loads(line) for line in gzip.decompress(body).splitlines()] == records


def test_dumps_survives_what_orjson_refuses() -> None:
    assert json.loads(dumps({"big": 2**70, "ok": 1})) == {"big": 2**70, "ok": 1}


def test_sagemaker_record_shape() -> None:
    record = make_record(3, AT)
    line = sagemaker_record(record)
    assert line["eventVersion"] == "0"
    assert line["eventMetadata"] == {
        "eventId": event_id(record),
        "inferenceTime": record["timestamp"][:19] + "Z",  # whole seconds, as in every SageMaker sample
        "inferenceId": record["inference_id"],
    }
    out = line["captureData"]["endpointOutput"]
    assert out["mode"] == "OUTPUT" and out["encoding"] == "JSON" and json.loads(out["data"]) == record["output"]
    assert event_id(record) == event_id(dict(record))  # stable across retries
    assert event_id(record) != event_id(make_record(4, AT))


@pytest.mark.parametrize("missing", ["input", "output"])
@pytest.mark.parametrize("absent", [True, False])
def test_sagemaker_record_always_has_input_and_output(missing: str, absent: bool) -> None:
    """SageMaker's Input+Output mode writes both parts on every line; a null payload is ``"null"``."""
    record = make_record(1, AT)
    if absent:
        del record[missing]
    else:
        record[missing] = None
    capture = sagemaker_record(record)["captureData"]
    assert set(capture) == {"endpointInput", "endpointOutput"}
    part = capture["endpointInput" if missing == "input" else "endpointOutput"]
    assert part == {
        "observedContentType": "application/json",
        "mode": missing.upper(),
        "data": "null",
        "encoding": "JSON",
    }


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-22T04:01:07.999Z", "2026-11-22T04:01:07Z"),  # truncated, never rounded into the next second
        ("2026-11-22T05:01:07.5+01:00", "2026-11-22T04:01:07Z"),
        ("not a time", "2026-11-22T04:00:00Z"),  # falls back to captured_at
    ],
)
def test_sagemaker_inference_time_is_utc_whole_seconds(timestamp: str, expected: str) -> None:
    record = make_record(1, AT, timestamp=timestamp, captured_at="2026-11-22T04:00:00.250Z")
    assert sagemaker_record(record)["eventMetadata"]["inferenceTime"] == expected


@pytest.mark.parametrize("filler", ["x", "é", '"', "\\", "\n", "🙂"])
def test_fit_truncates_visibly_within_the_limit(filler: str) -> None:
    record = make_record(0, AT)
    record["input"]["context"] = filler * 50_000
    data = dumps(record)
    out, cut = fit(record, data, 10_000)
    assert cut and len(out) <= 10_000
    stub = json.loads(out)
    assert stub["truncated"] is True and stub["original_bytes"] == len(data)
    assert stub["inference_id"] == record["inference_id"] and stub["captured_at"] == record["captured_at"]
    assert data.decode().startswith(stub["payload_prefix"]) and len(stub["payload_prefix"]) > 1_000


def test_fit_leaves_small_records_alone() -> None:
    record = make_record(0, AT)
    data = dumps(record)
    assert fit(record, data, len(data)) == (data, False)
