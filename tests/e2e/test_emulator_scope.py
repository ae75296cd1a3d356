"""The emulator never leaves a process behind, and hostile input never crashes it.

Processes are found by the scope every sandbox process carries in its environment
(``LOCAL_LAMBDA_SCOPE``), which also reaches descendants that ``setsid`` out of their group.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from capture_ext.emulator.apigw import INVOKE_PATH
from capture_ext.emulator.model import SandboxFailure
from capture_ext.emulator.processes import KEPT_LINES, MAX_LINE_BYTES, ProcessSet
from capture_ext.emulator.scope import SCOPE_VAR
from tests.e2e.fixtures.emulator_helpers import TASK_ROOT, notes, write_probe

pytestmark = pytest.mark.timeout(90)

HANDLER = """
import subprocess, sys, time

def handler(event, context):
    action = event.get("action")
    if action == "setsid":  # a daemon that leaves the process group and keeps stdout open
        subprocess.Popen(["setsid", "sleep", "300"])
    elif action == "long":
        print("y" * event["n"], flush=True)
        print("after the long line", flush=True)
    elif action == "sleep":
        time.sleep(event["s"])
    return {"ok": action}
"""


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    root = tmp_path / "task"
    root.mkdir()
    (root / "hostile_fn.py").write_text(HANDLER)
    return root


def scope_members(prefix: str) -> dict[int, str]:
    """PID -> state letter of every process whose scope starts with ``prefix``."""
    found = {}
    wanted = f"{SCOPE_VAR}={prefix}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if any(item.startswith(wanted) for item in environ.split(b"\0")):
            found[int(entry)] = stat.rpartition(")")[2].split()[0]
    return found


async def gone(prefix: str, within_s: float = 15.0) -> dict[int, str]:
    """Wait for the scope to empty; what is still there at the end (zombies aside)."""
    end = time.monotonic() + within_s
    while True:
        left = {pid: state for pid, state in scope_members(prefix).items() if state != "Z"}
        if not left or time.monotonic() > end:
            return left
        await asyncio.sleep(0.1)


async def test_malformed_register_and_subscribe_bodies_are_4xx_not_500(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    good = {"schemaVersion": "2022-07-01", "types": ["platform"],
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/x"}}  # fmt: skip
    bad = [{**good, "schemaVersion": []}, {**good, "schemaVersion": {}}, {**good, "types": [["platform"]]}]
    also = [{"name": "nested", "events": [["INVOKE"]]}, {"name": "objects", "events": [{"e": 1}]}]
    write_probe(ext, "probe", out, subscribe="telemetry", bad_subscriptions=bad, also_register=also)
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext)
    await emu.init()
    answers = notes(out, "probe", "bad_subscription")
    assert [(a["status"], a["body"]["errorType"]) for a in answers] == [(400, "ValidationError")] * len(bad), answers
    registered = notes(out, "probe", "also_registered")
    assert [r["status"] for r in registered] == [403, 403], registered
    assert all("events must be a list of strings" in r["body"]["errorMessage"] for r in registered), registered


async def test_long_function_lines_are_split_not_cut(lambda_emulator, task_root):
    emu = await lambda_emulator("hostile_fn.handler", task_root)
    n = 3 * MAX_LINE_BYTES + 123
    result = await emu.invoke({"action": "long", "n": n})
    assert result.ok
    lines = emu.logs("runtime")
    pieces = [line for line in lines if line and set(line) == {"y"}]
    assert "".join(pieces) == "y" * n, [len(p) for p in pieces]
    assert max(len(p) for p in pieces) <= MAX_LINE_BYTES
    assert "after the long line" in lines


async def test_the_lines_kept_per_process_are_bounded():
    seen: list[str] = []
    procs = ProcessSet(lambda _child, _stream, line: seen.append(line), lambda _child: None)
    code = f"for i in range({KEPT_LINES + 500}): print(i)"
    child = await procs.start("chatty", "runtime", [sys.executable, "-c", code], dict(os.environ))
    assert await child.wait(30)
    assert len(seen) == KEPT_LINES + 500  # every line is passed on ...
    assert len(child.lines) == KEPT_LINES and child.lines[-1] == str(KEPT_LINES + 499)  # ... the newest kept


async def test_init_timeout_names_the_extension_that_never_registered(lambda_emulator, tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "latecomer", out, register_delay_ms=5_000)
    # Lambda retries a timed-out init under the function timeout: both end before it registers.
    emu = await lambda_emulator("fn.echo", TASK_ROOT, ext, init_timeout_s=1.0, timeout_s=1.0)
    with pytest.raises(SandboxFailure) as failure:
        await emu.init()
    assert "extension latecomer never registered" in failure.value.message, failure.value.message


async def test_a_setsid_child_of_the_handler_neither_holds_shutdown_nor_survives_it(lambda_emulator, task_root):
    emu = await lambda_emulator("hostile_fn.handler", task_root)
    result = await emu.invoke({"action": "setsid"})
    assert result.ok
    box = emu.sandbox
    assert box is not None
    scope = box.procs.scope
    assert any(state for state in scope_members(scope).values()), "the test needs the setsid child"
    report = await emu.shutdown()
    assert report is not None and "runtime" not in report.killed, report
    assert await gone(scope) == {}


async def _start_cli(task_root: Path, ext: Path | None = None) -> tuple[asyncio.subprocess.Process, str]:
    argv = [sys.executable, "-m", "capture_ext.emulator", "--handler", "hostile_fn.handler",
            "--task-root", str(task_root), "--timeout", "30"]  # fmt: skip
    if ext is not None:
        argv += ["--extensions-dir", str(ext)]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    printed: list[str] = []
    while not printed or not printed[-1].startswith("Ctrl-C"):
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "the CLI exited before serving: " + "".join(printed)
        printed.append(line.strip())
    url = re.search(r"POST (http://127\.0\.0\.1:\d+)/", "\n".join(printed))
    assert url, printed
    return proc, url.group(1)


async def _invoke(url: str, event: dict[str, object]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}{INVOKE_PATH}", json=event) as response:
        return response.status, await response.text()


async def test_sigkill_of_the_cli_leaves_no_process_stopped_or_orphaned(tmp_path, task_root):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    proc, url = await _start_cli(task_root, ext)
    prefix = f"{proc.pid}."
    try:
        status, body = await _invoke(url, {"action": "setsid"})
        assert status == 200, body
        await asyncio.sleep(0.5)  # the sandbox is frozen after the invoke
        members = scope_members(prefix)
        assert len(members) >= 3 and "T" in members.values(), members  # probe, runtime, the setsid child
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert await gone(prefix) == {}


async def test_sigint_during_a_long_invoke_exits_promptly_and_a_second_at_once(tmp_path, task_root):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out, on_shutdown="hang")  # SHUTDOWN then takes the whole budget
    for presses in (1, 2):
        proc, url = await _start_cli(task_root, ext)
        prefix = f"{proc.pid}."
        try:
            invoke = asyncio.create_task(_invoke(url, {"action": "sleep", "s": 20}))
            await asyncio.sleep(1.0)  # the handler is sleeping now
            proc.send_signal(signal.SIGINT)
            if presses == 2:
                await asyncio.sleep(0.3)  # the SHUTDOWN is under way, waiting for the hung probe
                proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), 12)  # the invoke alone would take 20 s
            assert proc.stderr is not None
            err = (await proc.stderr.read()).decode()
            status, body = await asyncio.wait_for(invoke, 5) if presses == 1 else (0, "")
        finally:
            invoke.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert "shutting down" in err, err
        if presses == 1:
            assert code == 0, err
            assert "Sandbox.Interrupted" in body, (status, body)  # answered as a function error, at once
        else:
            assert code == 130 and "second interrupt" in err, err
        assert await gone(prefix) == {}
