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


# -- exact answers: every refusal is one line naming the problem, and 413/415 where they apply ------

LONG = b'{"input": "' + b"x" * 30 + b'"}'  # 43 bytes


@pytest.mark.parametrize(
    ("body", "content_type", "limit", "message", "status"),
    [
        (b" \n ", "application/json", LIMIT, "empty body: send a JSON object, a JSON array of objects, or NDJSON", 400),
        (LONG, "application/json", 42, "record is 43 bytes, over the 42-byte limit", 413),
        (b"[" + LONG + b"]", "application/json", 41, "record 0: 42 bytes, over the 41-byte limit", 413),
        (b'{"input": 1}\n' + LONG, "application/jsonl", 42, "line 2: record is 43 bytes, over the 42-byte limit", 413),
        (
            b"{}",
            "Application/XML; charset=utf-8",
            LIMIT,
            "unsupported Content-Type 'application/xml': use application/json or application/x-ndjson",
            415,
        ),
        (b"[]", "application/json", LIMIT, "no records in the body", 400),
        (b'[{"input": 1}, "x"]', "application/json", LIMIT, "record 1: expected a JSON object, got str", 400),
        (b'{"input": 1}\n[1]', "application/x-ndjson", LIMIT, "line 2: expected a JSON object, got list", 400),
        (
            b"\n\n",
            "application/x-ndjson",
            LIMIT,
            "empty body: send a JSON object, a JSON array of objects, or NDJSON",
            400,
        ),
    ],
)
def test_a_refused_body_gets_its_exact_message_and_status(body, content_type, limit, message, status):
    with pytest.raises(RecordError) as info:
        parse_body(body, content_type, limit)
    assert (str(info.value), info.value.status) == (message, status)


def test_a_record_exactly_at_the_limit_is_accepted_in_every_framing():
    size = len(LONG)
    assert parse_body(LONG, "application/json", size) == [{"input": "x" * 30}]
    # in an array, a record is measured as it will be stored: compact, 42 bytes
    assert parse_body(b"[" + LONG + b"]", "application/json", size - 1) == [{"input": "x" * 30}]
    assert parse_body(LONG + b"\n", "application/x-ndjson", size) == [{"input": "x" * 30}]


@pytest.mark.parametrize(
    "media_type",
    [
        "application/x-ndjson",
        "application/jsonl",
        "application/json-lines",
        "application/jsonlines",
        " APPLICATION/X-NDJSON ; charset=utf-8",
    ],
)
def test_every_ndjson_media_type_splits_lines(media_type):
    assert parse_body(b'{"input": 1}\n{"input": 2}', media_type, LIMIT) == [{"input": 1}, {"input": 2}]


@pytest.mark.parametrize("media_type", ["application/json", "", "text/plain", "application/json; charset=utf-8"])
def test_json_media_types_read_one_document(media_type):
    assert parse_body(b'[{"input": 1}]', media_type, LIMIT) == [{"input": 1}]


def test_invalid_json_is_quoted_from_the_parser():
    import orjson

    with pytest.raises(orjson.JSONDecodeError) as parser:
        orjson.loads(b"{oops")
    with pytest.raises(RecordError) as info:
        parse_body(b"{oops", "application/json", LIMIT)
    assert str(info.value) == f"invalid JSON ({parser.value})" and info.value.status == 400
    with pytest.raises(RecordError) as info:
        parse_body(b'{"input": 1}\n{oops', "application/x-ndjson", LIMIT)
    assert str(info.value) == f"line 2: invalid JSON ({parser.value})"


def test_a_record_too_deep_to_write_back_is_refused_by_position():
    deep = b'{"input": ' + b"[" * 300 + b"]" * 300 + b"}"  # orjson reads 300 levels, writes 254
    with pytest.raises(RecordError) as info:
        parse_body(b'[{"input": 1}, ' + deep + b"]", "application/json", 10_000)
    assert str(info.value) == "record 1: cannot be stored as JSON (Recursion limit reached)"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "field 'input' is required (or 'output')"),
        ({"input": 1, "inference_id": 5}, "field 'inference_id': expected a non-empty string of at most 256 chars"),
        (
            {"input": 1, "inference_id": "i" * 257},
            "field 'inference_id': expected a non-empty string of at most 256 chars",
        ),
        ({"input": 1, "request_id": 5}, "field 'request_id': expected a string of at most 256 chars"),
        ({"input": 1, "request_id": "r" * 257}, "field 'request_id': expected a string of at most 256 chars"),
        ({"input": 1, "trace_id": ["t"]}, "field 'trace_id': expected a string of at most 256 chars"),
        ({"input": 1, "trace_id": "t" * 257}, "field 'trace_id': expected a string of at most 256 chars"),
        ({"input": 1, "latency_ms": True}, "field 'latency_ms': expected a number >= 0"),
        ({"input": 1, "latency_ms": -0.001}, "field 'latency_ms': expected a number >= 0"),
        ({"input": 1, "metadata": "m"}, "field 'metadata': expected an object"),
        ({"input": 1, "model": 7}, "field 'model': expected a string or an object with name and version"),
        ({"input": 1, "model": {"name": 1}}, "field 'model.name': expected a string"),
        ({"input": 1, "model": {"version": [1]}}, "field 'model.version': expected a string"),
        ({"input": 1, "timestamp": True}, "field 'timestamp': expected an RFC 3339 string or epoch milliseconds"),
        ({"input": 1, "timestamp": [1]}, "field 'timestamp': expected an RFC 3339 string or epoch milliseconds"),
        ({"input": 1, "timestamp": -1}, "field 'timestamp': epoch milliseconds out of range (-1)"),
        (
            {"input": 1, "timestamp": 4102444800000},
            "field 'timestamp': epoch milliseconds out of range (4102444800000)",
        ),
        ({"input": 1, "timestamp": "yesterday"}, "field 'timestamp': not an RFC 3339 date-time"),
        (
            {"input": 1, "timestamp": "0001-01-01T00:00:00+01:00"},
            "field 'timestamp': out of range (years 0001 to 9999 in UTC)",
        ),
        (
            {"input": 1, "tenant": "a", "metadata": {"tenant": "b"}},
            "field 'tenant' is sent at the top level and as metadata.tenant: send it once",
        ),
        (
            {"input": 1, "sequence": 5, "metadata": {"client_sequence": 6}},
            "field 'sequence' is sent at the top level and as metadata.client_sequence: send it once",
        ),
        (
            {"input": 1, "k" * 64: 1, "metadata": {"k" * 64: 2}},
            f"field '{'k' * 64}' is sent at the top level and as metadata.{'k' * 64}: send it once",
        ),
        (
            {"input": 1, "k" * 65: 1, "metadata": {"k" * 65: 2}},
            f"field '{'k' * 64}…' is sent at the top level and as metadata.{'k' * 64}…: send it once",
        ),
    ],
)
def test_a_refused_record_gets_its_exact_message_with_and_without_its_position(raw, message):
    with pytest.raises(RecordError) as info:
        normalize(raw)
    assert (str(info.value), info.value.status) == (message, 400)
    with pytest.raises(RecordError) as info:
        normalize(raw, index=0)
    assert str(info.value) == "record 0: " + message


def test_a_record_is_normalised_to_exactly_the_canonical_fields():
    raw = {"input": [1], "output": {"y": 2}, "inference_id": "i" * 256, "request_id": "r" * 256, "latency_ms": 0}
    assert normalize({**raw, "timestamp": 4102444799999, "model": {"version": 2.5}}, now=0) == {
        "inference_id": "i" * 256,
        "request_id": "r" * 256,
        "model": {"name": None, "version": "2.5"},
        "timestamp": "2099-12-31T23:59:59.999Z",
        "latency_ms": 0.0,
        "input": [1],
        "output": {"y": 2},
        "metadata": {},
    }
    traced = normalize({"output": 1, "trace_id": "t" * 256, "request_id": "", "timestamp": 0, "metadata": None})
    assert traced["trace_id"] == "t" * 256 and traced["request_id"] == "" and traced["metadata"] == {}
    assert traced["timestamp"] == "1970-01-01T00:00:00.000Z" and traced["input"] is None
    assert type(normalize({"input": 1, "latency_ms": 7})["latency_ms"]) is float
    assert normalize({"input": 1, "model": {"name": "m"}})["model"] == {"name": "m", "version": None}
    assert normalize({"input": 1, "model": None})["model"] is None
    assert normalize({"input": 1}, now=1.5)["timestamp"] == "1970-01-01T00:00:01.500Z"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-01-02T03:04:05z", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02T03:04:05", "2024-01-02T03:04:05.000Z"),  # no offset: UTC
        ("2024-01-02T03:04:05.678-02:00", "2024-01-02T05:04:05.678Z"),
        (0.5, "1970-01-01T00:00:00.000Z"),
        (1_700_000_000_123.9, "2023-11-14T22:13:20.123Z"),
    ],
)
def test_timestamps_are_read_in_utc_to_the_millisecond(stamp, expected):
    assert normalize({"input": 1, "timestamp": stamp})["timestamp"] == expected


def test_the_invoke_trace_fills_in_only_a_record_of_that_request_without_its_own():
    enricher = Enricher("fn", "1", "env", first_sequence=10)
    enricher.invoke_trace = ("req-1", "Root=1-abc")
    assert enricher.enrich({"request_id": "req-1"})["trace_id"] == "Root=1-abc"
    assert "trace_id" not in enricher.enrich({"request_id": "req-2"})
    assert "trace_id" not in enricher.enrich({"request_id": None})
    assert enricher.enrich({"request_id": "req-1", "trace_id": "mine"})["trace_id"] == "mine"
    assert enricher.enrich({"request_id": "req-1", "trace_id": None})["trace_id"] == "Root=1-abc"
    enricher.invoke_trace = ("req-1", "")
    last = enricher.enrich({"request_id": "req-1"})
    assert "trace_id" not in last and last["sequence"] == 15


def test_rfc3339_ms_rounds_before_the_epoch_as_datetime_does():
    import datetime as dt
    import random

    rng = random.Random(11)
    for instant in [-1.5, -0.0004, -0.0000004, -86400.9999996] + [rng.uniform(-1e9, 0) for _ in range(2000)]:
        moment = dt.datetime.fromtimestamp(instant, dt.UTC)
        assert rfc3339_ms(instant) == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"-9223372036854775808", -(2**63)),
        (b"18446744073709551615", 2**64 - 1),
        (b"18446744073709551616", "18446744073709551616"),
        (b"-9223372036854775809", "-9223372036854775809"),
        (b"1" + b"0" * 400, "1" + "0" * 400),  # past a float's range: orjson refuses it, its digits are kept
        (b"1.0000000000000000001", 1.0),
    ],
)
def test_long_integers_keep_their_exact_value_or_digits(text, value):
    (record,) = parse_body(b'{"input": ' + text + b"}", "application/json", 10_000)
    assert record["input"] == value and type(record["input"]) is type(value)


def test_a_long_integer_does_not_let_invalid_json_through():
    with pytest.raises(RecordError) as info:
        parse_body(b'{"input": 12345678901234567890123, "x": NaN}', "application/json", LIMIT)
    assert str(info.value) == "invalid JSON (invalid JSON: NaN is not JSON: line 1 column 1 (char 0))"
    with pytest.raises(RecordError) as info:
        parse_body(b"[" * 100_000 + b"12345678901234567890123" + b"]" * 100_000, "application/json", 10**6)
    assert str(info.value).startswith("invalid JSON (invalid JSON: maximum recursion depth exceeded")


@pytest.fixture
def host_east_of_utc(monkeypatch):
    """The host's local zone is not UTC (+05:30, a POSIX rule: no zone database needed)."""
    import time

    monkeypatch.setenv("TZ", "XST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_timestamp_without_an_offset_is_utc_whatever_the_hosts_zone(host_east_of_utc):
    assert normalize({"input": 1, "timestamp": "2024-01-02T03:04:05"})["timestamp"] == "2024-01-02T03:04:05.000Z"
    assert normalize({"input": 1, "timestamp": "2024-01-02T03:04:05+01:00"})["timestamp"] == "2024-01-02T02:04:05.000Z"


def test_the_media_type_is_what_comes_before_the_first_parameter():
    body = b'{"input": 1}\n{"input": 2}'
    assert len(parse_body(body, "application/x-ndjson; charset=utf-8; profile=x", LIMIT)) == 2
    assert parse_body(b'{"input": 1}', "application/json; charset=utf-8; q=1", LIMIT) == [{"input": 1}]


def test_a_single_body_that_is_not_an_object_is_named_record_0():
    with pytest.raises(RecordError) as info:
        parse_body(b"5", "application/json", LIMIT)
    assert str(info.value) == "record 0: expected a JSON object, got int"


@pytest.mark.parametrize(
    ("instant", "expected"),
    [(-0.000001, "1969-12-31T23:59:59.999Z"), (-1.000001, "1969-12-31T23:59:58.999Z")],
)
def test_a_microsecond_before_a_second_is_its_last_millisecond(instant, expected):
    assert rfc3339_ms(instant) == expected


def test_a_new_enricher_knows_no_invoke_trace():
    record = Enricher("fn", "1", "env").enrich({"request_id": "req-1"})
    assert "trace_id" not in record and record["sequence"] == 1


def test_a_number_past_a_doubles_range_beside_a_long_integer_is_refused_quoting_40_characters():
    """The exact path (taken for the long integer) refuses infinity as orjson does, and quotes the
    number's first 40 characters: enough to find it, not a copy of a long value in the logs."""
    with pytest.raises(RecordError) as info:
        parse_body(b'{"input": 1e999, "id": 12345678901234567890123}', "application/json", LIMIT)
    message = "invalid JSON: number 1e999 is infinity when parsed as double: line 1 column 1 (char 0)"
    assert str(info.value) == f"invalid JSON ({message})" and info.value.status == 400
    long_number = b"1" + b"0" * 59 + b"e999"
    with pytest.raises(RecordError) as info:
        parse_body(b'{"input": 12345678901234567890123}\n[' + long_number + b"]", "application/x-ndjson", LIMIT)
    quoted = "1" + "0" * 39
    message = f"invalid JSON: number {quoted} is infinity when parsed as double: line 1 column 1 (char 0)"
    assert str(info.value) == f"line 2: invalid JSON ({message})"


@pytest.mark.parametrize(
    "stamp", ["2024-01-02Z03:04:05Z", "2024-01-02Z03:04:05.678Z", "2024-01-02Z03:04:05", "2024-01-02z03:04:05Z"]
)
def test_a_z_is_the_utc_offset_only_never_the_date_time_separator(stamp):
    """``datetime.fromisoformat`` takes any character between the date and the time, a ``Z``
    included; in RFC 3339 ``Z`` is only the offset, so such a string is refused."""
    with pytest.raises(RecordError) as info:
        normalize({"input": 1, "timestamp": stamp})
    assert str(info.value) == "field 'timestamp': not an RFC 3339 date-time"


@pytest.mark.parametrize(
    ("zone", "stamp"),
    [
        ("XST-5:30", "9999-12-31T23:59:59.000Z"),  # east of UTC: the local date would be year 10000
        ("YST8", "0001-01-01T00:00:00.000Z"),  # west of UTC: the local date would be year 0
        ("YST8", "0001-01-01T05:00:00.000+05:00"),
    ],
)
def test_the_calendars_first_and_last_seconds_are_read_whatever_the_hosts_zone(monkeypatch, zone, stamp):
    """The offset is converted to UTC, never through the host's zone (``capture-ext local`` runs
    where the developer is), so both ends of the calendar stay in range on any host."""
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        expected = stamp[:19] + ".000Z" if stamp.endswith("Z") else "0001-01-01T00:00:00.000Z"
        assert normalize({"input": 1, "timestamp": stamp})["timestamp"] == expected
    finally:
        monkeypatch.undo()
        time.tzset()
