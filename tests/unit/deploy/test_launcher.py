"""extensions/capture-ext, the shell launcher: name, path, interpreter, exec, and its one error.

The launched program is a stand-in ``capture_ext`` package in a temporary CAPTURE_EXT_HOME that
reports what it was started with; tests/integration/test_layer.py runs the real extension.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[3] / "extensions" / "capture-ext"
REPORTER = """
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(), "path": sys.path,
                  "pythonpath": os.environ.get("PYTHONPATH"), "executable": sys.executable}))
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    package = tmp_path / "home" / "capture_ext"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(REPORTER)
    return package.parent


def launch(launcher: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen([str(launcher), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    return proc, out, err


def base_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **extra}


def test_runs_capture_ext_from_home_under_its_own_file_name(home: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "ext" / "qa-capture"
    renamed.parent.mkdir()
    renamed.write_bytes(LAUNCHER.read_bytes())
    renamed.chmod(0o755)
    env = base_env(CAPTURE_EXT_HOME=str(home), CAPTURE_EXT_PYTHON=sys.executable, PYTHONPATH="/function/libs")
    proc, out, err = launch(renamed, env, "--extra")
    assert proc.returncode == 0, err
    seen = json.loads(out)
    assert seen["argv"] == ["--name", "qa-capture", "--extra"]
    # Home first, whatever was there kept after it, for this process only.
    assert seen["pythonpath"] == f"{home}:/function/libs"
    assert seen["path"][0:2] == [str(home), "/function/libs"]
    assert Path(seen["executable"]).resolve() == Path(sys.executable).resolve()
    # exec: the extension is the process Lambda started, not a child of a shell.
    assert seen["pid"] == proc.pid


def test_a_capture_ext_folder_in_the_working_directory_does_not_shadow_home(home: Path, tmp_path: Path) -> None:
    """Lambda may start extensions in /var/task, where the function keeps its own capture_ext copy."""
    task = tmp_path / "task" / "capture_ext"
    task.mkdir(parents=True)
    (task / "__init__.py").write_text("")
    (task / "__main__.py").write_text("print('the function copy')")
    env = base_env(CAPTURE_EXT_HOME=str(home), CAPTURE_EXT_PYTHON=sys.executable)
    proc = subprocess.run([str(LAUNCHER)], env=env, cwd=task.parent, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["argv"] == ["--name", "capture-ext"]


def test_without_a_pythonpath_only_home_is_added(home: Path) -> None:
    proc, out, err = launch(LAUNCHER, base_env(CAPTURE_EXT_HOME=str(home), CAPTURE_EXT_PYTHON=sys.executable))
    assert proc.returncode == 0, err
    seen = json.loads(out)
    assert seen["pythonpath"] == str(home)
    assert seen["argv"] == ["--name", "capture-ext"]


def test_a_tree_without_python_version_runs_python3_on_the_path(home: Path) -> None:
    proc, out, err = launch(LAUNCHER, base_env(CAPTURE_EXT_HOME=str(home)))
    assert proc.returncode == 0, err
    assert Path(json.loads(out)["executable"]).name.startswith("python3")


def test_a_home_without_the_package_is_one_clear_error(tmp_path: Path) -> None:
    proc, out, err = launch(LAUNCHER, base_env(CAPTURE_EXT_HOME=str(tmp_path), CAPTURE_EXT_PYTHON=sys.executable))
    assert proc.returncode == 1
    assert out == ""
    assert f"no capture_ext package in {tmp_path}" in err


def test_the_launchers_error_is_a_json_line_under_lambdas_json_log_format(tmp_path: Path) -> None:
    home = tmp_path / 'odd "name"'
    home.mkdir()
    env = base_env(CAPTURE_EXT_HOME=str(home), CAPTURE_EXT_PYTHON=sys.executable, AWS_LAMBDA_LOG_FORMAT="JSON")
    proc, _, err = launch(LAUNCHER, env)
    assert proc.returncode == 1
    (line,) = err.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["message"] == f"no capture_ext package in {home} (set CAPTURE_EXT_HOME)"


def this_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_runs_the_python_the_layer_was_built_for(home: Path, tmp_path: Path) -> None:
    """python-version names the interpreter; python3 on the PATH is another one and is not used."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / f"python{this_python()}").symlink_to(sys.executable)
    decoy = bin_dir / "python3"
    decoy.write_text("#!/bin/sh\necho decoy; exit 3\n")
    decoy.chmod(0o755)
    (home / "python-version").write_text(f"{this_python()}\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CAPTURE_EXT_HOME": str(home)}
    if Path(f"/var/lang/bin/python{this_python()}").exists():
        pytest.skip("this machine has Lambda's interpreter, which the launcher prefers")
    proc, out, err = launch(LAUNCHER, env)
    assert proc.returncode == 0, err
    assert Path(json.loads(out)["executable"]).resolve() == Path(sys.executable).resolve()


def test_a_missing_interpreter_is_one_clear_line_and_exit_1(home: Path) -> None:
    (home / "python-version").write_text("3.99\n")
    proc, out, err = launch(LAUNCHER, base_env(CAPTURE_EXT_HOME=str(home)))
    assert proc.returncode == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "built for python3.99, which this runtime does not have" in lines[0]
    assert lines[0].startswith("[capture-ext] launcher: ")


def test_a_layer_for_another_architecture_is_refused(home: Path) -> None:
    machine = os.uname().machine
    other = "aarch64" if machine == "x86_64" else "x86_64"
    (home / "architecture").write_text(f"{other}\n")
    env = base_env(CAPTURE_EXT_HOME=str(home), CAPTURE_EXT_PYTHON=sys.executable)
    proc, out, err = launch(LAUNCHER, env)
    assert proc.returncode == 1
    assert out == ""
    assert f"built for {other}, but the function runs on {machine}" in err
    # The matching architecture runs.
    (home / "architecture").write_text(f"{machine}\n")
    proc, out, err = launch(LAUNCHER, env)
    assert proc.returncode == 0, err


def test_a_capture_ext_python_that_does_not_exist_is_named(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    proc, _, err = launch(LAUNCHER, base_env(CAPTURE_EXT_HOME=str(home), CAPTURE_EXT_PYTHON=str(missing)))
    assert proc.returncode == 1
    assert f"CAPTURE_EXT_PYTHON={missing} does not exist" in err


def test_default_home_is_opt_capture_ext() -> None:
    if Path("/opt/capture-ext/capture_ext").is_dir():
        pytest.skip("an extension is installed in /opt on this machine")
    proc, _, err = launch(LAUNCHER, base_env(CAPTURE_EXT_PYTHON=sys.executable))
    assert proc.returncode == 1
    assert "no capture_ext package in /opt/capture-ext" in err
