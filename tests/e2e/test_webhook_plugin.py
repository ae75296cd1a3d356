"""A third-party sink end to end: function → capture-ext (via its launcher) → the webhook plugin.

The layer is laid out as Lambda would see it: ``CAPTURE_EXT_HOME`` holds the ``capture_ext``
package, the example plugin's package and its ``*.dist-info`` (the entry point). The function
is a small handler using ``capture_ext.client`` under awslambdaric in the emulator, with
``CAPTURE_SINKS=webhook``; a real local HTTP server is the webhook receiver.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from capture_ext.emulator import LambdaEmulator
from capture_ext.testing.net import free_port
from tests.e2e.fixtures.full_stack import REPO, install_extension
from tests.fakes.webhook import WebhookReceiver
from tests.helpers import install_dist

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
EXAMPLE = REPO / "examples" / "capture-ext-webhook"

HANDLER = """
from capture_ext.client import capture, capture_handler


@capture_handler
def handler(event, context):
    answer = {"answer": event["question"][::-1]}
    inference_id = capture(input=event, output=answer, model={"name": "reverser", "version": "1"})
    return {**answer, "inference_id": inference_id}
"""


def build_layer(home: Path) -> Path:
    """``/opt/capture-ext`` in miniature: packages plus the plugin's dist-info."""
    home.mkdir(parents=True)
    (home / "capture_ext").symlink_to(REPO / "capture_ext", target_is_directory=True)
    (home / "capture_ext_webhook").symlink_to(EXAMPLE / "capture_ext_webhook", target_is_directory=True)
    install_dist(home, "capture-ext-webhook", {"webhook": "capture_ext_webhook"})
    return home


async def test_records_reach_the_webhook_after_each_invoke_and_at_shutdown(
    lambda_emulator: Any, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    task = tmp_path / "task"
    task.mkdir()
    (task / "app.py").write_text(textwrap.dedent(HANDLER))
    env = {
        "CAPTURE_SINKS": "webhook",
        "CAPTURE_WEBHOOK_URL": receiver.url,
        "CAPTURE_FLUSH_INTERVAL_S": "0",
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
        "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
        "CAPTURE_STRICT": "1",  # a plugin that fails to load must fail init, not vanish
        "CAPTURE_METRICS": "0",
        "CAPTURE_EXT_HOME": str(build_layer(tmp_path / "opt" / "capture-ext")),
        "CAPTURE_EXT_PYTHON": sys.executable,
        "PATH": os.environ.get("PATH", ""),
    }
    emu: LambdaEmulator = await lambda_emulator(
        "app.handler", task, install_extension(tmp_path / "extensions"), env, function_name="hook-fn"
    )
    answered: dict[str, str] = {}
    for n, question in enumerate(["where is it", "who wrote it", "when was it"]):
        result = await emu.invoke({"question": question})
        assert result.ok, result.raw
        answered[result.payload["inference_id"]] = result.request_id
        # Flushed after the response and before the extension went back to /next:
        assert len(receiver.records()) == n + 1, (receiver.records(), emu.logs("capture-ext")[-20:])
    report = await emu.shutdown()

    assert report is not None and report.exit_codes.get("capture-ext") == 0, emu.logs("capture-ext")[-30:]
    records = receiver.records()
    assert sorted(r["inference_id"] for r in records) == sorted(answered)
    for record in records:
        assert record["request_id"] == answered[record["inference_id"]]
        assert record["function_name"] == "hook-fn"
        assert record["model"] == {"name": "reverser", "version": "1"}
        assert record["output"]["answer"] == record["input"]["question"][::-1]
    assert all(key == batch["batch_id"] for key, batch in receiver.batches.items())
    assert len(receiver.keys) == len(set(receiver.keys))  # nothing needed a retry here
