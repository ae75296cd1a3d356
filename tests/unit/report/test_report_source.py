"""Reading the capture layout from a local folder: partition pruning, window, both formats."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capture_ext.report.source import (
    SourceError,
    Window,
    list_files,
    locate,
    open_filesystem,
    parse_duration,
    parse_time,
    read_records,
)
from capture_ext.report.synth import START, capture_objects, make_records, write_tree

# three days, one record every 10 minutes: 432 records, 72 hour partitions
RECORDS = make_records(432, START, seconds=600)


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("capture")
    write_tree(root, capture_objects(RECORDS, prefix="cap", fmt="jsonl", batch_size=4))
    write_tree(root, capture_objects(RECORDS, prefix="cap", fmt="parquet", batch_size=4))
    other = make_records(20, START, function="other-fn", seed=9)
    write_tree(root, capture_objects(other, prefix="cap", fmt="jsonl"))
    return root / "cap"


def ids_in(window: Window, records: list[dict]) -> list[str]:
    return [r["inference_id"] for r in records if window.contains(parse_time(r["captured_at"]))]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_window_reads_exactly_the_records_captured_in_it(capture_dir: Path, fmt: str) -> None:
    window = Window(parse_time("2026-11-21T10:05"), parse_time("2026-11-21T13:00"))
    got = read_records(str(capture_dir), window, fmt=fmt, function="qa-fn", quiet=True)
    assert [r["inference_id"] for r in got] == ids_in(window, RECORDS)
    assert len(got) == 17  # 10:10 … 12:50
    assert all(isinstance(r["_ts"], datetime) and r["_ts"].tzinfo for r in got)
    by_id = {r["inference_id"]: r for r in RECORDS}
    assert all(r["input"] == by_id[r["inference_id"]]["input"] for r in got)
    assert all(r["output"] == by_id[r["inference_id"]]["output"] for r in got)
    if fmt == "parquet":
        assert got[0]["model"] == {"name": "distilbert-qa", "version": "1"}


def test_partitions_outside_the_window_are_not_opened(capture_dir: Path) -> None:
    fs, path = open_filesystem(str(capture_dir))
    base, fmt = locate(fs, path, "jsonl")
    window = Window(parse_time("2026-11-21T10:05"), parse_time("2026-11-21T13:00"))
    files = list_files(fs, base, fmt, window, "qa-fn")
    hours = sorted({f.split("/hour=")[1][:2] for f in files})
    # one hour of slack either side for records flushed in a later (or, with skew, earlier) hour
    assert hours == ["09", "10", "11", "12", "13", "14"]
    assert all("dt=2026-11-21" in f for f in files)
    everything = list_files(fs, base, fmt, Window(), None)
    assert len(everything) > 5 * len(files)
    assert any("function=other-fn" in f for f in everything)


def test_window_crossing_midnight_prunes_on_both_days(capture_dir: Path) -> None:
    fs, path = open_filesystem(str(capture_dir))
    base, fmt = locate(fs, path, "parquet")
    files = list_files(fs, base, fmt, Window(parse_time("2026-11-21T23:30"), parse_time("2026-11-22T00:30")), None)
    parts = sorted({(f.split("dt=")[1][:10], f.split("/hour=")[1][:2]) for f in files})
    assert parts == [("2026-11-21", "22"), ("2026-11-21", "23"), ("2026-11-22", "00"), ("2026-11-22", "01")]


def test_function_filter_and_unbounded_window(capture_dir: Path) -> None:
    everything = read_records(str(capture_dir), Window(), fmt="jsonl", quiet=True)
    assert len(everything) == len(RECORDS) + 20
    other = read_records(str(capture_dir), Window(), fmt="jsonl", function="other-fn", quiet=True)
    assert {r["function_name"] for r in other} == {"other-fn"} and len(other) == 20


def test_auto_format_prefers_parquet_and_accepts_the_format_folder(capture_dir: Path) -> None:
    fs, path = open_filesystem(str(capture_dir))
    assert locate(fs, path, "auto")[1] == "parquet"
    assert locate(fs, f"{path}/jsonl", "auto") == (f"{path}/jsonl", "jsonl")
    with pytest.raises(SourceError, match="holds jsonl data but --format parquet"):
        locate(fs, f"{path}/jsonl", "parquet")


def test_missing_or_unsupported_locations_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder"):
        open_filesystem(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="unsupported location"):
        open_filesystem("gs://bucket/prefix")
    with pytest.raises(SourceError, match=r"expected .*/parquet/ or .*/jsonl/ or .*/sagemaker/"):
        read_records(str(tmp_path), Window(), quiet=True)


def test_a_corrupt_file_is_named_in_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "jsonl/function=f/dt=2026-11-21/hour=01/e-00000001.jsonl.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(gzip.compress(b'{"captured_at": "2026-11-21T01:00:00Z"}\nnot json\n'))
    with pytest.raises(SourceError, match=r"e-00000001\.jsonl\.gz line 2: not JSON"):
        read_records(str(tmp_path), Window(), quiet=True)


def test_sagemaker_capture_lines_are_understood(tmp_path: Path) -> None:
    line = {
        "captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                              "data": json.dumps({"question": "q?", "context": "c"}), "encoding": "JSON"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": json.dumps({"answer": "c", "score": 0.5}), "encoding": "JSON"},
        },
        "eventMetadata": {"eventId": "e1", "inferenceId": "i1", "inferenceTime": "2026-11-21T01:02:03Z"},
        "eventVersion": "0",
    }  # fmt: skip
    path = tmp_path / "jsonl/function=f/dt=2026-11-21/hour=01/e-00000001.jsonl.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(json.dumps(line).encode() + b"\n"))
    [rec] = read_records(str(tmp_path), Window(), quiet=True)
    assert rec["inference_id"] == "i1"
    assert rec["input"] == {"question": "q?", "context": "c"} and rec["output"]["score"] == 0.5
    assert rec["_ts"] == datetime(2026, 11, 21, 1, 2, 3, tzinfo=UTC)


def test_time_and_duration_parsing() -> None:
    assert parse_time("2026-11-21") == datetime(2026, 11, 21, tzinfo=UTC)
    assert parse_time("2026-11-21T04:01:07.123Z") == datetime(2026, 11, 21, 4, 1, 7, 123000, tzinfo=UTC)
    assert parse_time("2026-11-21T06:00+02:00") == datetime(2026, 11, 21, 4, tzinfo=UTC)
    assert parse_duration("90m") == timedelta(minutes=90) and parse_duration("7d") == timedelta(days=7)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5 hours")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [("http://127.0.0.1:5000", "http://127.0.0.1:5000"), ("http://localhost:9000/", "http://localhost:9000")],
)
def test_s3_endpoint_comes_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, expected: str
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    fs, path = open_filesystem("s3://bucket/some/prefix/")
    assert path == "bucket/some/prefix"
    options = fs.__reduce__()[1][0]  # pyarrow exposes its settings only through pickling
    assert f"{options['scheme']}://{options['endpoint_override']}" == expected  # construction only, no request
    assert fs.region == "eu-west-1"
