"""The emulator against the Lambda protocol: registration rules, identifiers, Runtime API errors.

Each test runs AWS's awslambdaric with a tiny handler and one or more probe extensions (separate
stdlib processes) and checks what the parties saw on the wire.
"""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from tests.e2e.fixtures.emulator_helpers import TASK_ROOT, events, notes, write_probe

pytestmark = pytest.mark.timeout(60)


async def _call(api: str, method: str, path: str, headers: dict[str, str] | None = None, body: object = None):
    async with aiohttp.ClientSession() as s, s.request(method, f"http://{api}{path}", headers=headers, json=body) as r:
        return r.status, await r.json(content_type=None)


async def test_invoke_reaches_handler_and_subscribers_with_lambda_headers(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, {"USER_VAR": "42"}, timeout_s=20)

    result = await emu.invoke({"q": 1}, client_context={"custom": {"k": "v"}})

    assert result.ok, result.raw
    body = result.payload
    assert body["event"] == {"q": 1}
    assert body["request_id"] == result.request_id
    assert body["arn"] == emu.config.function_arn
    assert 0 < body["remaining_ms"] <= 20_000
    assert body["client_context"] == {"k": "v"}
    assert body["env"]["_HANDLER"] == "fn.echo" and body["env"]["USER_VAR"] == "42"
    [invoke] = events(out, "probe", "INVOKE")
    assert invoke["requestId"] == result.request_id
    assert invoke["invokedFunctionArn"] == emu.config.function_arn
    assert invoke["tracing"]["type"] == "X-Amzn-Trace-Id"
    assert abs(invoke["deadlineMs"] - notes(out, "probe", "event")[0]["at"] * 1000 - 20_000) < 5_000  # epoch ms
    assert notes(out, "probe", "event")[0]["event_id"]
    registered = notes(out, "probe", "registered")[0]
    assert registered["status"] == 200
    assert registered["body"] == {"functionName": "capture-fn", "functionVersion": "$LATEST",
                                  "handler": "fn.echo", "accountId": "123456789012"}  # fmt: skip


async def test_extension_environment_is_filtered(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, {"USER_VAR": "42", "_PRIVATE": "x"})
    result = await emu.invoke({})

    env = notes(out, "probe", "started")[0]["env"]
    for dropped in ("_HANDLER", "LAMBDA_TASK_ROOT", "AWS_EXECUTION_ENV", "AWS_LAMBDA_LOG_GROUP_NAME", "_PRIVATE"):
        assert dropped not in env
    assert env["USER_VAR"] == "42"
    assert env["AWS_LAMBDA_RUNTIME_API"] == emu.runtime_api
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "capture-fn"
    assert result.payload["env"]["LAMBDA_TASK_ROOT"] == str(TASK_ROOT)  # the runtime keeps them


async def test_runtime_starts_only_after_every_extension_registered(lambda_emulator, tmp_path):
    out, ext, marks = tmp_path / "out", tmp_path / "ext", tmp_path / "marks"
    marks.mkdir()
    write_probe(ext, "b-slow", out, register_delay_ms=400)
    write_probe(ext, "a-fast", out)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, {"FN_MARK_DIR": str(marks)})
    await emu.init()

    imported_at = __import__("json").loads((marks / "fn-imported.json").read_text())["at"]
    for name in ("a-fast", "b-slow"):
        assert notes(out, name, "registered")[0]["at"] < imported_at
    launched = [p.name for p in emu.sandbox.procs.processes]
    assert launched == ["a-fast", "b-slow", "runtime"]  # name order, runtime last


async def test_identifier_errors_and_registration_after_init(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    await emu.init()
    api, nxt = emu.runtime_api, "/2020-01-01/extension/event/next"

    missing = {"errorType": "Extension.MissingExtensionIdentifier",
               "errorMessage": "Lambda-Extension-Identifier header is missing"}  # fmt: skip
    assert await _call(api, "GET", nxt) == (403, missing)
    status, body = await _call(api, "GET", nxt, {"Lambda-Extension-Identifier": "not-a-uuid"})
    assert (status, body["errorType"]) == (403, "Extension.InvalidExtensionIdentifier")
    status, body = await _call(api, "GET", nxt, {"Lambda-Extension-Identifier": str(uuid.uuid4())})
    assert (status, body["errorType"]) == (403, "Extension.UnknownExtensionIdentifier")
    status, body = await _call(api, "POST", "/2020-01-01/extension/register", {"Lambda-Extension-Name": "late"},
                               {"events": ["INVOKE"]})  # fmt: skip
    assert (status, body["errorType"]) == (403, "Extension.RegistrationClosed")
    ident = notes(out, "probe", "registered")[0]["identifier"]
    sub = {"schemaVersion": "2022-07-01", "types": ["platform"],
           "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243"}}  # fmt: skip
    status, body = await _call(api, "PUT", "/2022-07-01/telemetry", {"Lambda-Extension-Identifier": ident}, sub)
    assert (status, body["errorType"]) == (403, "Telemetry.SubscriptionClosed")
    assert (await emu.invoke({})).ok  # none of this disturbed the environment


async def test_internal_extension_gets_invokes_but_no_shutdown(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    also = [{"name": "sidecar", "events": ["INVOKE"]}, {"name": "greedy", "events": ["INVOKE", "SHUTDOWN"]}]
    write_probe(ext, "probe", out, also_register=also)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    result = await emu.invoke({})
    report = await emu.shutdown()

    extra = {n["name"]: n for n in notes(out, "probe", "also_registered")}
    assert extra["sidecar"]["status"] == 200
    assert (extra["greedy"]["status"], extra["greedy"]["body"]["errorType"]) == (403, "Extension.InvalidEventType")
    sidecar = [n["event"] for n in notes(out, "probe", "event") if n["agent"] == "sidecar" and n["status"] == 200]
    assert [e["eventType"] for e in sidecar] == ["INVOKE"] and sidecar[0]["requestId"] == result.request_id
    assert report is not None and report.notified == ("probe",)
    assert [e["eventType"] for e in events(out, "probe")] == ["INVOKE", "SHUTDOWN"]


async def test_too_many_extensions_and_duplicate_names(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    also = [{"name": f"x{i}", "events": ["INVOKE"]} for i in range(10)] + [{"name": "x0", "events": []}]
    write_probe(ext, "probe", out, also_register=also)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    assert (await emu.invoke({})).ok

    statuses = [
        (n["name"], n["status"], (n["body"] or {}).get("errorType")) for n in notes(out, "probe", "also_registered")
    ]
    assert statuses[:9] == [(f"x{i}", 200, None) for i in range(9)]
    assert statuses[9] == ("x9", 403, "Extension.TooManyExtensions")
    assert statuses[10] == ("x0", 403, "Extension.InvalidExtensionState")


async def test_extension_init_error_fails_init_and_next_invoke_retries(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, init_error=True)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)

    result = await emu.invoke({})

    assert (result.status, result.error_type) == ("failure", "Extension.ConfigInvalid")
    assert notes(out, "probe", "init_error_no_header")[0]["body"]["errorType"] == "Extension.MissingHeader"
    assert notes(out, "probe", "init_error")[0]["status"] == 202
    after = notes(out, "probe", "after_init_error")[0]
    assert (after["status"], after["body"]["errorType"]) == (403, "Extension.InvalidExtensionState")
    assert emu.resets[0].reason == "failure"
    await emu.invoke({})  # init is retried on the next invoke, and fails the same way
    assert len(notes(out, "probe", "registered")) == 2


async def test_runtime_init_error_reaches_the_caller(lambda_emulator, tmp_path):
    emu = await lambda_emulator("broken.handler", TASK_ROOT, None)
    result = await emu.invoke({})
    assert result.status == "failure"
    assert result.error_type == "Runtime.ImportModuleError"
    assert "model_weights_that_are_not_installed" in result.payload["errorMessage"]
    done = [e["record"] for e in emu.events("platform.initRuntimeDone")]
    assert done and done[0]["status"] == "error"


async def test_runtime_api_rejects_wrong_request_id_and_oversize_response(lambda_emulator, tmp_path):
    emu = await lambda_emulator("fn.huge", TASK_ROOT, None)
    await emu.init()
    status, body = await _call(emu.runtime_api, "POST", f"/2018-06-01/runtime/invocation/{uuid.uuid4()}/response",
                               None, {"x": 1})  # fmt: skip
    assert (status, body["errorType"]) == (400, "InvalidRequestID")

    result = await emu.invoke({})

    assert (result.status, result.error_type) == ("error", "Function.ResponseSizeTooLarge")
    assert "exceeded maximum allowed payload size" in result.payload["errorMessage"]


async def test_handler_exception_is_an_error_not_a_reset(lambda_emulator, tmp_path):
    emu = await lambda_emulator("fn.fail", TASK_ROOT, None)
    first = await emu.invoke({})
    second = await emu.invoke({})
    assert (first.status, first.error_type) == ("error", "ValueError")
    assert first.payload["errorMessage"] == "boom from the handler"
    assert second.status == "error" and second.init_ms is None  # same environment, no re-init
    assert emu.resets == []
    assert [e["record"]["status"] for e in emu.events("platform.runtimeDone")] == ["error", "error"]
