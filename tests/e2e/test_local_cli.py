"""``capture-ext local`` as a new user meets it: bad values are one line and exit 2, ports and
capture-ext's socket are picked free and printed, and the frozen extension's health can be read."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from capture_ext.cli import main as capture_ext_main
from tests.e2e.fixtures.emulator_helpers import TASK_ROOT
from tests.e2e.fixtures.full_stack import REPO, install_extension

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--log-level", "LOUD"], "--log-level"),
        (["--port", "99999"], "--port"),
        (["--runtime-api-port", "-1"], "--runtime-api-port"),
        (["--task-root", "/nonexistent"], "--task-root"),
        (["--extensions-dir", "/nonexistent"], "--extensions-dir"),
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "soon"], "--timeout"),
        (["--concurrency", "0"], "--concurrency"),
        (["--handler", "nodot"], "--handler"),
        (["--route", "nlp-qa"], "--route"),
        (["--rie", "--concurrency", "2"], "--rie"),
        (["--env", "NOEQUALS"], "--env"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(args: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["local", "--task-root", str(TASK_ROOT), "--handler", "fn.echo", *args]
    try:
        code = capture_ext_main(argv)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert named in err and err.startswith("capture-ext local: error:"), err


def test_a_busy_port_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for option in ("--port", "--runtime-api-port"):
            code = capture_ext_main(["local", "--task-root", str(TASK_ROOT), "--handler", "fn.echo", option, str(port)])
            err = capsys.readouterr().err
            assert code == 2, err
            assert err.strip() == (
                f"capture-ext local: error: the {'API Gateway front' if option == '--port' else 'Runtime API'} "
                f"port {port} on 127.0.0.1 is busy; pick another or 0 for any free port"
            )


async def test_free_ports_by_default_and_health_of_the_frozen_extension(tmp_path: Path) -> None:
    ext = install_extension(tmp_path / "ext")
    env = {"CAPTURE_SINKS": "file", "CAPTURE_FILE_DIR": str(tmp_path / "files"), "CAPTURE_EXT_HOME": str(REPO),
           "CAPTURE_EXT_PYTHON": sys.executable, "CAPTURE_FLUSH_INTERVAL_S": "600", "CAPTURE_METRICS": "0"}  # fmt: skip
    argv = [sys.executable, "-m", "capture_ext.emulator"]
    argv += ["--handler", "captured.handler", "--task-root", str(TASK_ROOT), "--extensions-dir", str(ext)]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        while not printed or not printed[-1].startswith("Ctrl-C"):
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "the CLI exited before serving: " + "".join(printed)
            printed.append(line.strip())
        text = "\n".join(printed)
        url = re.search(r"POST (http://127\.0\.0\.1:\d+)/nlp-qa", text)
        socket_path = re.search(r"CAPTURE_SOCKET=(\S+)", text)
        assert url and socket_path, text
        assert not url.group(1).endswith(":3000") and "127.0.0.1:9001" not in text, text
        assert socket_path.group(1) != "/tmp/capture-ext.sock" and "capture-ext-env0-" in socket_path.group(1), text
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url.group(1)}/nlp-qa", json={"question": "q"}) as r:
                assert r.status == 200, await r.text()
                inference_id = json.loads(await r.text())["inference_id"]
            await asyncio.sleep(0.3)  # the invoke is over: the sandbox is frozen now
            async with s.get(f"{url.group(1)}/_emulator/health", timeout=aiohttp.ClientTimeout(total=10)) as r:
                health = await r.json()
            async with s.post(f"{url.group(1)}/nlp-qa", json={"question": "again"}) as r:
                assert r.status == 200  # refrozen, then thawed by the next invoke as usual
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert await proc.wait() == 0, rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    [environment] = health["environments"]
    assert environment["health"]["received"] == 1 and environment["invokes"] == 1, health
    assert "SHUTDOWN (spindown) of environment 0" in rest and "invokes served: 2" in rest
    delivered = [json.loads(line)["inference_id"] for p in (tmp_path / "files").glob("*.jsonl")
                 for line in p.read_text().splitlines()]  # fmt: skip
    assert inference_id in delivered and len(delivered) == 2
