"""The API Gateway front and the ``capture-ext local`` CLI: HTTP in, proxy events to the function, Ctrl-C out."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys

import aiohttp
import pytest

from capture_ext.emulator.apigw import ApiGatewayFront
from tests.e2e.fixtures.emulator_helpers import TASK_ROOT, events, write_probe

pytestmark = pytest.mark.timeout(60)


async def test_post_becomes_a_proxy_event_and_the_proxy_answer_becomes_http(lambda_emulator, tmp_path):
    emu = await lambda_emulator("fn.proxy", TASK_ROOT, None)
    front = ApiGatewayFront(emu)
    url = await front.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/nlp-qa", json={"question": "q?", "context": "c."}) as r:
                status, headers, body = r.status, r.headers, await r.json()
            async with s.get(f"{url}/nlp-qa") as r:
                not_routed = r.status
    finally:
        await front.close()
    assert status == 201 and headers["X-Fn"] == "yes"
    # The front answered as soon as the runtime did; the invoke itself may still be ending.
    assert headers["x-amzn-RequestId"] == emu.events("platform.start")[0]["record"]["requestId"]
    assert body == {"path": "/nlp-qa", "method": "POST", "got": {"question": "q?", "context": "c."}, "stage": "Prod"}
    assert not_routed == 405


async def test_function_errors_and_malformed_answers_are_502_direct_invoke_is_raw(lambda_emulator, tmp_path):
    emu = await lambda_emulator("fn.echo", TASK_ROOT, None)
    front = ApiGatewayFront(emu)
    url = await front.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/nlp-qa", data=b"{}") as r:
                assert (r.status, await r.json()) == (502, {"message": "Internal server error"})
            async with s.post(f"{url}/2015-03-31/functions/function/invocations", json={"a": 1}) as r:
                assert r.status == 200 and (await r.json())["event"] == {"a": 1}
    finally:
        await front.close()


async def test_cli_serves_until_sigint_then_sends_shutdown(tmp_path):
    out, ext = tmp_path / "out", tmp_path / "ext"
    write_probe(ext, "probe", out)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "capture_ext.emulator", "--handler", "fn.proxy", "--task-root", str(TASK_ROOT),
        "--extensions-dir", str(ext), "--port", "0", "--runtime-api-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "the CLI exited before serving"
            found = re.search(r"POST (http://127\.0\.0\.1:\d+)/nlp-qa", line)
            url = found.group(1) if found else None
        async with aiohttp.ClientSession() as s, s.post(f"{url}/nlp-qa", json={"x": 1}) as r:
            assert r.status == 201 and json.loads(await r.text())["got"] == {"x": 1}
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "SHUTDOWN (spindown)" in rest and "invokes served: 1" in rest
    assert [e["shutdownReason"] for e in events(out, "probe", "SHUTDOWN")] == ["spindown"]
