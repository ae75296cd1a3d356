"""The emulator's lifecycle: early response, freeze, timeouts, crashes, resets, the SHUTDOWN budget."""

from __future__ import annotations

import asyncio
import time

import pytest

from capture_ext.emulator import Faults
from tests.e2e.fixtures.emulator_helpers import TASK_ROOT, events, notes, write_probe

pytestmark = pytest.mark.timeout(60)


async def test_response_returns_before_extensions_finish_and_post_runtime_is_measured(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, post_runtime_ms=400)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    await emu.init()

    pending = emu.start_invoke({"n": 1})
    reply = await pending.response()
    still_running = not pending.done()
    result = await pending.result()

    assert reply.status == "success" and still_running
    assert result.ok and result.payload["event"] == {"n": 1}
    # The probe's 400 ms start at INVOKE, so they bound the whole phase; the part after the
    # response is the post-runtime time.
    assert result.phase_ms >= 400
    assert result.post_runtime_ms is not None and result.post_runtime_ms > 0
    assert result.post_runtime_ms == pytest.approx(result.phase_ms - result.duration_ms)


async def test_freeze_stops_background_threads_between_invokes(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, ticker=True, post_runtime_ms=50)  # each invoke stays open 50 ms
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, freeze=True)
    ticks = out / "probe.ticks"

    await emu.invoke({})
    await asyncio.sleep(0.05)  # SIGSTOP is asynchronous: let a write already under way land
    frozen_at = ticks.read_text()
    await asyncio.sleep(0.3)
    assert ticks.read_text() == frozen_at  # nothing ran while frozen
    await emu.invoke({})  # the ticker runs during the invoke, then freezes again
    assert int(ticks.read_text()) > int(frozen_at)


async def test_without_freeze_background_threads_keep_running(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, ticker=True)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, freeze=False)
    ticks = out / "probe.ticks"
    await emu.invoke({})
    before = int(ticks.read_text())
    await asyncio.sleep(0.3)
    assert int(ticks.read_text()) > before


async def test_timeout_resets_with_reason_timeout_and_reinits(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    emu = await lambda_emulator("fn.sleepy", TASK_ROOT, ext, timeout_s=0.5)

    result = await emu.invoke({"sleep_s": 5})

    assert (result.status, result.error_type, result.reset_reason) == ("timeout", "Sandbox.Timedout", "timeout")
    assert "Task timed out after 0.50 seconds" in result.payload["errorMessage"]
    assert [e["shutdownReason"] for e in events(out, "probe", "SHUTDOWN")] == ["timeout"]
    after = await emu.invoke({"sleep_s": 0})
    assert after.ok and after.init_ms is not None  # a fresh environment
    assert len(notes(out, "probe", "registered")) == 2


async def test_runtime_crash_resets_with_reason_failure(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    emu = await lambda_emulator("fn.crash", TASK_ROOT, ext)

    result = await emu.invoke({})

    assert (result.status, result.error_type, result.reset_reason) == ("failure", "Runtime.ExitError", "failure")
    assert [e["shutdownReason"] for e in events(out, "probe", "SHUTDOWN")] == ["failure"]
    runtime_done = emu.events("platform.runtimeDone")[-1]["record"]
    assert runtime_done["status"] == "failure"


@pytest.mark.parametrize("moment", ["response", "frozen", "invoke"])
async def test_killing_an_extension_resets_and_the_function_keeps_answering(lambda_emulator, tmp_path, moment):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "a-victim", out, post_runtime_ms=300)  # still busy when the runtime responds
    write_probe(ext, "b-witness", out)
    faults = Faults(kill_extension="a-victim", kill_at=moment, kill_on_invoke=1)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, faults=faults)

    first = await emu.invoke({"n": 1})
    if moment == "frozen":
        assert first.ok and first.reset_reason is None
        for _ in range(200):  # the reset happens in the background while frozen
            if emu.resets:
                break
            await asyncio.sleep(0.01)
    second = await emu.invoke({"n": 2})

    assert [r.reason for r in emu.resets] == ["failure"]
    assert second.ok and second.payload["event"] == {"n": 2} and second.init_ms is not None
    assert [e["shutdownReason"] for e in events(out, "b-witness", "SHUTDOWN")] == ["failure"]
    assert len(notes(out, "a-victim", "registered")) == 2  # started again on re-init
    if moment == "response":
        assert first.ok and first.reset_reason == "failure"  # the caller had its answer already
    if moment == "invoke":
        assert first.reset_reason == "failure"


async def test_exit_error_then_exit_resets(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, exit_error_on_invoke=True)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    result = await emu.invoke({})
    assert notes(out, "probe", "exit_error")[0]["status"] == 202
    assert result.reset_reason == "failure"
    assert emu.resets[0].reason == "failure"


async def test_shutdown_sigterms_runtime_then_sends_deadline_then_sigkills(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "a-polite", out, on_shutdown="slow:100")
    write_probe(ext, "b-stuck", out, on_shutdown="hang")
    write_probe(ext, "c-invoke-only", out, events=["INVOKE"])
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, shutdown_budget_ms=600)
    assert (await emu.invoke({})).ok

    started = time.time()
    report = await emu.shutdown()

    assert report is not None and report.reason == "spindown"
    assert report.exit_codes["runtime"] == -15  # SIGTERM, first
    assert report.exit_codes["a-polite"] == 0
    assert report.exit_codes["b-stuck"] == -9 and report.exit_codes["c-invoke-only"] == -9
    assert set(report.killed) == {"b-stuck", "c-invoke-only"}
    assert set(report.notified) == {"a-polite", "b-stuck"}
    [shutdown] = events(out, "a-polite", "SHUTDOWN")
    assert shutdown["shutdownReason"] == "spindown"
    assert started * 1000 + 599 <= shutdown["deadlineMs"] <= started * 1000 + 600 + 400  # epoch ms, 600 ms budget
    assert events(out, "c-invoke-only", "SHUTDOWN") == []


async def test_runtime_ignoring_sigterm_is_sigkilled(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, {"FN_IGNORE_SIGTERM": "1"})
    assert (await emu.invoke({})).ok
    report = await emu.shutdown()
    assert report is not None and "runtime" in report.killed and report.exit_codes["runtime"] == -9
    assert report.exit_codes["probe"] == 0


async def test_init_over_its_limit_is_retried_once_under_the_function_timeout(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, register_delay_ms=800)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, init_timeout_s=0.3, timeout_s=10)

    result = await emu.invoke({"n": 1})

    assert result.ok and result.payload["event"] == {"n": 1}
    assert [e["record"]["phase"] for e in emu.events("platform.initStart")] == ["init", "invoke"]
    assert [r.reason for r in emu.resets] == ["timeout"]
    # Two environments each launched the probe; the first may be killed before its Python even
    # starts on a loaded machine, so count launches, not the probe's own notes.
    assert [sorted(box.launched) for box in emu.environments] == [["probe"], ["probe"]]
    assert len(notes(out, "probe", "registered")) == 1  # only the retry lived long enough to register
