"""The Extensions and Telemetry API clients against refusals, over real HTTP (issue 21's branch gaps).

The happy path runs in every functional and integration test; here the platform says no: a second
registration, an unknown identifier, an error report it refuses, a telemetry subscription it
refuses or does not support, and an API that hangs up mid-answer.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from capture_ext.core import lambda_api
from capture_ext.core.lambda_api import Event, ExtensionsAPI, LambdaAPIError
from capture_ext.core.registration import Registration, register_blocking, split_address
from tests.fakes.lambda_api import FakeLambdaAPI


@pytest.fixture
async def platform():
    api = FakeLambdaAPI(telemetry=True)
    address = await api.start()
    yield api, address
    await api.stop()


async def _register(address: str) -> ExtensionsAPI:
    registration = await asyncio.to_thread(register_blocking, address, "capture-ext")
    return ExtensionsAPI(address, registration.extension_id)


async def test_register_blocking_speaks_the_same_protocol_and_raises_the_same_error(platform) -> None:
    fake, address = platform
    registration = await asyncio.to_thread(register_blocking, address, "capture-ext")
    assert registration == Registration(fake.extension_id, "test-function", "$LATEST", "app.handler")
    assert fake.extension_name == "capture-ext"
    with pytest.raises(LambdaAPIError, match=r"register failed with HTTP 403: .*InvalidExtensionState") as info:
        await asyncio.to_thread(register_blocking, address, "again")
    assert info.value.status == 403


@pytest.mark.parametrize("address", ["localhost", "localhost:", ":9001", "host:port"])
def test_a_runtime_api_address_that_is_not_host_port_is_named(address: str) -> None:
    with pytest.raises(ValueError, match=f"AWS_LAMBDA_RUNTIME_API={address!r} is not host:port"):
        split_address(address)


def test_an_empty_registration_body_gives_empty_fields() -> None:
    assert Registration.parse("id-1", b"") == Registration("id-1", "", "", "")


async def test_next_with_an_identifier_the_platform_does_not_know_is_an_error(platform) -> None:
    _, address = platform
    await _register(address)
    api = ExtensionsAPI(address, "not-ours")
    try:
        with pytest.raises(LambdaAPIError, match=r"event/next failed with HTTP 403: .*unknown identifier not-ours"):
            await api.next_event()
    finally:
        api.close()


async def test_error_reports_reach_the_platform_and_a_refused_one_is_logged(platform, caplog) -> None:
    fake, address = platform
    await ExtensionsAPI(address, "").report_error("init", "Extension.ConfigError", "no identifier")
    assert fake.init_errors == []
    assert "init/error answered HTTP 403" in caplog.text and "MissingExtensionIdentifier" in caplog.text
    api = await _register(address)
    await api.report_error("exit", "Extension.Crash", "it broke")
    body = {"errorMessage": "it broke", "errorType": "Extension.Crash", "stackTrace": []}
    assert fake.exit_errors == [{"type": "Extension.Crash", "body": body}]


async def test_a_telemetry_subscription_is_accepted_unsupported_or_refused(caplog) -> None:
    caplog.set_level(logging.INFO, logger=lambda_api.__name__)
    for telemetry, register, expected, said in [
        (True, True, True, ""),
        (False, True, False, "Telemetry API not supported here"),
        (True, False, False, "telemetry subscription refused (HTTP 403"),
    ]:
        fake = FakeLambdaAPI(telemetry=telemetry)
        address = await fake.start()
        try:
            api = await _register(address) if register else ExtensionsAPI(address, "")
            caplog.clear()
            assert await api.subscribe_telemetry(4243, "/t") is expected
            if said:
                assert said in caplog.text
            else:
                assert fake.telemetry_uri == "http://sandbox.localdomain:4243/t"
        finally:
            await fake.stop()


async def test_an_api_that_hangs_up_mid_answer_is_an_oserror_the_caller_handles() -> None:
    """Regression (found by the coverage work): h11's and http.client's own exceptions escaped the
    ``except (LambdaAPIError, OSError)`` around registration and the API calls."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)  # all of it: no reset on close
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(OSError, match="malformed HTTP response"):
            await ExtensionsAPI(address, "ext-1").subscribe_telemetry(4243)
        with pytest.raises(OSError, match="malformed answer to register: IncompleteRead"):
            await asyncio.to_thread(register_blocking, address, "capture-ext")
    finally:
        server.close()


def test_events_parse_with_or_without_their_optional_fields() -> None:
    invoke = Event.parse(
        b'{"eventType":"INVOKE","deadlineMs":1700,"requestId":"r1",'
        b'"tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-a"}}'
    )
    assert invoke == Event("INVOKE", 1700, "r1", "", "Root=1-a")
    shutdown = Event.parse(b'{"eventType":"SHUTDOWN","deadlineMs":null,"shutdownReason":"spindown","tracing":[]}')
    assert shutdown == Event("SHUTDOWN", 0, "", "spindown", "")
