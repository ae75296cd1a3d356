"""``CAPTURE_JSONL_FORMAT=sagemaker`` against what AWS documents for SageMaker Data Capture.

Two documents define what SageMaker tooling expects of a capture file:

- the capture record schema and key layout, "Capture data from real-time endpoint"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html):
  ``captureData.endpointInput|endpointOutput {observedContentType, mode, data, encoding}``,
  ``eventMetadata {eventId, inferenceTime, inferenceId?}``, ``eventVersion "0"``, files under
  ``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl``, ``inferenceTime`` like
  ``2019-11-20T23:33:12Z``;
- the record classes a Model Monitor preprocessing script is handed, "Preprocessing and
  Postprocessing"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-pre-and-post-processing.html).

The classes below restate that page's contract (its class names, attributes and keys): a part is
read only when its key is in the line, and the guide's sample handler then reads ``.data`` of both
parts without checking, which fails on a line that lacks one.

The awkward corpus (tests/corpus.py) is written through the real sink into moto, in both layouts,
and every line must satisfy the schema and give back each payload exactly.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from typing import Any

import pytest

from capture_ext.sinks.s3_jsonl import S3JsonlSink
from capture_ext.testing.aws import AwsHelper
from tests.corpus import awkward_records, expected, same
from tests.functional.sinks.conftest import BUCKET, MakeContext
from tests.unit.sinks.records import ENV_ID, FUNCTION, iso, make_batch

CAPTURED_AT = dt.datetime(2026, 11, 22, 3, 59, 58, tzinfo=dt.UTC)
SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- the developer guide's preprocessing-record classes (restated, see the module docstring) --------
class EventMetadata:
    def __init__(self, event_metadata: dict[str, Any]) -> None:
        self.event_id = event_metadata.get("eventId")
        self.event_time = event_metadata.get("inferenceTime")
        self.custom_attribute = event_metadata.get("customAttributes")


class EventData:
    def __init__(self, data: dict[str, Any]) -> None:
        self.encoding = data.get("encoding")
        self.data = data.get("data")
        self.observedContentType = data.get("observedContentType")  # the guide spells it so
        self.mode = data.get("mode")


class CapturedData:
    def __init__(self, event: dict[str, Any]) -> None:
        self.event_metadata: EventMetadata | None = None
        self.endpoint_input: EventData | None = None
        self.endpoint_output: EventData | None = None
        self.event_version = event.get("eventVersion")
        if "eventMetadata" in event:
            self.event_metadata = EventMetadata(event["eventMetadata"])
        capture = event.get("captureData", {})
        if "endpointInput" in capture:
            self.endpoint_input = EventData(capture["endpointInput"])
        if "endpointOutput" in capture:
            self.endpoint_output = EventData(capture["endpointOutput"])


def preprocess_handler(inference_record: Any) -> dict[str, Any]:
    """Shaped like the guide's sample: both parts' ``data``, without a check, into one flat row."""
    input_data = inference_record.endpoint_input.data
    output_data = inference_record.endpoint_output.data
    return {"input": json.loads(input_data), "output": json.loads(output_data)}


# -- the documented capture schema ------------------------------------------------------------------
def check_capture_line(line: dict[str, Any]) -> None:
    assert set(line) == {"captureData", "eventMetadata", "eventVersion"}
    assert line["eventVersion"] == "0"
    # Input+Output mode: both parts on every line.
    assert set(line["captureData"]) == {"endpointInput", "endpointOutput"}
    for name, mode in (("endpointInput", "INPUT"), ("endpointOutput", "OUTPUT")):
        part = line["captureData"][name]
        assert set(part) == {"observedContentType", "mode", "data", "encoding"}
        assert part["mode"] == mode and part["encoding"] in {"CSV", "JSON", "BASE64"}
        assert isinstance(part["observedContentType"], str) and isinstance(part["data"], str)
    meta = line["eventMetadata"]
    assert set(meta) <= {"eventId", "inferenceTime", "inferenceId", "customAttributes"}
    assert UUID.match(meta["eventId"]) and SECONDS.match(meta["inferenceTime"])


def corpus_records() -> list[dict[str, Any]]:
    """The corpus as the sink gets it: normalised and enriched by the extension."""
    records = []
    for sequence, sent in enumerate(awkward_records()):
        record = expected(sent)
        record.update(
            function_name=FUNCTION,
            function_version="$LATEST",
            environment_id=ENV_ID,
            captured_at=iso(CAPTURED_AT + dt.timedelta(milliseconds=10 * sequence)),
            sequence=sequence,
        )
        records.append(record)
    return records


@pytest.mark.parametrize("layout", ["hive", "sagemaker"])
async def test_corpus_lines_follow_the_capture_schema_and_round_trip(
    make_ctx: MakeContext, bucket: str, aws: AwsHelper, layout: str
) -> None:
    records = corpus_records()
    sink = S3JsonlSink(make_ctx("s3_jsonl", CAPTURE_JSONL_FORMAT="sagemaker", CAPTURE_SAGEMAKER_LAYOUT=layout))
    try:
        assert (await sink.write_batch(make_batch(records, batch_sequence=4))).is_ok
    finally:
        await sink.close(1.0)

    keys = aws.list_keys(BUCKET)
    batch = f"{ENV_ID}-00000004"
    if layout == "hive":
        assert keys == [
            f"inference-capture/sagemaker/function={FUNCTION}/dt=2026-11-22/hour={h}/{batch}.jsonl.gz"
            for h in ("03", "04")
        ]
    else:
        assert keys == [
            f"inference-capture/sagemaker/{FUNCTION}/AllTraffic/2026/11/22/{h}/{batch}.jsonl" for h in ("03", "04")
        ]
        assert all(k.endswith(".jsonl") for k in keys)  # the filter scripts over SageMaker's layout use
        assert aws.client("s3").head_object(Bucket=BUCKET, Key=keys[0])["ContentType"] == "application/jsonlines"
    assert not aws.list_keys(BUCKET, "inference-capture/jsonl/")  # never mixed into the capture table's location

    lines = []
    for key in keys:
        body = aws.read_object(BUCKET, key)
        if layout == "sagemaker":
            assert body[:2] != b"\x1f\x8b"  # plain JSON Lines, not gzip
        else:
            body = gzip.decompress(body)
        lines += [json.loads(line) for line in body.splitlines()]
    assert len(lines) == len(records)

    for line, record in zip(lines, records, strict=True):
        check_capture_line(line)
        captured = CapturedData(line)
        assert captured.event_version == "0"
        assert captured.event_metadata is not None
        assert captured.event_metadata.event_time == record["timestamp"][:19] + "Z"
        assert line["eventMetadata"]["inferenceId"] == record["inference_id"]
        row = preprocess_handler(captured)  # the guide's handler works on every line
        assert same(record["input"], row["input"]) is None, record["inference_id"]
        assert same(record["output"], row["output"]) is None, record["inference_id"]


def test_the_guide_handler_fails_on_a_line_without_endpoint_output() -> None:
    """What the old format did to these classes (one part left out when the output was null)."""
    line = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/json",
                "mode": "INPUT",
                "data": "{}",
                "encoding": "JSON",
            }
        },
        "eventMetadata": {"eventId": "feca1ab1-8025-47e3-8f6a-99e3fdd7b8d9", "inferenceTime": "2019-11-20T23:33:12Z"},
        "eventVersion": "0",
    }
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'data'"):
        preprocess_handler(CapturedData(line))
