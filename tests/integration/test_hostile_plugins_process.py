"""Hostile plugins in a real extension process cost only themselves.

One layer holds every sink of ``capture_ext.testing.hostile`` (raising ``SystemExit``,
``KeyboardInterrupt`` or ``CancelledError`` from the factory, ``start()``, ``write_batch`` or
``close()``; hanging; blocking the loop; swallowing cancellation; mutating records) and plugins that
raise the same at import or in their register hook. With all of them configured beside the
``file`` sink, the extension must come up, deliver every record to ``file`` unchanged, name each
hostile sink in the log, and still finish SHUTDOWN before its deadline with exit code 0.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from capture_ext.testing import hostile
from tests.helpers import install_dist, read_file_sink
from tests.integration.test_webhook_plugin_process import Extension, _post, _record

pytestmark = pytest.mark.timeout(120)

CRASHERS = {
    "import_exit": "raise SystemExit(4)\n",
    "import_interrupt": "raise KeyboardInterrupt\n",
    "register_interrupt": (
        "from capture_ext import hookimpl\n\n@hookimpl\ndef capture_register_sinks(register):\n"
        "    raise KeyboardInterrupt\n"
    ),
    "register_cancel": (
        "import asyncio\nfrom capture_ext import hookimpl\n\n@hookimpl\ndef capture_register_sinks(register):\n"
        "    raise asyncio.CancelledError\n"
    ),
}


@pytest.fixture
def layer(tmp_path: Path) -> str:
    site = tmp_path / "layer"
    install_dist(site, "capture-ext-hostile", {"hostile": "capture_ext.testing.hostile"})
    for name, source in CRASHERS.items():
        install_dist(site, f"capture-ext-{name.replace('_', '-')}", {name: f"crash_{name}"})
        (site / f"crash_{name}.py").write_text(source)
    return str(site)


async def test_hostile_plugins_cost_only_themselves(tmp_path: Path, layer: str) -> None:
    out = tmp_path / "files"
    hostile_sinks = [f"hostile_{mode}" for mode in hostile.MODES]
    extension = Extension(
        tmp_path,
        {
            "CAPTURE_SINKS": ",".join(["file", *hostile_sinks]),
            "CAPTURE_FILE_DIR": str(out),
            "CAPTURE_HOSTILE_BLOCK_S": "3",
            "PYTHONPATH": os.pathsep.join([layer, os.environ.get("PYTHONPATH", "")]),
        },
    )
    accepted: list[dict[str, object]] = []
    try:
        await extension.start()  # init must succeed: no hostile plugin may crash it
        api = extension.api
        for invoke in range(3):
            request_id = await api.invoke(timeout_s=6.0)
            records = [_record(invoke * 10 + k, request_id) for k in range(3)]
            await _post(extension.port, records)
            accepted += records
            await api.runtime_done(request_id)
            await api.wait_idle(timeout=30)
        code = await extension.shutdown(budget_ms=2000)
    finally:
        await extension.stop()
    log = extension.log()
    assert code == 0, log
    written = read_file_sink(out)
    assert sorted(r["inference_id"] for r in written) == sorted(str(r["inference_id"]) for r in accepted), log
    by_id = {r["inference_id"]: r for r in written}
    for record in accepted:
        assert by_id[record["inference_id"]]["input"] == record["input"], "a hostile sink's mutation reached `file`"
    for name in hostile_sinks:
        if name != "hostile_write_mutate":
            assert name in log, f"{name} is never named in the log:\n{log}"
    for name in CRASHERS:
        assert f"plugin {name!r}" in log, log
    match = re.search(r"SHUTDOWN done (-?\d+) ms before the deadline", log)
    assert match and int(match.group(1)) > 0, log
    assert "Traceback" not in log, log
    await asyncio.sleep(0)
