"""Telemetry API delivery as a subscriber sees it: order, timing relative to the invoke, stub mode,
the Logs API, validation, and the slow/absent consumer knobs."""

from __future__ import annotations

import asyncio

import pytest

from capture_ext.emulator import Faults, TelemetryFaults
from tests.e2e.fixtures.emulator_helpers import TASK_ROOT, notes, telemetry, write_probe

pytestmark = pytest.mark.timeout(60)


def _platform(events: list[dict]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["record"].get("requestId")) for e in events if e["type"].startswith("platform.")]


async def test_platform_events_arrive_in_lambda_order_while_the_invoke_is_open(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, subscribe="telemetry", wait_runtime_done=True)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)

    first = await emu.invoke({"n": 1})
    second = await emu.invoke({"n": 2})
    await emu.shutdown()

    got = _platform(telemetry(out, "probe"))
    r1, r2 = first.request_id, second.request_id
    expected = [
        ("platform.initStart", None),
        ("platform.telemetrySubscription", None),
        ("platform.extension", None),
        ("platform.initRuntimeDone", None),
        ("platform.initReport", None),
        ("platform.start", r1),
        ("platform.runtimeDone", r1),
        ("platform.report", r1),  # only after invoke 1's phase ended: delivered during invoke 2
        ("platform.start", r2),
        ("platform.runtimeDone", r2),
    ]
    assert got[: len(expected)] == expected
    assert got[len(expected) :] in ([], [("platform.report", r2)])  # the last report races SHUTDOWN
    seen = notes(out, "probe", "runtime_done_seen")
    assert [(n["requestId"], n["ok"]) for n in seen] == [(r1, True), (r2, True)]
    report = next(e for e in telemetry(out, "probe") if e["type"] == "platform.report")["record"]
    assert report["metrics"]["initDurationMs"] > 0 and report["metrics"]["billedDurationMs"] >= 1
    assert {n["path"] for n in notes(out, "probe", "telemetry")} == {"/telemetry"}
    assert first.post_runtime_ms is not None and first.post_runtime_ms > 0


async def test_stub_mode_answers_like_rie_and_delivers_nothing(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, subscribe="telemetry")
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, telemetry="stub")

    result = await emu.invoke({})
    await emu.shutdown()

    [sub] = notes(out, "probe", "subscribed")
    assert sub["status"] == 202
    assert sub["body"] == {"errorMessage": "Telemetry API is not supported", "errorType": "Telemetry.NotSupported"}
    assert result.ok
    assert telemetry(out, "probe") == [] and emu.deliveries == []


async def test_logs_api_delivers_its_own_shapes_and_excludes_the_telemetry_api(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, subscribe="logs", wait_runtime_done=True)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    result = await emu.invoke({})
    await emu.shutdown()

    [sub] = notes(out, "probe", "subscribed")
    assert (sub["status"], sub["body"]) == (200, "OK")
    [other] = notes(out, "probe", "second_api")
    assert (other["status"], other["body"]["errorType"]) == (400, "ValidationError")
    types = [t for t, _ in _platform(telemetry(out, "probe"))]
    assert "platform.initStart" not in types and "platform.logsSubscription" in types
    rid = result.request_id
    assert _platform(telemetry(out, "probe"))[-3:-1] == [("platform.runtimeDone", rid), ("platform.end", rid)] or (
        _platform(telemetry(out, "probe"))[-2:] == [("platform.runtimeDone", rid), ("platform.end", rid)]
    )


async def test_invalid_subscriptions_are_400_validation_errors(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    good = {"schemaVersion": "2022-07-01", "types": ["platform"],
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/x"}}  # fmt: skip
    bad = [
        {**good, "schemaVersion": "2019-01-01"},
        {**good, "types": ["bogus"]},
        {**good, "destination": {"protocol": "HTTP", "URI": "http://example.com:4243/"}},
        {**good, "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:9001/"}},
        {**good, "buffering": {"timeoutMs": 10}},
        {**good, "buffering": {"maxItems": 20_000}},
    ]
    write_probe(ext, "probe", out, subscribe="telemetry", bad_subscriptions=bad)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    await emu.init()

    answers = notes(out, "probe", "bad_subscription")
    assert len(answers) == len(bad)
    assert {(a["status"], a["body"]["errorType"]) for a in answers} == {(400, "ValidationError")}
    assert notes(out, "probe", "subscribed")[0]["status"] == 200


async def test_absent_consumer_knob_never_delivers_runtime_done(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, subscribe="telemetry", wait_runtime_done=True, runtime_done_timeout_s=0.3)
    faults = Faults(telemetry=TelemetryFaults(blackhole=True))
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, faults=faults)
    result = await emu.invoke({})
    assert result.ok and result.phase_ms >= 300  # the probe waited its 0.3 s in vain
    assert [n["ok"] for n in notes(out, "probe", "runtime_done_seen")] == [False]
    assert telemetry(out, "probe") == []


async def test_slow_delivery_knob_delays_runtime_done(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, subscribe="telemetry", wait_runtime_done=True)
    faults = Faults(telemetry=TelemetryFaults(delay_ms=250))
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, faults=faults)
    result = await emu.invoke({})
    assert [n["ok"] for n in notes(out, "probe", "runtime_done_seen")] == [True]
    assert result.post_runtime_ms is not None and result.post_runtime_ms >= 250


async def test_slow_consumer_loses_records_reported_as_logs_dropped(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, subscribe="telemetry", types=["platform", "function"], listener_delay_ms=300)
    emu = await lambda_emulator("fn.chatty", TASK_ROOT, ext, freeze=False)
    result = await emu.invoke({"lines": 6000})
    assert result.ok
    for _ in range(300):  # not frozen: delivery goes on, and the next batch reports the loss
        if any(e["type"] == "platform.logsDropped" for e in telemetry(out, "probe")):
            break
        await asyncio.sleep(0.01)
    await emu.shutdown()

    dropped = emu.events("platform.logsDropped")
    assert dropped and dropped[0]["record"]["droppedRecords"] > 0
    assert dropped[0] in telemetry(out, "probe")
    lines = [e for e in telemetry(out, "probe") if e["type"] == "function"]
    assert 0 < len(lines) < 6000
