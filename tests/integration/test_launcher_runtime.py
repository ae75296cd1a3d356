"""A layer on a runtime without its Python fails init with a clear error, through the Extensions API.

The launcher runs under the local Lambda emulator with a layer tree that names an interpreter the
machine does not have (python-version 3.99): Lambda must see the init error
``Extension.PythonMissing`` with the reason, and the log one line saying which layer to use.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "def handler(event, context):\n    return {'ok': True}\n"


async def test_missing_interpreter_is_an_init_error_lambda_reports(lambda_emulator: Any, tmp_path: Path) -> None:
    opt = tmp_path / "opt"
    home = opt / "capture-ext"
    (home / "capture_ext").mkdir(parents=True)
    (home / "capture_ext" / "__init__.py").write_text("")
    (home / "python-version").write_text("3.99\n")
    extensions = opt / "extensions"
    extensions.mkdir()
    shutil.copy2(ROOT / "extensions" / "capture-ext", extensions / "capture-ext")
    task = tmp_path / "task"
    task.mkdir()
    (task / "fn.py").write_text(HANDLER)

    emu = await lambda_emulator("fn.handler", task, extensions, {"CAPTURE_EXT_HOME": str(home)})
    result = await emu.invoke({})

    assert (result.status, result.error_type) == ("failure", "Extension.PythonMissing")
    lines = [line for line in emu.logs("capture-ext") if "launcher:" in line]
    assert len(lines) == 1, emu.logs("capture-ext")
    assert "built for python3.99, which this runtime does not have" in lines[0]
    assert emu.resets[0].reason == "failure"
