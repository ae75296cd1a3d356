"""The client's helpers (client_support.py) at their edges: 64-bit limits, port limits, the bits
a UUID4 fixes, the sampling threshold.

Written against the mutants `make mutate` left alive; each test pins the exact value on both sides
of one boundary, computed independently of the code under test.
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid

import orjson
import pytest

from capture_ext import client_support
from capture_ext.client_support import _big_ints_as_text, _default, _dumps, _env_float, _env_port, _uuid4_hex, sampled


class Both:
    def tolist(self) -> list[int]:
        return [1, 2]

    def item(self) -> int:
        return 9


class ItemOnly:
    def item(self) -> float:
        return 2.5


class Plain:
    def __str__(self) -> str:
        return "plain!"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Both(), [1, 2]),
        (ItemOnly(), 2.5),
        ({3}, [3]),
        (frozenset({4}), [4]),
        ((5, 6), [5, 6]),
        (Plain(), "plain!"),
    ],
)
def test_default_makes_an_object_json_can_hold(value: object, expected: object) -> None:
    assert _default(value) == expected


def test_dumps_writes_objects_through_the_default_and_keys_that_are_not_text() -> None:
    assert orjson.loads(_dumps({"a": Both(), "b": ItemOnly(), "c": Plain(), 1: "k"})) == {
        "a": [1, 2],
        "b": 2.5,
        "c": "plain!",
        "1": "k",
    }


LOW, HIGH = -(2**63), 2**64 - 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (LOW, LOW),
        (LOW - 1, str(LOW - 1)),
        (HIGH, HIGH),
        (HIGH + 1, str(HIGH + 1)),
        (True, True),
        (1.5, 1.5),
        ("x", "x"),
        ({"k": [HIGH + 1, (LOW - 1, 0)]}, {"k": [str(HIGH + 1), [str(LOW - 1), 0]]}),
    ],
)
def test_big_ints_become_their_digits_exactly_beyond_64_bits(value: object, expected: object) -> None:
    assert _big_ints_as_text(value) == expected


def test_dumps_keeps_a_record_with_an_integer_beyond_64_bits_as_its_digits() -> None:
    line = _dumps({"ok": HIGH, "big": HIGH + 1, "neg": LOW - 1, "set": {1}})
    assert orjson.loads(line) == {"ok": HIGH, "big": str(HIGH + 1), "neg": str(LOW - 1), "set": [1]}


def test_env_float_reads_a_finite_number_or_warns_and_keeps_the_default(monkeypatch, caplog) -> None:
    monkeypatch.delenv("CAPTURE_T", raising=False)
    with caplog.at_level(logging.WARNING, "capture_ext.client"):
        assert _env_float("CAPTURE_T", 1.5) == 1.5
        monkeypatch.setenv("CAPTURE_T", "-2.25")
        assert _env_float("CAPTURE_T", 1.5) == -2.25
        assert caplog.records == []
        for bad in ("abc", "nan", "inf", "-inf", ""):
            monkeypatch.setenv("CAPTURE_T", bad)
            assert _env_float("CAPTURE_T", 1.5) == 1.5
    bad_values = ("abc", "nan", "inf", "-inf", "")
    assert [r.getMessage() for r in caplog.records] == [
        f"capture client: CAPTURE_T={bad!r} is not a finite number; using 1.5" for bad in bad_values
    ]


@pytest.mark.parametrize(("raw", "port"), [("1", 1), ("65535", 65535), ("8080", 8080), ("8080.0", 8080)])
def test_env_port_takes_every_tcp_port(monkeypatch, caplog, raw: str, port: int) -> None:
    monkeypatch.setenv("CAPTURE_P", raw)
    with caplog.at_level(logging.WARNING, "capture_ext.client"):
        value = _env_port("CAPTURE_P", 9001)
    assert value == port and type(value) is int
    assert caplog.records == []


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "80.5"])
def test_env_port_refuses_what_is_not_a_tcp_port(monkeypatch, caplog, raw: str) -> None:
    monkeypatch.setenv("CAPTURE_P", raw)
    with caplog.at_level(logging.WARNING, "capture_ext.client"):
        assert _env_port("CAPTURE_P", 9001) == 9001
    assert caplog.records[-1].getMessage() == (
        f"capture client: CAPTURE_P={raw!r} is not a TCP port (1-65535); using 9001"
    )


@pytest.mark.parametrize(
    "raw", [bytes([0x00] * 16), bytes([0xFF] * 16), bytes(range(0x10, 0x20)), bytes(range(0xFF, 0xEF, -1))]
)
def test_uuid4_hex_sets_exactly_the_version_and_variant_bits(monkeypatch, raw: bytes) -> None:
    """Distinct bytes at 6, 7, 8, 9: a mutant that reads a neighbour's bits shows."""
    monkeypatch.setattr(client_support.os, "urandom", lambda n: raw[:n])
    expected = bytearray(raw)
    expected[6] = (raw[6] & 0x0F) | 0x40
    expected[8] = (raw[8] & 0x3F) | 0x80
    value = _uuid4_hex()
    assert value == expected.hex()
    assert uuid.UUID(value).version == 4 and uuid.UUID(value).variant == uuid.RFC_4122


def _threshold(inference_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(inference_id.encode("utf-8"), digest_size=8).digest(), "big")


@pytest.mark.parametrize("inference_id", ["a", "req-1", "é-ü-12345"])
def test_sampling_keeps_an_id_exactly_when_its_hash_is_below_the_rate(inference_id: str) -> None:
    value = _threshold(inference_id)
    at = value / 2**64  # a rate whose threshold is the id's own hash (to float precision)
    below, above = value * (1 - 1e-9) / 2**64, min(value * (1 + 1e-9) / 2**64, 0.999999)
    assert sampled(inference_id, above) is True
    assert sampled(inference_id, below) is False
    assert sampled(inference_id, at) is (value < at * 2**64)


def test_an_id_whose_hash_equals_the_threshold_is_not_sampled() -> None:
    """``hash < rate * 2**64``, strictly: find an id whose hash a float holds exactly (it has
    11 or more trailing zero bits; about one id in 2048) and use its own hash as the rate."""
    inference_id = next(f"id-{n}" for n in range(200_000) if _threshold(f"id-{n}") % 2**11 == 0)
    value = _threshold(inference_id)
    rate = value / 2**64
    assert rate * 2**64 == value  # exact: the threshold is the hash itself
    assert sampled(inference_id, rate) is False
    assert sampled(inference_id, math.nextafter(rate, 1.0)) is True


def test_sampling_at_or_beyond_the_ends_needs_no_hash() -> None:
    assert sampled("x", 1.0) is True and sampled("x", 7.0) is True
    assert sampled("x", 0.0) is False and sampled("x", -1.0) is False
    # Half the ids, exactly those whose hash is in the lower half of the range.
    ids = [f"id-{n}" for n in range(2000)]
    assert sum(sampled(i, 0.5) for i in ids) == sum(_threshold(i) < 2**63 for i in ids)
