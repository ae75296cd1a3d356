"""Hostile requests to the QA function through its two real fronts: HTTP → the API Gateway front →
awslambdaric → the handler, and HTTP → the direct-invoke path → awslambdaric's own JSON parsing →
the handler. Each gets its 400/413, and every refusal reaches the extension's ``file`` sink, flagged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from capture_ext.emulator.apigw import INVOKE_PATH, ApiGatewayFront
from capture_ext.testing.net import free_port
from tests.e2e.fixtures.full_stack import REPO, install_extension
from tests.qa_models import tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SURROGATE = b'{"question": "who \\ud800", "context": "paris is the capital of france"}'
DOTS = json.dumps({"question": "where?", "context": "." * 20_000}).encode()
DEEP = b"[" * 50_000 + b"]" * 50_000
GOOD = b'{"question": "where is it", "context": "it is in paris in france"}'


def env(tmp_path: Path) -> dict[str, str]:
    return {
        "MODEL_DIR": str(tiny_model()),
        "HF_HUB_OFFLINE": "1",
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": str(tmp_path / "files"),
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
        "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
        "CAPTURE_STRICT": "1",
        "CAPTURE_METRICS": "0",
        "CAPTURE_EXT_HOME": str(REPO),
        "CAPTURE_EXT_PYTHON": sys.executable,
    }


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


async def test_hostile_requests_are_refused_through_both_fronts_and_captured(lambda_emulator, tmp_path):
    emu = await lambda_emulator(
        "inference_fn.app.handler", REPO, install_extension(tmp_path / "extensions"), env(tmp_path),
        function_name="qa-fn", init_timeout_s=120,
    )  # fmt: skip
    front = ApiGatewayFront(emu)
    url = await front.start()
    api: dict[str, tuple[int, dict[str, Any]]] = {}
    direct: dict[str, tuple[int, dict[str, Any], str | None]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for name, body in (("surrogate", SURROGATE), ("dots", DOTS), ("deep", DEEP), ("good", GOOD)):
                async with session.post(f"{url}/nlp-qa", data=body) as r:
                    api[name] = (r.status, await r.json())
            for name, body in (("surrogate", SURROGATE), ("dots", DOTS), ("deep", DEEP)):
                async with session.post(f"{url}{INVOKE_PATH}", data=body) as r:
                    direct[name] = (r.status, await r.json(), r.headers.get("X-Amz-Function-Error"))
    finally:
        await front.close()
    await emu.shutdown()

    assert api["surrogate"][0] == 400 and "lone UTF-16 surrogate (U+D800)" in api["surrogate"][1]["error"]
    assert api["dots"][0] == 413 and api["dots"][1]["error"] == "context is 20000 tokens; the limit is 6144"
    assert api["deep"][0] == 400 and api["deep"][1]["error"] == "request body is not valid JSON: nested too deeply"
    assert api["good"][0] == 200
    assert direct["surrogate"][1]["statusCode"] == 400 and direct["surrogate"][2] is None
    assert direct["dots"][1]["statusCode"] == 413
    # The runtime parses a direct invoke's payload before any handler code runs, and refuses this one.
    assert direct["deep"][2] == "Unhandled" and direct["deep"][1]["errorType"] == "Runtime.UnmarshalError"

    captured = {r["inference_id"]: r for r in records(tmp_path / "files")}
    refused = [*(doc for status, doc in api.values() if status != 200), direct["surrogate"][1], direct["dots"][1]]
    for doc in refused:
        record = captured.pop(doc["inference_id"])
        assert record["metadata"]["rejected"] is True and record["metadata"]["error"] == doc["error"]
    assert [r["output"]["answer"] for r in captured.values()] == ["paris in france"]
    assert api["good"][1]["inference_id"] in {r["inference_id"] for r in captured.values()}
