import pytest

from capture_ext.core.records import Enricher, RecordError, normalize, parse_body, rfc3339_ms

LIMIT = 1024


def test_one_object_an_array_and_ndjson_are_accepted():
    assert parse_body(b'{"input": 1}', "application/json", LIMIT) == [{"input": 1}]
    assert parse_body(b'[{"input": 1}, {"input": 2}]', "application/json", LIMIT) == [{"input": 1}, {"input": 2}]
    body = b'{"input": 1}\n\n{"input": 2}\n'
    assert parse_body(body, "application/x-ndjson; charset=utf-8", LIMIT) == [{"input": 1}, {"input": 2}]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "empty body"),
        (b"{", "application/json", "invalid JSON"),
        (b"[]", "application/json", "no records"),
        (b"[1]", "application/json", "record 0: expected a JSON object, got int"),
        (b'{"input": 1}\n{oops', "application/x-ndjson", "line 2: invalid JSON"),
        (b'{"input": 1}', "text/csv", "unsupported Content-Type"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_message_naming_the_problem(body, content_type, message):
    with pytest.raises(RecordError) as info:
        parse_body(body, content_type, LIMIT)
    assert message in str(info.value)


def test_oversize_records_get_413():
    big = b'{"input": "' + b"x" * LIMIT + b'"}'
    for body, content_type in [
        (big, "application/json"),
        (b"[" + big + b"]", "application/json"),
        (big, "application/x-ndjson"),
    ]:
        with pytest.raises(RecordError) as info:
            parse_body(body, content_type, LIMIT)
        assert info.value.status == 413


def test_normalize_fills_defaults_and_keeps_unknown_fields_in_metadata():
    record = normalize({"input": {"q": "?"}, "user_tier": "gold", "metadata": {"a": 1}}, now=0)
    assert len(record["inference_id"]) == 32
    assert record["timestamp"] == "1970-01-01T00:00:00.000Z"
    assert record["metadata"] == {"user_tier": "gold", "a": 1}
    assert record["model"] is None and record["output"] is None


def test_normalize_canonicalises_model_and_timestamp():
    record = normalize({"output": 1, "model": {"name": "m", "version": 3}, "timestamp": 1_700_000_000_123})
    assert record["model"] == {"name": "m", "version": "3"}
    assert record["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert normalize({"output": 1, "model": "m"})["model"] == {"name": "m", "version": None}
    assert normalize({"output": 1, "timestamp": "2024-01-02T03:04:05+01:00"})["timestamp"] == "2024-01-02T02:04:05.000Z"


def test_a_client_cannot_overwrite_the_extension_fields():
    record = normalize({"input": 1, "sequence": 99, "environment_id": "fake"})
    assert "sequence" not in record and record["metadata"] == {"client_sequence": 99, "client_environment_id": "fake"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "'input'"),
        ({"input": 1, "inference_id": 5}, "'inference_id'"),
        ({"input": 1, "inference_id": ""}, "'inference_id'"),
        ({"input": 1, "request_id": ["x"]}, "'request_id'"),
        ({"input": 1, "latency_ms": "fast"}, "'latency_ms'"),
        ({"input": 1, "latency_ms": -1}, "'latency_ms'"),
        ({"input": 1, "metadata": []}, "'metadata'"),
        ({"input": 1, "model": 7}, "'model'"),
        ({"input": 1, "model": {"name": 1}}, "'model.name'"),
        ({"input": 1, "timestamp": "yesterday"}, "'timestamp'"),
        ({"input": 1, "timestamp": True}, "'timestamp'"),
    ],
)
def test_validation_errors_name_the_field(raw, field):
    with pytest.raises(RecordError) as info:
        normalize(raw, index=3)
    assert field in str(info.value) and "record 3" in str(info.value)


def test_enricher_adds_the_extension_fields_with_a_process_sequence():
    enricher = Enricher("fn", "7", "env1")
    first = enricher.enrich({"inference_id": "a"}, now=1.5)
    second = enricher.enrich({"inference_id": "b"})
    assert first["function_name"] == "fn" and first["function_version"] == "7" and first["environment_id"] == "env1"
    assert first["captured_at"] == rfc3339_ms(1.5) == "1970-01-01T00:00:01.500Z"
    assert (first["sequence"], second["sequence"]) == (1, 2)


def test_rfc3339_ms_matches_datetime_for_any_instant():
    import datetime as dt
    import random

    def reference(epoch_s: float) -> str:
        moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    rng = random.Random(7)
    instants = [rng.uniform(0, 4102444800) for _ in range(20000)]
    instants += [rng.randint(0, 4102444800000) / 1000 for _ in range(20000)]
    instants += [1.0009995, 1.9999996, 2693889213.6799994, 0.0]  # rounding edges, the cache's second change
    for instant in instants:
        assert rfc3339_ms(instant) == reference(instant), instant


def test_years_before_1000_are_four_digit_rfc3339():
    assert rfc3339_ms(-30610310400.0) == "0999-12-31T00:00:00.000Z"
    assert normalize({"input": 1, "timestamp": "0042-03-04T05:06:07.5Z"})["timestamp"] == "0042-03-04T05:06:07.500Z"


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_that_leaves_the_calendar_in_utc_is_a_clear_400(stamp):
    """Regression: the offset overflowed after parsing and an OverflowError escaped ingest."""
    with pytest.raises(RecordError, match="timestamp': out of range"):
        normalize({"input": 1, "timestamp": stamp})


def test_integers_beyond_64_bits_keep_their_exact_digits():
    """Regression: orjson read 10000000000000000000001 as the float 1e+22."""
    (record,) = parse_body(b'{"input": {"n": 10000000000000000000001, "m": -9223372036854775809, "k": 7}}', "", 10**6)
    assert record["input"] == {"n": "10000000000000000000001", "m": "-9223372036854775809", "k": 7}
    lines = parse_body(b'{"input": 18446744073709551615}\n{"input": 1.5}\n', "application/x-ndjson", 10**6)
    assert [r["input"] for r in lines] == [18446744073709551615, 1.5]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"input": 1, "tenant": "a", "metadata": {"tenant": "b"}}, "'tenant'"),
        ({"input": 1, "sequence": 5, "metadata": {"client_sequence": 6}}, "'sequence'"),
    ],
)
def test_a_top_level_field_never_overwrites_metadata_or_is_overwritten(raw, field):
    """Regression: {**extra, **metadata} let metadata's key silently replace the top-level field."""
    with pytest.raises(RecordError, match=f"field {field} is sent at the top level and as metadata"):
        normalize(raw)
    kept = normalize({"input": 1, "tenant": "a", "sequence": 5, "metadata": {"region": "eu"}})["metadata"]
    assert kept == {"region": "eu", "tenant": "a", "client_sequence": 5}
