"""The ingest path's shortcuts give exactly what the long way gives, on seeded random input.

Each shortcut in ``core/records.py`` (the digit-run scan without a regex, integer milliseconds
without float arithmetic, canonical timestamp strings without a parse, the cached date prefixes)
is checked against the code it replaced, kept here verbatim as the reference. A failure names the
seed and the input, so it replays.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from typing import Any

import orjson
import pytest

from capture_ext.core import records
from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.ingest import Ingest, _LineProtocol
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import (
    Enricher,
    RecordError,
    has_long_digits,
    loads_exact,
    normalize,
    rfc3339_from_ms,
    rfc3339_ms,
)
from capture_ext.core.store import Store

SEEDS = range(20)
YEAR_2100_MS = 4102444800000

# -- the references: the implementations the shortcuts replaced -------------------------------
_REFERENCE_LONG_DIGITS = re.compile(rb"\d{19}")


def reference_loads_exact(data: bytes) -> Any:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        if not _REFERENCE_LONG_DIGITS.search(data):
            raise
        parsed = None
    if not _REFERENCE_LONG_DIGITS.search(data):
        return parsed
    try:
        # parse_float as the current code has it (a finite-number check added since): the scan is under test
        return json.loads(
            data, parse_int=records._exact_int, parse_float=records._finite_float, parse_constant=records._no_constants
        )
    except (ValueError, RecursionError) as exc:
        raise orjson.JSONDecodeError(f"invalid JSON: {exc}", "", 0) from None


def reference_rfc3339(epoch_s: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def forget_prefixes() -> None:
    """Empty the date caches: the next timestamp takes the long way."""
    records._PREFIXES.clear()
    records._CANONICAL_PREFIXES.clear()


def outcome(call: Any, *args: Any) -> tuple[str, str]:
    """What a call gave: its value's repr (types included), or its exception's type and message."""
    try:
        return "value", repr(call(*args))
    except Exception as exc:
        return type(exc).__name__, str(exc)


# -- random input -------------------------------------------------------------------------------
_ALPHABETS = [
    "abc xyz",
    "0123456789",
    "éü߀ 中文 日本語",
    "٠١٢٣٤٥٦٧٨٩",  # Arabic-Indic digits: digits to str.isdigit, not to a bytes regex
    "０１２３４５６７８９",  # full-width digits
    "😀🎉\u0301\u200d",
    '"\\/\b\f\n\r\t',
]


def random_text(rng: random.Random) -> str:
    alphabet = rng.choice(_ALPHABETS)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))


def random_int(rng: random.Random) -> int:
    digits = rng.choice([1, 5, 17, 18, 19, 20, 21, 25, 40])
    value = rng.randint(10 ** (digits - 1), 10**digits - 1)
    value = rng.choice([value, -value, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1])
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return random_text(rng)
    if kind == 1:
        return random_int(rng)
    if kind == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300), 0.0, -0.0])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.randint(-1000, 1000)
    if kind == 5:
        return "9" * rng.randint(15, 25)  # a long digit run inside a string: the scan must still look
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def encode(value: Any, rng: random.Random) -> bytes:
    """JSON text of ``value`` with its big integers as numbers, compact or spaced."""
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, separators=rng.choice([(",", ":"), (", ", ": ")]))
    return text.encode()


def damage(data: bytes, rng: random.Random) -> bytes:
    """Invalid JSON sometimes, odd-but-valid other times."""
    choice = rng.randrange(6)
    if choice == 0 and data:
        return data[: rng.randrange(len(data))]
    if choice == 1:
        return data + rng.choice([b"x", b"}", b" ", b"\n", b"1" * 19])
    if choice == 2:
        return data.replace(b"0", b"1e999", 1)
    if choice == 3:
        return b'{"a": ' + b"9" * rng.randint(15, 400) + b"}"
    if choice == 4:
        return b'{"a": NaN, "b": ' + b"1" * rng.randint(17, 21) + b"}"
    return data


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_the_digit_scan_finds_exactly_what_the_regex_finds(seed):
    rng = random.Random(seed)
    for _ in range(500):
        run = b"".join(rng.choice([b"0123456789", b"0123456789", b"a-. e+", "٣０é".encode()]) for _ in range(8))
        data = bytes(rng.choice(run) for _ in range(rng.randint(0, 60)))
        assert has_long_digits(data) == bool(_REFERENCE_LONG_DIGITS.search(data)), (seed, data)
    for length in range(15, 24):
        for around in (b"", b"x", b"-", b".", b" "):
            data = around + b"7" * length + around
            assert has_long_digits(data) == (length >= 19), data


@pytest.mark.parametrize("seed", SEEDS)
def test_loads_exact_gives_what_the_regex_version_gave(seed):
    rng = random.Random(seed)
    for _ in range(300):
        value = {random_text(rng): random_value(rng) for _ in range(rng.randint(0, 6))}
        data = encode(value, rng)
        if rng.random() < 0.3:
            data = damage(data, rng)
        assert outcome(loads_exact, data) == outcome(reference_loads_exact, data), (seed, data)


@pytest.mark.parametrize("seed", SEEDS)
def test_integer_milliseconds_format_as_the_float_path_and_datetime_do(seed):
    rng = random.Random(seed)
    values = [rng.randrange(YEAR_2100_MS) for _ in range(2000)]
    values += [rng.randrange(1_600_000_000_000, 1_900_000_000_000) for _ in range(2000)]
    second = rng.randrange(YEAR_2100_MS // 1000)
    values += [second * 1000 + ms for ms in (0, 1, 499, 500, 501, 998, 999, 1000)]
    values += [0, 1, 999, 1000, YEAR_2100_MS - 1, records._EXACT_MS_LIMIT - 1, records._EXACT_MS_LIMIT]
    values += [records._EXACT_MS_LIMIT + rng.randrange(10**9) for _ in range(50)]
    for index, ms in enumerate(values):
        if index % 7 == 0:
            forget_prefixes()
        expected = rfc3339_ms(ms / 1000.0)
        assert rfc3339_from_ms(ms) == expected, (seed, ms)
        if ms < 253402300800000:  # datetime ends with year 9999
            assert expected == reference_rfc3339(ms / 1000.0), (seed, ms)


def random_timestamp_string(rng: random.Random) -> tuple[str, int]:
    """Canonical RFC 3339 strings, near-canonical ones, and invalid ones; and the instant (ms)."""
    recent = rng.random() < 0.5
    ms = rng.randrange(1_600_000_000_000, 1_900_000_000_000) if recent else rng.randrange(YEAR_2100_MS)
    text = reference_rfc3339(ms / 1000)
    variant = rng.randrange(14)
    if variant == 0:
        text = text[:-1] + "z"
    elif variant == 1:
        text = text[:10] + rng.choice(["t", " ", "_"]) + text[11:]
    elif variant == 2:
        text = text[:-1] + rng.choice(["+00:00", "-05:30", "+14:00"])
    elif variant == 3:
        text = text[:-1] + rng.choice(["123Z", "0Z"])[: rng.randint(1, 3)]
    elif variant == 4:
        text = text[:20] + rng.choice(["٣٣٣", "٣12", "０１２", "０12", "1٣2", "a12", " 12", "+12"]) + "Z"
    elif variant == 5:
        text = text[:19] + rng.choice([",", ":"]) + text[20:]
    elif variant == 6:
        text = rng.choice(["2023-02-29", "2024-02-30", "2024-13-01", "2024-00-10"]) + text[10:]
    elif variant == 7:
        text = text[:17] + rng.choice(["60", "99", "5x"]) + text[19:]
    elif variant == 8:
        text = text[:-1]
    elif variant == 9:
        text = text[:-5] + "Z"
    return text, ms


@pytest.mark.parametrize("seed", SEEDS)
def test_canonical_timestamp_strings_come_back_as_the_long_way_gives_them(seed):
    rng = random.Random(seed)
    hits = 0
    for _ in range(400):
        text, ms = random_timestamp_string(rng)
        forget_prefixes()
        long_way = outcome(lambda t: normalize({"input": 1, "timestamp": t}, now=0)["timestamp"], text)
        rfc3339_from_ms(ms)  # that second's prefix is cached now: the string may take the shortcut
        short_way = outcome(lambda t: normalize({"input": 1, "timestamp": t}, now=0)["timestamp"], text)
        assert short_way == long_way, (seed, text)
        hits += records._canonical_in_cached_second(text)
        for other in rng.sample(range(1000), 3):  # any other millisecond of a cached second
            sibling = text[:20] + f"{other:03d}" + text[23:]
            cached = outcome(lambda t: normalize({"input": 1, "timestamp": t}, now=0)["timestamp"], sibling)
            forget_prefixes()
            assert cached == outcome(lambda t: normalize({"input": 1, "timestamp": t}, now=0)["timestamp"], sibling), (
                seed,
                sibling,
            )
            rfc3339_from_ms(ms)
    assert hits > 50  # the shortcut was taken, not only the long way


def test_a_shortcut_string_outside_the_exact_range_takes_the_long_way():
    """Past 2**32 s a float epoch may not round back to the same millisecond: never assumed."""
    forget_prefixes()
    far = "9999-12-31T23:59:59.999Z"
    first = normalize({"input": 1, "timestamp": far})["timestamp"]
    assert not records._canonical_in_cached_second(far)
    assert normalize({"input": 1, "timestamp": far})["timestamp"] == first


# -- the date caches at the edges they could get wrong ------------------------------------------
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def exact_rfc3339(ms: int) -> str:
    """The instant ``ms`` formatted with integer arithmetic only: no float, no cache."""
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def edge_seconds() -> list[int]:
    """Seconds where a date changes or an exactness bound lies: days, months, years, leap days, the epoch,
    the years before 1970 and before 1000, 2**31, 2**32, 2**33 and the calendar's two ends."""
    edges = {0, 2**31, 2**32, 2**33, 2**32 - 1, 2**33 - 1}
    for year in (1, 999, 1000, 1900, 1969, 1970, 2000, 2023, 2024, 2038, 2100, 2106, 2400, 9999):
        for month, day in ((1, 1), (2, 28), (2, 29), (3, 1), (12, 31)):
            try:
                start = dt.datetime(year, month, day, tzinfo=dt.UTC)
            except ValueError:  # no 29 February that year
                continue
            edges.add(int(start.timestamp()))
    last = int(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp())
    first = int(dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp())
    return sorted(second for edge in edges for second in (edge - 1, edge, edge + 1) if first <= second <= last)


@pytest.mark.parametrize("seed", SEEDS)
def test_cached_dates_are_datetimes_across_every_edge_and_every_cache_refill(seed):
    """Integer milliseconds, float seconds and timestamp strings on both sides of each edge, in a
    random order that refills the 256-second cache many times and revisits seconds it still holds."""
    rng = random.Random(seed)
    seconds = edge_seconds()
    seconds += [rng.randrange(-(2**35), 2**35) for _ in range(300)]
    seconds += rng.choices(seconds, k=300)  # seconds seen before, still cached or evicted since
    rng.shuffle(seconds)
    forget_prefixes()
    for second in seconds:
        for ms in {second * 1000 + rng.choice([0, 1, 499, 500, 998, 999]), second * 1000 + rng.randrange(1000)}:
            case = (seed, ms)
            expected = reference_rfc3339(ms / 1000)
            assert rfc3339_ms(ms / 1000) == expected, case
            assert rfc3339_from_ms(ms) == expected, case
            if 0 <= ms < records._EXACT_MS_LIMIT:
                assert expected == exact_rfc3339(ms), case
            text = exact_rfc3339(ms)
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            stamp = normalize({"input": 1, "timestamp": text}, now=0)["timestamp"]
            assert stamp == reference_rfc3339(parsed), case
            if 0 <= ms < YEAR_2100_MS:
                assert stamp == text, case
                assert normalize({"input": 1, "timestamp": ms}, now=0)["timestamp"] == text, case
            assert len(records._PREFIXES) <= records._PREFIX_CACHE_SIZE  # the cache's memory is bounded


class _CountingDatetime(dt.datetime):
    """``datetime``, counting the seconds whose date is computed and the strings parsed."""

    formatted: list[float] = []
    parsed: list[str] = []

    @classmethod
    def fromtimestamp(cls, t: float, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
        cls.formatted.append(t)
        return dt.datetime.fromtimestamp(t, tz)

    @classmethod
    def fromisoformat(cls, date_string: str) -> dt.datetime:  # type: ignore[override]
        cls.parsed.append(date_string)
        return dt.datetime.fromisoformat(date_string)


@pytest.fixture
def counted_datetime(monkeypatch: pytest.MonkeyPatch) -> type[_CountingDatetime]:
    """What ``core/records.py`` asks of ``datetime``, counted: the work its caches exist to save."""
    monkeypatch.setattr(_CountingDatetime, "formatted", [])
    monkeypatch.setattr(_CountingDatetime, "parsed", [])
    shim = type("datetime_module", (), {"datetime": _CountingDatetime, "UTC": dt.UTC})
    monkeypatch.setattr(records, "dt", shim)
    forget_prefixes()
    return _CountingDatetime


@pytest.mark.parametrize("seed", range(5))
def test_each_second_is_formatted_once_while_the_cache_holds_it(seed, counted_datetime):
    """The date part is a third of the ingest path's CPU (benchmark 4): a second seen again, by
    either formatter, must come from the cache."""
    rng = random.Random(seed)
    base = rng.randrange(1_600_000_000, 1_900_000_000)
    distinct = sorted({base + rng.randrange(-100, 100) for _ in range(150)})  # fewer than the cache holds
    for _ in range(1000):
        second = rng.choice(distinct)
        ms = second * 1000 + rng.randrange(1000)
        if rng.random() < 0.5:
            assert rfc3339_from_ms(ms) == exact_rfc3339(ms), (seed, ms)
        else:
            assert rfc3339_ms(ms / 1000) == exact_rfc3339(ms), (seed, ms)
    assert sorted(counted_datetime.formatted) == distinct, seed


def test_integer_milliseconds_take_no_float_arithmetic_below_2_to_the_32_seconds(monkeypatch):
    """The Python client's timestamps are integers; below 2**32 s they are formatted exactly with
    integer arithmetic, and from there on as ``rfc3339_ms(ms / 1000)`` rounds them."""
    floats: list[float] = []
    float_path = records.rfc3339_ms

    def counted(epoch_s: float) -> str:
        floats.append(epoch_s)
        return float_path(epoch_s)

    monkeypatch.setattr(records, "rfc3339_ms", counted)
    limit = records._EXACT_MS_LIMIT
    for ms in (0, 1, 999, 1000, 1_700_000_000_123, YEAR_2100_MS - 1, limit - 1):
        assert rfc3339_from_ms(ms) == exact_rfc3339(ms), ms
    for ms in (0, 1, 1_700_000_000_123, YEAR_2100_MS - 1):
        assert normalize({"input": 1, "timestamp": ms})["timestamp"] == exact_rfc3339(ms), ms
    assert floats == []
    for ms in (limit, limit + 1, -1):
        assert rfc3339_from_ms(ms) == float_path(ms / 1000), ms
    assert floats == [limit / 1000, (limit + 1) / 1000, -1 / 1000]


@pytest.mark.parametrize("second", [0, 1, 86_400, 2**31, 2**32 - 1])
def test_a_canonical_string_takes_the_shortcut_from_the_epochs_first_second_to_2_to_the_32(second, counted_datetime):
    rfc3339_from_ms(second * 1000)  # its second is cached now
    for ms in (0, 1, 999):
        text = exact_rfc3339(second * 1000 + ms)
        assert normalize({"input": 1, "timestamp": text})["timestamp"] == text
    assert counted_datetime.parsed == []  # returned as sent, never parsed


@pytest.mark.parametrize("second", [-86_400, -1, 2**32, 2**32 + 1, 2**33 - 1, 2**33])
def test_a_canonical_string_outside_0_to_2_to_the_32_is_always_parsed(second, counted_datetime):
    """Past 2**32 s the comment's exactness bound is not proven: the string is read and formatted
    again, as datetime gives it, even in a second the cache holds."""
    rfc3339_ms(float(second))
    text = exact_rfc3339(second * 1000 + 999)
    expected = reference_rfc3339(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    assert normalize({"input": 1, "timestamp": text})["timestamp"] == expected
    assert len(counted_datetime.parsed) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_whole_records_normalise_the_same_with_warm_and_cold_caches(seed):
    rng = random.Random(seed)
    fields = ["input", "output", "inference_id", "request_id", "model", "timestamp", "latency_ms", "metadata"]
    extras = ["user_tier", "sequence", "captured_at", "function_name", "x" * 80, "é"]
    for _ in range(300):
        raw: dict[str, Any] = {}
        for name in rng.sample(fields, rng.randint(1, len(fields))):
            raw[name] = {
                "input": random_value(rng),
                "output": random_value(rng),
                "inference_id": rng.choice(["id-" + random_text(rng), "", 7]),
                "request_id": rng.choice(["req", None, 1]),
                "model": rng.choice(["m", {"name": "m", "version": 3}, None, 5]),
                "timestamp": rng.choice([rng.randrange(YEAR_2100_MS), rng.uniform(0, YEAR_2100_MS), -1, True])
                if rng.random() < 0.6
                else random_timestamp_string(rng)[0],
                "latency_ms": rng.choice([1, 2.5, -1, "x", None]),
                "metadata": rng.choice([{}, {"a": 1}, {"user_tier": "x"}, None, []]),
            }[name]
        for name in rng.sample(extras, rng.randint(0, 3)):
            raw[name] = random_value(rng)
        raw.setdefault("inference_id", "fixed")  # a generated id would differ between the two calls
        forget_prefixes()
        cold = outcome(lambda r: normalize(dict(r), now=1_700_000_000.5), raw)
        warm = outcome(lambda r: normalize(dict(r), now=1_700_000_000.5), raw)
        assert warm == cold, (seed, raw)
        if cold[0] == "value":
            expected_extra = {key for key in raw if key not in records.KNOWN_FIELDS}
            moved = normalize(dict(raw), now=0)["metadata"]
            for key in expected_extra:
                target = f"client_{key}" if key in records.ENRICHED_FIELDS else key
                assert moved[target] == raw[key]


def test_a_big_integer_keeps_its_digits_through_the_scan():
    line = b'{"input": {"id": 123456789012345678901234567890, "n": 18446744073709551615}}'
    assert loads_exact(line) == {"input": {"id": "123456789012345678901234567890", "n": 18446744073709551615}}
    with pytest.raises(RecordError):
        normalize({"input": 1, "timestamp": "2024-02-30T00:00:00.000Z"})


class _ReferenceLines(_LineProtocol):
    """The line splitter before one ``split`` per read: a ``find`` and two copies per line."""

    def data_received(self, data: bytes) -> None:
        self.ingest.bytes_read += len(data)
        self.ingest.unread = False
        self.pending += data
        start = 0
        found: list[dict[str, Any]] = []
        while True:
            end = self.pending.find(b"\n", start)
            if end < 0:
                break
            if self.discarding:
                self.discarding = False
            elif end > start:
                record = self.ingest.parse_line(bytes(self.pending[start:end]))
                if record is not None:
                    found.append(record)
            start = end + 1
        del self.pending[:start]
        if found:
            self.ingest.accept(found)
        if len(self.pending) > self.limit:
            if not self.discarding:
                self.ingest.ledger.rejected["too_large"] += 1
            self.pending.clear()
            self.discarding = True


def _socket_ingest() -> tuple[Ingest, Ledger, Store]:
    ledger = Ledger()
    budget = MemoryBudget(10_000_000)
    store = Store(RecordBuffer("env", budget, 100_000, 10_000_000), budget, sinks=["a"])
    return Ingest(store, ledger, Enricher("fn", "1", "env"), 300), ledger, store


@pytest.mark.parametrize("seed", SEEDS)
def test_socket_reads_split_into_the_same_lines_as_before(seed):
    rng = random.Random(seed)
    pieces = [
        b'{"input": 1}',
        b'{"input": "' + "é😀".encode() * 10 + b'"}',
        b'{"input": "' + b"x" * 400 + b'"}',  # over the 300-byte limit
        b"{broken",
        b"",
        b'{"_capture_ext": "done", "request_id": "r"}',
        b'{"input": 12345678901234567890123}',
    ]
    stream = b"".join(rng.choice(pieces) + b"\n" * rng.choice([1, 1, 1, 2]) for _ in range(60))
    stream += rng.choice([b"", b'{"input": 9', b"y" * 500])
    cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 40)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    results = []
    for kind in (_LineProtocol, _ReferenceLines):
        ingest, ledger, store = _socket_ingest()
        protocol = kind(ingest, limit=ingest.max_record_bytes + 1)
        seen = []
        for chunk in chunks:
            protocol.data_received(chunk)
            seen.append((len(store.buffer), dict(ledger.rejected), bytes(protocol.pending), protocol.discarding))
        protocol.eof_received()
        inputs = [record["input"] for record in store.buffer._records]
        results.append((seen, inputs, dict(ledger.rejected), ledger.received))
    assert results[0] == results[1], (seed, chunks)
