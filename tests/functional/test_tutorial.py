"""docs/writing-sinks.md is runnable: its files form a plugin whose own tests pass.

The tutorial's code blocks that start with ``# capture-ext-sqlite/<path>`` are written to a
temporary directory. Instead of ``pip install -e .`` (which would change the shared
environment), the package is made discoverable the way pip would: a ``*.dist-info`` with the
entry points declared in the tutorial's own ``pyproject.toml``. Then the tutorial's test suite
(the sink contract kit included) runs in a fresh pytest process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-sinks.md"
PACKAGE = "capture-ext-sqlite"


def tutorial_files() -> dict[str, str]:
    files = {}
    for body in re.findall(r"```\w+\n(.*?)```", DOC.read_text(), flags=re.S):
        first = body.splitlines()[0]
        if match := re.fullmatch(rf"# {PACKAGE}/(\S+)", first):
            files[match.group(1)] = body
    return files


def test_tutorial_shows_every_file_of_the_plugin() -> None:
    assert set(tutorial_files()) == {
        "pyproject.toml",
        "capture_ext_sqlite.py",
        "tests/conftest.py",
        "tests/test_sqlite_sink.py",
        "handler.py",
    }


def test_tutorial_plugin_is_discovered_and_passes_its_tests(tmp_path: Path) -> None:
    project = tmp_path / PACKAGE
    for name, body in tutorial_files().items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    entry_points = meta["entry-points"]["capture_ext"]
    assert entry_points == {"sqlite": "capture_ext_sqlite"}
    site = tmp_path / "site"
    dist_info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[capture_ext]\n{lines}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(project)])}

    plugins = subprocess.run(
        [sys.executable, "-m", "capture_ext.cli", "plugins", "--json"],
        cwd=project,
        env={**env, "CAPTURE_SINKS": "sqlite"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert '"sqlite": "sqlite"' in plugins.stdout, plugins.stdout + plugins.stderr
    listed = json.loads(plugins.stdout)
    [sqlite] = [p for p in listed["plugins"] if p["name"] == "sqlite"]
    assert [v["name"] for v in sqlite["variables"]["sqlite"]] == ["CAPTURE_SQLITE_PATH", "CAPTURE_SQLITE_TIMEOUT_S"]

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 15, run.stdout[-2000:]
    assert "skipped" not in run.stdout, run.stdout[-2000:]
