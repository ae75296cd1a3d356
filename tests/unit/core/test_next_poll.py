"""Reading ``/event/next`` responses without an HTTP library: every framing a server may choose."""

import pytest

from capture_ext.core.next_poll import NextProtocolError, parse_response

BODY = b'{"eventType":"INVOKE","deadlineMs":1,"requestId":"r"}'


def test_a_content_length_response_is_read_whole_and_keeps_the_connection():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    assert parse_response(bytearray(raw)) == (200, BODY, True, len(raw))


def test_a_partial_response_waits_for_more_bytes_at_every_cut():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    for cut in range(len(raw)):
        assert parse_response(bytearray(raw[:cut])) is None
    with pytest.raises(NextProtocolError):
        parse_response(bytearray(raw[:-1]), eof=True)


def test_bytes_after_the_response_are_left_for_the_next_one():
    raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1"
    assert parse_response(bytearray(raw)) == (200, b"{}", True, len(raw) - len(b"HTTP/1.1"))


def _keep_alive(raw: bytes) -> bool:
    parsed = parse_response(bytearray(raw))
    assert parsed is not None
    return parsed[2]


def test_connection_close_and_http_1_0_end_the_connection():
    assert _keep_alive(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}") is False
    assert _keep_alive(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}") is False
    assert _keep_alive(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}") is True


def test_a_chunked_body_is_reassembled_with_extensions_and_trailers():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n" + BODY[:5] + b"\r\n"
    raw += b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n0\r\n"
    assert parse_response(bytearray(raw)) is None  # the last CRLF (or a trailer) is still to come
    assert parse_response(bytearray(raw + b"\r\n")) == (200, BODY, True, len(raw) + 2)
    with_trailer = raw + b"X-Trailer: 1\r\n\r\n"
    assert parse_response(bytearray(with_trailer)) == (200, BODY, True, len(with_trailer))


def test_a_body_without_length_ends_with_the_connection():
    raw = b"HTTP/1.1 200 OK\r\n\r\n" + BODY
    assert parse_response(bytearray(raw)) is None
    assert parse_response(bytearray(raw), eof=True) == (200, BODY, False, len(raw))


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"x" * 70000])
def test_what_is_not_an_http_response_is_refused_with_a_clear_error(raw):
    with pytest.raises(NextProtocolError):
        parse_response(bytearray(raw))
