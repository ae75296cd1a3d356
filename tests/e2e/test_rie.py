"""capture-ext under AWS's own Runtime Interface Emulator, run as users run it: the launcher in the
extensions folder, a handler using the real client, invoked over HTTP, stopped with SIGTERM.

RIE has no Telemetry API (it answers 202 ``Telemetry.NotSupported``), so here capture-ext must
learn that a handler is done from the client's own signal. Skipped, with the reason, where the
RIE binary is absent (``CAPTURE_RIE_BINARY``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capture_ext.testing.net import free_port
from tests.e2e.fixtures.conformance import RIE_MISSING, invoke, rie_binary, start_rie, stop
from tests.e2e.fixtures.full_stack import REPO, install_extension

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(rie_binary() is None, reason=RIE_MISSING)]


def _env(tmp_path: Path) -> dict[str, str]:
    import sys

    return {
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": str(tmp_path / "files"),
        "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
        "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_METRICS": "0",
        "CAPTURE_STRICT": "1",
        "CAPTURE_EXT_HOME": str(REPO),
        "CAPTURE_EXT_PYTHON": sys.executable,
    }


def _delivered(files: Path) -> list[str]:
    if not files.is_dir():
        return []
    return [
        json.loads(line)["inference_id"]
        for path in sorted(files.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


async def test_function_and_extension_answer_deliver_and_exit_cleanly_under_rie(tmp_path: Path) -> None:
    ext = install_extension(tmp_path / "extensions")
    platform = await start_rie("captured.handler", ext, _env(tmp_path), tmp_path)
    answers = []
    try:
        for n in range(3):
            answers.append(await invoke(platform, {"question": f"q{n}"}))
    finally:
        code = await stop(platform)

    log = platform.log.read_text(errors="replace")
    assert [a.status for a in answers] == [200, 200, 200], log[-3000:]
    ids = [a.body["inference_id"] for a in answers]
    assert code == 0, log[-3000:]
    assert sorted(_delivered(tmp_path / "files")) == sorted(ids), log[-3000:]  # each record once
    assert "External agent capture-ext" in log and "registered" in log


async def test_each_record_is_flushed_within_its_own_invoke_under_rie(tmp_path: Path) -> None:
    # RIE answers only once every extension is back in /next, so what a flush due at this invoke
    # wrote is on disk by the time the answer arrives. The first invoke is the one at risk: its
    # handler works 400 ms before capturing, longer than the fixed wait capture-ext falls back to,
    # so only the client's handler-start/done lines can keep the record in its own invoke.
    ext = install_extension(tmp_path / "extensions")
    platform = await start_rie("captured.handler", ext, _env(tmp_path), tmp_path)
    seen: list[list[str]] = []
    ids: list[str] = []
    try:
        for n in range(3):
            answer = await invoke(platform, {"question": f"q{n}", "think_s": 0.4 if n == 0 else 0})
            ids.append(answer.body["inference_id"])
            seen.append(sorted(_delivered(tmp_path / "files")))
    finally:
        await stop(platform)

    assert seen == [sorted(ids[: n + 1]) for n in range(3)]
