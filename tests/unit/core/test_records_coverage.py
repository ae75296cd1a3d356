"""Record validation's remaining refusals and the exact-integer JSON path (issue 21's branch gaps)."""

from __future__ import annotations

import orjson
import pytest

from capture_ext.core.records import MAX_ID_LENGTH, RecordError, loads_exact, normalize

LONG = b"100000000000000000000000"  # past 64 bits: takes the exact path


def test_long_integers_keep_their_digits_even_where_orjson_gives_up_on_the_body() -> None:
    assert loads_exact(b'{"a": %s, "b": 1.5}' % LONG) == {"a": LONG.decode(), "b": 1.5}
    # orjson refuses a number past a float's range; the exact path then reads the body itself.
    assert loads_exact(b"[-%s%s]" % (LONG, LONG)) == ["-" + (LONG + LONG).decode()]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[NaN, %s]" % LONG, "NaN is not JSON"),
        (b"[-Infinity, %s]" % LONG, "-Infinity is not JSON"),
        (b"[%s, {]" % LONG, "invalid JSON"),
        (b"[" * 100_000 + LONG + b"]" * 100_000, "recursion"),
        # Regression (found by the coverage work): with a long integer in the body, 1e999 was read
        # as inf and stored as null; alone it was refused. Now it is refused either way.
        (b"[1e999, %s]" % LONG, "is infinity"),
        (b"[1e999]", "is infinity"),
    ],
    ids=["nan", "minus-infinity", "broken", "too-deep", "huge-float-with-long-int", "huge-float"],
)
def test_what_is_not_json_is_refused_on_either_path(body: bytes, message: str) -> None:
    with pytest.raises(orjson.JSONDecodeError, match=message):
        loads_exact(body)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"input": 1, "timestamp": -1}, "epoch milliseconds out of range (-1)"),
        ({"input": 1, "timestamp": 4102444800000}, "epoch milliseconds out of range"),
        ({"input": 1, "timestamp": ["2026-01-01"]}, "expected an RFC 3339 string or epoch milliseconds"),
        ({"input": 1, "model": {"name": "m", "version": ["1"]}}, "field 'model.version': expected a string"),
        ({"input": 1, "trace_id": 7}, f"field 'trace_id': expected a string of at most {MAX_ID_LENGTH} chars"),
        ({"input": 1, "trace_id": "t" * (MAX_ID_LENGTH + 1)}, "field 'trace_id'"),
    ],
)
def test_bad_fields_are_refused_with_a_message_naming_them(raw: dict, message: str) -> None:
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        normalize(raw, index=3)
    assert str(info.value).startswith("record 3: ") and info.value.status == 400


def test_the_edges_of_the_accepted_ranges_are_kept() -> None:
    record = normalize({"input": 1, "timestamp": 0, "model": {"name": "m", "version": 2}, "trace_id": "t" * 256})
    assert record["timestamp"] == "1970-01-01T00:00:00.000Z"
    assert record["model"] == {"name": "m", "version": "2"}
    assert record["trace_id"] == "t" * MAX_ID_LENGTH
