"""docs/writing-sinks.md, followed as a new user would: in an empty virtual environment, with plain pip.

1. ``pip install '<checkout>[testing]'`` from the package index, with no lock file, no constraints and
   no machine-wide pip configuration (pip's own resolver, as on a new user's laptop);
2. the tutorial's files, ``pip install -e .`` and ``capture-ext plugins``;
3. the tutorial's own test suite (the sink contract kit);
4. the page's shell commands for the emulator: the launcher, ``capture-ext local`` with the minimal
   handler, requests to the printed address, and the records in the SQLite sink before Ctrl-C.

It needs the package index (PyPI): without it the test is skipped, saying so. pip's cache is the
user's, so a second run reuses the downloads. The install's wall time is printed (``-s``) and
recorded as a property, never asserted: the machine is shared.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.functional.test_tutorial import DOC, PACKAGE, tutorial_files

ROOT = Path(__file__).resolve().parents[2]
#: Packages the lean testing extra must not pull in (moto[server] and the report/inference extras would).
HEAVY = {"cfn-lint", "aws-sam-translator", "pydantic", "docker", "sympy", "torch", "pyarrow", "duckdb", "scipy"}
#: pip settings that reach the index (kept); every other PIP_* variable and pip.conf file is dropped.
NETWORK_SETTINGS = {"PIP_INDEX_URL", "PIP_CERT", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT", "PIP_CACHE_DIR"}


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CAPTURE_", "AWS_", "VIRTUAL_ENV"))}
    env.update({k: v for k, v in os.environ.items() if k in NETWORK_SETTINGS})
    env.pop("PYTHONPATH", None)
    env["PIP_CONFIG_FILE"] = os.devnull  # no machine-wide constraints, find-links or extra indexes
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def index_reachable() -> str | None:
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            response.read(1)
    except (OSError, urllib.error.URLError) as exc:
        return f"{url}: {exc}"
    return None


def doc_block(starting: str) -> str:
    """The page's bash block whose first line starts with ``starting``."""
    for body in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        if body.startswith(starting):
            return body
    raise AssertionError(f"docs/writing-sinks.md has no bash block starting with {starting!r}")


def sh(command: str | list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    argv = ["bash", "-euo", "pipefail", "-c", command] if isinstance(command, str) else command
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:  # only if the test failed before its own Ctrl-C
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_tutorial_from_an_empty_virtual_environment(tmp_path: Path, emulator, record_property) -> None:
    unreachable = index_reachable()
    if unreachable:
        pytest.skip(f"the package index is not reachable ({unreachable})")
    venv = tmp_path / "venv"
    # No pip inside: this interpreter's pip installs into it (--python), which saves bootstrapping one.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    env = clean_env(venv)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]

    started = time.monotonic()
    sh([*pip, f"{ROOT}[testing]"], tmp_path, env, timeout=600)
    install_s = time.monotonic() - started
    record_property("install_testing_extra_s", round(install_s, 1))
    print(f"\npip install '.[testing]' into an empty venv, no constraints: {install_s:.1f} s")

    names = sh(
        [str(python), "-c", "import importlib.metadata as m; print(*(d.metadata['Name'] for d in m.distributions()))"],
        tmp_path,
        env,
    )
    installed = {name.lower() for name in names.split()}
    assert {"capture-ext", "moto", "flask", "aioboto3", "aiohttp", "awslambdaric", "pytest-asyncio"} <= installed
    assert not installed & HEAVY, sorted(installed & HEAVY)
    assert (
        "inference_fn"
        not in sh(
            [str(python), "-c", "import pkgutil; print(*(m.name for m in pkgutil.iter_modules()))"], tmp_path, env
        ).split()
    )

    # 1.-5. The plugin's files, an editable install, and capture-ext plugins.
    project = tmp_path / PACKAGE
    for name, body in tutorial_files().items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    sh([*pip, "-e", str(project)], project, env)
    listed = sh(["capture-ext", "plugins"], project, {**env, "CAPTURE_SINKS": "sqlite"})
    assert "CAPTURE_SINKS: sqlite (sqlite)" in listed, listed

    # 6. The tutorial's tests, the contract kit included, run by the venv's pytest.
    tests = sh([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, env)
    passed = re.search(r"(\d+) passed", tests)
    assert passed and int(passed.group(1)) >= 15 and "skipped" not in tests, tests[-2000:]

    # 7. The emulator, with the page's own commands.
    sh(doc_block("mkdir -p extensions"), project, env)
    command = doc_block("capture-ext local ")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command.strip()}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    emulator.append(proc)
    assert proc.stdout is not None
    output = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith("Ctrl-C to shut down"):
            break
    text = "".join(output)
    url = re.search(r"POST (http://127\.0\.0\.1:\d+/ask)\b", text)
    assert url, text

    questions = ["Who wrote it?", "When?", "Where is it?"]
    for question in questions:
        request = urllib.request.Request(url.group(1), data=json.dumps({"question": question}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.loads(response.read()) == {"answer": question[::-1]}
    # CAPTURE_FLUSH_INTERVAL_S=0: the records are in the sink after each invoke, before any shutdown.
    database = project / "capture.db"
    deadline = time.monotonic() + 30
    rows: list[dict] = []
    while time.monotonic() < deadline:
        if database.exists():
            with closing(sqlite3.connect(database)) as db:
                rows = [json.loads(r[0]) for r in db.execute("SELECT record FROM records ORDER BY captured_at")]
            if len(rows) == len(questions):
                break
        time.sleep(0.2)
    assert [r["input"]["question"] for r in rows] == questions, text
    assert all(r["model"] == {"name": "reverse", "version": "1"} and r["request_id"] for r in rows)

    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: SHUTDOWN, then exit 0
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, text + rest
    assert "SHUTDOWN" in rest and "Traceback" not in text + rest
