"""The ingest path without a server: routes, per-record isolation, the ``?partial=1`` fallback, counting."""

import asyncio
import logging
import os
import stat

import orjson
import pytest

from capture_ext.core.buffer import MemoryBudget, RecordBuffer
from capture_ext.core.http11 import Request
from capture_ext.core.ingest import Ingest, _LineProtocol, _query_flag, start_socket_server
from capture_ext.core.ledger import Ledger
from capture_ext.core.records import Enricher, RecordError
from capture_ext.core.store import Store


def build(memory=100_000, **kwargs):
    ledger = Ledger()
    budget = MemoryBudget(memory)
    store = Store(RecordBuffer("env", budget, 100, 100_000), budget, sinks=["a"])
    return Ingest(store, ledger, Enricher("fn", "1", "env"), 1000, **kwargs), ledger, store


def post(ingest, body, path="/v1/records", content_type="application/x-ndjson"):
    return ingest._post_records(Request("POST", path, {"content-type": content_type}, body))


def answer(response):
    return response.status, orjson.loads(response.body)


async def test_routes_answer_with_the_method_they_take_and_a_404_names_the_path():
    ingest, _, _ = build(health=lambda: {"status": "mine"})
    get_records = await ingest.handle_http(Request("GET", "/v1/records", {}, b""))
    assert get_records.status == 405 and ("allow", "POST") in get_records.headers
    post_health = await ingest.handle_http(Request("POST", "/v1/health", {}, b""))
    assert post_health.status == 405 and ("allow", "GET") in post_health.headers
    assert answer(await ingest.handle_http(Request("HEAD", "/v1/health?x=1", {}, b""))) == (200, {"status": "mine"})
    status, body = answer(await ingest.handle_http(Request("GET", "/v2/nothing", {}, b"")))
    assert status == 404 and "'/v2/nothing'" in body["error"]
    plain, _, _ = build()
    assert answer(await plain.handle_http(Request("GET", "/v1/health", {}, b""))) == (200, {"status": "ok"})


async def test_a_post_is_routed_to_the_record_path():
    ingest, ledger, _ = build()
    response = await ingest.handle_http(Request("POST", "/v1/records", {}, b'{"input": 1}'))
    assert answer(response) == (202, {"accepted": 1}) and ledger.received == 1


def test_a_whole_request_is_refused_for_one_record_that_cannot_be_stored():
    ingest, ledger, store = build()
    records = [{"input": 1}, {"input": {1: "a key orjson cannot write"}}]
    with pytest.raises(RecordError, match=r"record 1: cannot be stored \(TypeError"):
        ingest.accept(records, whole=True)
    assert ledger.received == 0 and len(store.buffer) == 0  # nothing counted, nothing kept
    # On the socket the same record is refused alone and its neighbour is kept.
    assert ingest.accept([{"input": 1}, {"input": {1: "x"}}]) == 1
    assert ledger.received == 1 and ledger.rejected == {"invalid": 1}


def test_a_single_record_error_does_not_name_an_index():
    ingest, _, _ = build()
    with pytest.raises(RecordError) as caught:
        ingest.accept([{"input": {1: "x"}}], whole=True)
    assert str(caught.value).startswith("cannot be stored")


def test_a_raising_prepare_hook_drops_only_its_record_and_counts_it():
    def prepare(record):
        if record["input"] == "bad":
            raise ValueError("no")

    ingest, ledger, store = build(prepare=prepare)
    assert ingest.accept([{"input": "ok"}, {"input": "bad"}, {"input": "ok2"}]) == 2
    assert ledger.received == 3 and ledger.dropped == {"prepare_error": 1}
    assert [r["input"] for r in store.buffer._records] == ["ok", "ok2"]


def test_records_the_store_cannot_keep_are_counted_with_its_reason():
    ingest, ledger, store = build(memory=450)
    assert ingest.accept([{"input": "x" * 40} for _ in range(2)]) == 2
    assert ingest.accept([{"input": "x" * 40} for _ in range(2)]) == 0  # all or nothing: none fit
    assert ledger.received == 4 and ledger.dropped == {"buffer_full": 2} and len(store.buffer) == 2


def test_a_full_buffer_answers_503_and_the_refused_records_are_rejected_not_received():
    ingest, ledger, store = build(memory=450)
    body = b"\n".join(orjson.dumps({"input": "x" * 40}) for _ in range(5))
    status, payload = answer(post(ingest, body))
    assert status == 503 and "buffer is full" in payload["error"]
    assert (payload["accepted"], payload["dropped"]) == (0, 5) and len(store.buffer) == 0
    assert ledger.received == 0 and ledger.rejected == {"buffer_full": 5} and not ledger.dropped


def test_refusals_are_counted_by_reason():
    ingest, ledger, _ = build()
    status, payload = answer(post(ingest, b'{"input": "' + b"x" * 2000 + b'"}', content_type="application/json"))
    assert status == 413 and "over the 1000-byte limit" in payload["error"]
    assert status == 413 and ledger.rejected == {"too_large": 1}
    assert post(ingest, b"{}", content_type="application/xml").status == 415
    assert ledger.rejected["unsupported_media_type"] == 1
    assert post(ingest, b"{nope", content_type="application/json").status == 400
    assert ledger.rejected["invalid"] == 1
    assert ledger.received == 0


def test_every_bug_behind_a_request_costs_a_clear_400_not_a_500_counted_and_logged(caplog):
    ingest, ledger, store = build()

    def broken(items):
        raise RuntimeError("a bug")

    store.add = broken
    with caplog.at_level(logging.ERROR, "capture_ext.core.ingest"):
        status, payload = answer(post(ingest, b'{"input": 1}'))
        assert ledger.rejected == {"invalid": 1}
        post(ingest, b'{"input": 1}')
    assert status == 400 and payload == {"error": "records could not be read (RuntimeError)"}
    assert ledger.rejected == {"invalid": 2}
    assert [r.getMessage() for r in caplog.records] == ["records request refused"] * 2


def test_control_lines_are_obeyed_and_never_stored():
    done: list[str] = []
    started: list[str] = []
    ingest, ledger, store = build(on_handler_done=done.append, on_handler_started=started.append)
    body = b"\n".join(
        [
            b'{"_capture_ext": "start", "request_id": "r1"}',
            b'{"input": 1}',
            b'{"_capture_ext": "done", "request_id": "r1"}',
            b'{"_capture_ext": "done", "request_id": ""}',
            b'{"_capture_ext": "done"}',
        ]
    )
    assert answer(post(ingest, body)) == (202, {"accepted": 1})
    assert started == ["r1"] and done == ["r1"] and len(store.buffer) == 1 and ledger.received == 1
    # A request of control lines only keeps nothing and is still a success.
    assert answer(post(ingest, b'{"_capture_ext": "done", "request_id": "r2"}')) == (202, {"accepted": 0})
    assert done == ["r1", "r2"]


def test_control_lines_without_callbacks_are_still_swallowed():
    ingest, _, store = build()
    assert ingest.parse_line(b'{"_capture_ext": "start", "request_id": "r"}') is None
    assert ingest.parse_line(b'{"_capture_ext": "done", "request_id": "r"}') is None
    assert len(store.buffer) == 0


def test_partial_posts_keep_good_lines_and_count_the_bad_ones():
    ingest, ledger, store = build()
    body = b'{"input": 1}\n{nope\n[1]\n\n   \n{"input": 2}\n{"_capture_ext": "done", "request_id": "r"}\n'
    status, payload = answer(post(ingest, body, path="/v1/records?partial=1"))
    assert status == 202 and payload == {"accepted": 2, "rejected": 2}
    assert ledger.rejected == {"invalid": 2} and len(store.buffer) == 2


def test_a_partial_post_into_a_full_store_is_503_so_the_client_keeps_its_lines():
    ingest, ledger, _ = build(memory=10)
    status, payload = answer(post(ingest, b'{"input": 1}\n', path="/v1/records?x=2&partial=true"))
    assert status == 503 and payload["accepted"] == 0 and "buffer is full" in payload["error"]
    assert ledger.rejected == {"buffer_full": 1} and ledger.received == 0


def test_a_partial_post_that_does_not_fit_keeps_none_of_its_lines():
    ingest, ledger, store = build(memory=450)
    body = b"".join(orjson.dumps({"input": "x" * 40}) + b"\n" for _ in range(5))
    status, payload = answer(post(ingest, body, path="/v1/records?partial"))
    assert status == 503 and payload["accepted"] == 0  # a retry of the request cannot duplicate half of it
    assert len(store.buffer) == 0 and ledger.rejected == {"buffer_full": 5}


@pytest.mark.parametrize(
    ("query", "expected"),
    [("partial=1", True), ("partial", True), ("a=b&partial=true", True), ("partial=0", False), ("", False)],
)
def test_the_partial_flag(query, expected):
    assert _query_flag(f"/v1/records?{query}", "partial") is expected


def test_socket_lines_that_are_too_large_or_not_objects_are_refused_and_counted():
    ingest, ledger, _ = build()
    assert ingest.parse_line(b'"' + b"x" * 1200 + b'"') is None
    assert ingest.parse_line(b"[1, 2]") is None
    assert ingest.parse_line(b"{broken") is None
    assert ingest.parse_line(b'{"input": 1}')["input"] == 1
    assert ledger.rejected == {"too_large": 1, "invalid": 2}


def test_an_unexpected_error_on_one_line_costs_that_line_only(monkeypatch):
    import capture_ext.core.ingest as ingest_module

    ingest, ledger, _ = build()

    def explode(raw):
        raise ZeroDivisionError

    monkeypatch.setattr(ingest_module, "normalize", explode)
    assert ingest.parse_line(b'{"input": 1}') is None
    assert ledger.rejected == {"invalid": 1}


def test_refusal_warnings_are_rate_limited(caplog):
    ingest, ledger, _ = build()
    with caplog.at_level(logging.WARNING, "capture_ext.core.ingest"):
        for _ in range(2000):
            ingest.parse_line(b"{broken")
    assert ledger.rejected == {"invalid": 2000}
    counts = [r.getMessage().rsplit("(", 1)[1] for r in caplog.records]
    assert counts == [f"{n} refused so far)" for n in [*range(1, 11), 1000, 2000]]


def test_the_line_protocol_joins_reads_skips_endless_lines_and_counts_a_torn_end():
    ingest, ledger, store = build()
    protocol = _LineProtocol(ingest, limit=200)
    protocol.data_received(b'{"input": 1}\n{"inp')
    assert len(store.buffer) == 1
    protocol.data_received(b'ut": 2}\n\n')
    assert len(store.buffer) == 2
    protocol.data_received(b'{"input": "' + b"x" * 300)  # no newline and over the limit
    assert ledger.rejected == {"too_large": 1} and protocol.discarding
    protocol.data_received(b'still the endless line"}\n{"input": 3}\n')
    assert [r["input"] for r in store.buffer._records] == [1, 2, 3] and not protocol.discarding
    protocol.data_received(b'{"input": 4')
    protocol.eof_received()
    assert ledger.rejected == {"too_large": 1, "truncated": 1} and protocol.pending == b""


def test_a_discarded_line_ending_at_eof_is_not_counted_twice():
    ingest, ledger, _ = build()
    protocol = _LineProtocol(ingest, limit=10)
    protocol.data_received(b"x" * 20)
    protocol.eof_received()
    assert ledger.rejected == {"too_large": 1}


def test_a_core_bug_on_the_socket_counts_the_records_and_keeps_the_connection(caplog):
    ingest, ledger, store = build()

    def broken(items):
        raise RuntimeError("a bug")

    store.add = broken
    protocol = _LineProtocol(ingest, limit=1000)
    with caplog.at_level(logging.ERROR, "capture_ext.core.ingest"):
        protocol.data_received(b'{"input": 1}\n{"input": 2}\n')
    assert ledger.rejected == {"internal_error": 2}
    assert "2 records could not be stored" in caplog.text


# -- exact answers and the socket's hold, written where mutation testing found room --------------


async def test_every_route_answers_with_its_exact_error():
    ingest, _, _ = build()
    wrong_method = await ingest.handle_http(Request("PUT", "/v1/records?partial=1", {}, b""))
    assert answer(wrong_method) == (405, {"error": "use POST /v1/records"})
    assert wrong_method.headers == [("allow", "POST")]
    health = await ingest.handle_http(Request("DELETE", "/v1/health", {}, b""))
    assert answer(health) == (405, {"error": "use GET /v1/health"}) and health.headers == [("allow", "GET")]
    assert answer(await ingest.handle_http(Request("GET", "/v1/records/x?y=1", {}, b""))) == (
        404,
        {"error": "no route '/v1/records/x': use POST /v1/records or GET /v1/health"},
    )


def test_a_request_names_the_record_by_position_only_when_it_has_several():
    ingest, ledger, _ = build()
    control = b'{"_capture_ext": "done", "request_id": "r"}'
    status, payload = answer(
        post(ingest, b"[" + control + b', {"output": 1}, {"x": 1}]', content_type="application/json")
    )
    assert (status, payload) == (400, {"error": "record 1: field 'input' is required (or 'output')"})
    status, payload = answer(post(ingest, b"[" + control + b', {"x": 1}]', content_type="application/json"))
    assert (status, payload) == (400, {"error": "field 'input' is required (or 'output')"})
    assert ledger.rejected == {"invalid": 2} and ledger.received == 0


def test_a_request_without_a_content_type_is_read_as_json():
    ingest, ledger, _ = build()
    response = ingest._post_records(Request("POST", "/v1/records", {}, b'[{"input": 1}, {"input": 2}]'))
    assert answer(response) == (202, {"accepted": 2}) and ledger.received == 2


def test_a_full_buffer_answers_with_the_exact_counts():
    ingest, ledger, store = build(memory=450)
    assert ingest.accept([{"input": "x" * 40}]) == 1
    body = b"\n".join(orjson.dumps({"input": "x" * 40}) for _ in range(3))
    assert answer(post(ingest, body)) == (
        503,
        {"error": "capture buffer is full; records were not kept", "accepted": 0, "dropped": 3},
    )
    status, payload = answer(post(ingest, body, path="/v1/records?partial=1"))
    assert (status, payload) == (503, {"error": "capture buffer is full; records were not kept", "accepted": 0})
    assert ledger.received == 1 and ledger.rejected == {"buffer_full": 6} and len(store.buffer) == 1


def test_a_hook_drop_in_an_answered_call_into_a_full_store_is_received_and_dropped_not_rejected():
    def prepare(record):
        if record["input"] == "hook":
            raise ValueError("no")

    ingest, ledger, _ = build(memory=10, prepare=prepare)
    assert ingest.accept([{"input": "x" * 40}, {"input": "hook"}], answered=True) == 0
    assert ledger.received == 1 and ledger.dropped == {"prepare_error": 1}
    assert ledger.rejected == {"buffer_full": 1}
    assert ingest.accept([{"input": "x" * 40}, {"input": "hook"}]) == 0  # the socket: nobody is told
    assert ledger.received == 3 and ledger.dropped == {"prepare_error": 2, "buffer_full": 1}


def test_a_record_that_cannot_be_stored_is_named_with_its_error_cut_to_120_characters(caplog):
    class Unprintable:
        def __str__(self):
            raise ValueError("no text")

    long_named = type("N" * 200, (Unprintable,), {})
    ingest, ledger, _ = build()
    with pytest.raises(RecordError) as info:
        ingest.accept([{"input": 1}, {"input": long_named()}], whole=True)
    error = "Type is not JSON serializable: " + "N" * 200
    assert str(info.value) == f"record 1: cannot be stored (TypeError: {error[:120]})"
    with caplog.at_level(logging.WARNING, "capture_ext.core.ingest"):
        assert ingest.accept([{"input": long_named()}]) == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"socket record refused: cannot be stored (TypeError: {error[:120]}) (1 refused so far)"
    ]
    assert ledger.rejected == {"invalid": 1} and ledger.received == 0


def test_socket_refusals_are_logged_with_the_reason(caplog):
    ingest, _, _ = build()
    with caplog.at_level(logging.WARNING, "capture_ext.core.ingest"):
        ingest.parse_line(b'"' + b"x" * 1000 + b'"')  # 1002 bytes
        ingest.parse_line(b"[1]")
        ingest.parse_line(b'{"output": 1, "latency_ms": -1}')
    assert [r.getMessage() for r in caplog.records] == [
        "socket record of 1002 bytes is over CAPTURE_MAX_RECORD_BYTES; refused (1 refused so far)",
        "socket record refused: expected a JSON object, got list (2 refused so far)",
        "socket record refused: field 'latency_ms': expected a number >= 0 (3 refused so far)",
    ]


def test_a_socket_line_exactly_at_the_limit_is_read():
    ingest, ledger, _ = build()
    line = b'{"input": "' + b"x" * (1000 - 13) + b'"}'
    assert len(line) == 1000 and ingest.parse_line(line) is not None and not ledger.rejected


def test_an_unexpected_error_on_a_line_is_logged_by_type(monkeypatch, caplog):
    import capture_ext.core.ingest as ingest_module

    def explode(raw):
        raise ZeroDivisionError("secret record contents")

    ingest, _, _ = build()
    monkeypatch.setattr(ingest_module, "normalize", explode)
    with caplog.at_level(logging.WARNING, "capture_ext.core.ingest"):
        ingest.parse_line(b'{"input": 1}')
    assert [r.getMessage() for r in caplog.records] == [
        "socket record refused: could not be read (ZeroDivisionError) (1 refused so far)"
    ]


def test_the_line_protocol_counts_bytes_and_skips_a_line_of_exactly_the_limit_plus_one():
    ingest, ledger, store = build()
    protocol = _LineProtocol(ingest, limit=20)
    protocol.data_received(b'{"input": 1}\n' + b"y" * 20)  # 20 pending: at the limit, kept
    assert ingest.bytes_read == 33 and not protocol.discarding and bytes(protocol.pending) == b"y" * 20
    protocol.data_received(b"y")  # 21: over it
    assert protocol.discarding and ledger.rejected == {"too_large": 1} and protocol.pending == b""
    protocol.data_received(b"y" * 30)  # still the same line: refused once
    assert ledger.rejected == {"too_large": 1} and ingest.bytes_read == 64
    protocol.data_received(b'\n{"input": 2}\n')
    assert [r["input"] for r in store.buffer._records] == [1, 2]
    protocol.eof_received()  # nothing pending: nothing torn
    assert ledger.rejected == {"too_large": 1}


async def settle(condition):
    for _ in range(200):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_the_socket_is_held_while_the_handler_runs_and_read_when_it_is_done(tmp_path):
    ingest, ledger, store = build()
    path = str(tmp_path / "run" / "capture.sock")
    server = await start_socket_server(ingest, path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # this user only
        _, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"input": 1}\n')
        assert await settle(lambda: len(store.buffer) == 1)
        assert ingest.hold() and ingest.held and not ingest.hold()  # held once
        writer.write(b'{"input": 2}\n')
        await writer.drain()
        await asyncio.sleep(0.1)
        assert len(store.buffer) == 1  # left in the kernel while held
        _, late = await asyncio.open_unix_connection(path)  # a connection made while held is held too
        late.write(b'{"input": 3}\n')
        await asyncio.sleep(0.1)
        assert len(store.buffer) == 1
        ingest.release()
        assert not ingest.held and ingest.unread
        assert await settle(lambda: len(store.buffer) == 3)
        assert not ingest.unread and ledger.received == 3
        writer.close()
        late.close()
        assert await settle(lambda: not ingest.connections)
    finally:
        server.close()
        await server.wait_closed()


def test_the_socket_is_not_held_after_an_invoke_that_brought_64_kib():
    ingest, _, _ = build()
    ingest.bytes_read = 64 * 1024 - 1
    assert ingest.hold() and ingest.bytes_read == 0
    ingest.release()
    assert ingest.unread
    ingest.bytes_read = 64 * 1024
    assert not ingest.hold() and not ingest.held and ingest.bytes_read == 0
    assert ingest.hold() and ingest.unread is False  # a new hold: nothing released since
    ingest.release()
    ingest.unread = False
    ingest.release()  # not held: nothing to release
    assert not ingest.unread


async def test_a_health_request_reads_the_held_lines_first(tmp_path):
    counts: list[Ledger] = []
    ingest, ledger, _ = build(health=lambda: {"received": counts[0].received})
    counts.append(ledger)
    path = str(tmp_path / "capture.sock")
    server = await start_socket_server(ingest, path)
    try:
        _, writer = await asyncio.open_unix_connection(path)
        await settle(lambda: bool(ingest.connections))
        ingest.hold()
        writer.write(b'{"input": 1}\n')
        await writer.drain()
        await asyncio.sleep(0.05)
        response = await ingest.handle_http(Request("GET", "/v1/health", {}, b""))
        assert answer(response) == (200, {"received": 1}) and not ingest.held
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("path", ["/v1/records", "/v1/records?partial=1"])
def test_a_record_a_hook_drops_does_not_turn_the_answer_into_a_503(path):
    """Regression (found by mutation testing): a hook dropping one record of a request made the
    answer "503 buffer is full; records were not kept" although the others were kept, so a
    client retrying the request duplicated them, on every retry."""

    def prepare(record):
        if record["input"] == "bad":
            raise ValueError("no")

    ingest, ledger, store = build(prepare=prepare)
    status, payload = answer(post(ingest, b'{"input": "ok"}\n{"input": "bad"}\n{"input": "ok2"}'))
    assert status == 202 and payload["accepted"] == 2
    assert ledger.received == 3 and ledger.dropped == {"prepare_error": 1} and not ledger.rejected
    assert [r["input"] for r in store.buffer._records] == ["ok", "ok2"]


def test_a_partial_line_that_cannot_be_stored_does_not_turn_the_answer_into_a_503():
    """Regression (found by mutation testing): as above, for a line refused alone on ?partial=1."""
    ingest, ledger, store = build()
    deep = b'{"input": ' + b"[" * 300 + b"]" * 300 + b"}"  # read by orjson, too deep to write back
    status, payload = answer(post(ingest, b'{"input": 1}\n' + deep + b'\n{"input": 2}', path="/v1/records?partial=1"))
    assert (status, payload) == (202, {"accepted": 2, "rejected": 1})
    assert ledger.received == 2 and ledger.rejected == {"invalid": 1} and len(store.buffer) == 2


def test_a_new_ingest_holds_nothing_and_has_read_nothing():
    ingest, _, _ = build()
    assert (ingest.held, ingest.unread, ingest.bytes_read, ingest.connections) == (False, False, 0, set())


def test_the_partial_flag_must_be_a_parameter_of_its_own():
    assert not _query_flag("/v1/records?note=why?partial", "partial")


@pytest.mark.parametrize("query", ["partial", "partial=true", "a=b&partial=1"])
def test_every_spelling_of_the_partial_flag_takes_the_partial_path(query):
    ingest, _, _ = build()
    status, payload = answer(post(ingest, b'{"input": 1}\n[1]', path=f"/v1/records?{query}"))
    assert (status, payload) == (202, {"accepted": 1, "rejected": 1})


def test_a_partial_post_counts_only_its_own_refusals_and_control_lines_alone_keep_nothing():
    ingest, ledger, _ = build()
    ledger.rejected["invalid"] = 5  # refused earlier
    assert answer(post(ingest, b'{"input": 1}\n[1]\n[2]', path="/v1/records?partial=1")) == (
        202,
        {"accepted": 1, "rejected": 2},
    )
    control = b'{"_capture_ext": "done", "request_id": "r"}'
    assert answer(post(ingest, control, path="/v1/records?partial=1")) == (202, {"accepted": 0, "rejected": 0})


def test_a_done_line_never_calls_the_start_callback():
    started: list[str] = []
    ingest, _, _ = build(on_handler_started=started.append)
    assert ingest.parse_line(b'{"_capture_ext": "done", "request_id": "r1"}') is None
    assert started == []


def test_records_are_redacted_before_they_are_stored():
    from capture_ext.core.redact import Redactor, parse_rules

    ingest, _, store = build(redactor=Redactor(parse_rules("input.secret")))
    assert ingest.accept([{"input": {"secret": "s3cr3t", "q": 1}}]) == 1
    assert store.buffer._records[0]["input"] == {"secret": "[REDACTED]", "q": 1}


def test_a_value_a_hook_adds_that_json_cannot_hold_is_kept_not_refused(tmp_path):
    """Serialised as its text (the spool line), so a hook may add a Decimal, say."""
    from decimal import Decimal

    from capture_ext.core.spool import Spool

    def prepare(record):
        if record["input"] == "hook":
            raise ValueError("no")
        record["metadata"]["at"] = Decimal("1.50")

    ledger = Ledger()
    budget = MemoryBudget(100_000)
    spool = Spool(str(tmp_path / "spool"), 1_000_000, "never", "env")
    spool.open()
    store = Store(RecordBuffer("env", budget, 100, 100_000), budget, spool, sinks=["a"])
    ingest = Ingest(store, ledger, Enricher("fn", "1", "env"), 100_000, prepare=prepare)
    assert ingest.accept([{"input": 1, "metadata": {}}]) == 1 and not ledger.rejected
    (segment,) = spool.segments
    with open(segment.path, "rb") as handle:
        assert b'"metadata":{"at":"1.50"}' in handle.read()
    size = segment.size
    assert ingest.accept([{"input": "hook"}]) == 0  # nothing to store: nothing written
    assert segment.size == size


def test_a_raising_hook_is_logged_by_exception_type(caplog):
    def prepare(record):
        raise KeyError("secret")

    ingest, ledger, _ = build(prepare=prepare)
    ledger.dropped["prepare_error"] = 1
    ledger.received = 10
    with caplog.at_level(logging.WARNING, "capture_ext.core.ingest"):
        assert ingest.accept([{"input": 1}, {"input": 2}]) == 0
    assert [r.getMessage() for r in caplog.records] == ["capture_prepare_record raised KeyError; record dropped"] * 2
    assert ledger.dropped == {"prepare_error": 3} and ledger.received == 12


def test_the_counts_add_up_across_calls():
    def prepare(record):
        if record["input"] == "hook":
            raise ValueError("no")

    ingest, ledger, _ = build(memory=10, prepare=prepare)
    ledger.received, ledger.rejected["buffer_full"], ledger.dropped["prepare_error"] = 10, 1, 1
    records = [{"input": "x" * 40}, {"input": "hook"}, {"input": "hook"}]
    assert ingest.accept(records, answered=True) == 0
    assert ledger.received == 12 and ledger.rejected == {"buffer_full": 2} and ledger.dropped == {"prepare_error": 3}
    assert ingest.accept([{"input": "hook"}], answered=True) == 0  # nothing reached the store
    assert ledger.received == 13 and ledger.rejected == {"buffer_full": 2}


def test_a_socket_record_that_cannot_be_stored_costs_only_itself():
    class Unprintable:
        def __str__(self):
            raise ValueError("no text")

    ingest, ledger, store = build()
    ledger.rejected["invalid"] = 4
    assert ingest.accept([{"input": Unprintable()}, {"input": 2}]) == 1
    assert ledger.rejected == {"invalid": 5} and [r["input"] for r in store.buffer._records] == [2]


def test_a_whole_request_with_a_record_that_cannot_be_stored_keeps_nothing():
    ingest, ledger, store = build()
    deep = b'{"input": ' + b"[" * 300 + b"]" * 300 + b"}"
    status, payload = answer(post(ingest, b'{"input": 1}\n' + deep))
    assert (status, payload) == (400, {"error": "record 1: cannot be stored (TypeError: Recursion limit reached)"})
    assert len(store.buffer) == 0 and ledger.received == 0 and ledger.rejected == {"invalid": 1}


def test_a_spool_that_is_full_is_named_in_the_503(tmp_path):
    from capture_ext.core.spool import Spool

    ledger = Ledger()
    budget = MemoryBudget(100_000)
    spool = Spool(str(tmp_path / "spool"), 2_000, "never", "env")
    spool.open()
    store = Store(RecordBuffer("env", budget, 100, 100_000), budget, spool, sinks=["a"])
    ingest = Ingest(store, ledger, Enricher("fn", "1", "env"), 100_000)
    big = orjson.dumps({"input": "x" * 3000})
    assert answer(post(ingest, big)) == (
        503,
        {"error": "capture spool is full; records were not kept", "accepted": 0, "dropped": 1},
    )
    assert answer(post(ingest, big, path="/v1/records?partial=1")) == (
        503,
        {"error": "capture spool is full; records were not kept", "accepted": 0},
    )
    assert ledger.rejected == {"spool_full": 2}


async def test_a_health_path_is_what_comes_before_the_first_question_mark():
    ingest, _, _ = build()
    response = await ingest.handle_http(Request("GET", "/v1/health?a=1?b=2", {}, b""))
    assert answer(response) == (200, {"status": "ok"})


def test_refusals_on_the_socket_add_up(monkeypatch):
    import capture_ext.core.ingest as ingest_module

    ingest, ledger, _ = build()
    ledger.rejected.update({"too_large": 3, "invalid": 3, "truncated": 3, "internal_error": 3})
    ingest.parse_line(b'"' + b"x" * 1000 + b'"')
    ingest.parse_line(b"[1]")

    def explode(raw):
        raise ZeroDivisionError

    monkeypatch.setattr(ingest_module, "normalize", explode)
    ingest.parse_line(b'{"input": 1}')
    assert ledger.rejected == {"too_large": 4, "invalid": 5, "truncated": 3, "internal_error": 3}
    monkeypatch.undo()
    protocol = _LineProtocol(ingest, limit=20)
    protocol.data_received(b"y" * 21)
    protocol.data_received(b'\n{"input": 1')
    protocol.eof_received()
    assert ledger.rejected == {"too_large": 5, "invalid": 5, "truncated": 4, "internal_error": 3}


def test_a_core_bug_on_the_socket_is_logged_with_the_count(caplog):
    ingest, ledger, store = build()
    ledger.rejected["internal_error"] = 1

    def broken(items):
        raise RuntimeError("a bug")

    store.add = broken
    protocol = _LineProtocol(ingest, limit=1000)
    with caplog.at_level(logging.ERROR, "capture_ext.core.ingest"):
        protocol.data_received(b'{"input": 1}\n{"input": 2}\n')
    assert ledger.rejected == {"internal_error": 3}
    assert [r.getMessage() for r in caplog.records] == ["socket: 2 records could not be stored"]


async def test_a_socket_line_of_the_limit_is_read_and_a_longer_one_cut_by_eof_is_too_large(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ingest, ledger, store = build()
    server = await start_socket_server(ingest, "capture.sock")  # no directory: the working one
    try:
        assert sorted(os.listdir(tmp_path)) == ["capture.sock"]
        line = b'{"input": "' + b"x" * (1000 - 13) + b'"}'
        _, writer = await asyncio.open_unix_connection("capture.sock")
        writer.write(line)  # the limit exactly, its newline in a later read
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"\n")
        assert await settle(lambda: len(store.buffer) == 1)
        writer.write(b"y" * 1002)  # longer than the limit by two, and the connection ends
        writer.close()
        assert await settle(lambda: not ingest.connections)
        assert ledger.rejected == {"too_large": 1}
    finally:
        server.close()
        await server.wait_closed()


async def test_a_health_request_while_held_waits_on_no_timer():
    """Reading the held lines takes a few turns of the loop, never a sleep: the answer is ready
    after ten turns (a timer of any length would still be pending then)."""
    ingest, _, _ = build()
    assert ingest.hold()
    task = asyncio.ensure_future(ingest.handle_http(Request("GET", "/v1/health", {}, b"")))
    for _ in range(10):
        await asyncio.sleep(0)
    assert task.done() and answer(task.result()) == (200, {"status": "ok"}) and not ingest.held
