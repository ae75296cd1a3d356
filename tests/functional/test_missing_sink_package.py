"""A sink whose Python package is missing is a configuration error at start, never a retry loop."""

import asyncio
import os
import subprocess
import sys

from capture_ext.core.config import Settings
from capture_ext.core.sink_setup import build_sinks, missing_requirement
from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI
from tests.helpers import start_extension

# Hiding pyarrow this way makes ``import pyarrow`` fail exactly as if it were not installed.
HIDE_PYARROW = "import sys\nsys.modules['pyarrow'] = None\n"


class NeedsNothingInstalled:
    requires = ("capture_ext_no_such_package",)
    install_hint = "capture-ext-no-such-package"


def test_missing_requirement_names_the_package_and_how_to_install_it():
    assert missing_requirement(NeedsNothingInstalled) == (
        "needs the Python package 'capture_ext_no_such_package', which is not installed "
        "(pip install 'capture-ext-no-such-package')"
    )
    assert missing_requirement(object) is None


def test_build_sinks_disables_it_and_keeps_the_others(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    env = {"CAPTURE_SINKS": "s3_parquet,file", "CAPTURE_S3_BUCKET": "b", "CAPTURE_FILE_DIR": str(tmp_path)}
    sinks, _, problems = build_sinks(Settings.from_env(env), env, "env")
    assert list(sinks) == ["file"]
    assert problems == [
        "sink 's3_parquet' is disabled: needs the Python package 'pyarrow', which is not installed "
        "(pip install 'capture-ext[parquet]')"
    ]


def test_plugins_command_fails_on_it(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(HIDE_PYARROW)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CAPTURE_SINKS": "s3_parquet"}
    result = subprocess.run(
        [sys.executable, "-m", "capture_ext.cli", "plugins"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sink 's3_parquet' needs the Python package 'pyarrow'" in result.stdout


async def test_strict_mode_fails_init(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    api = FakeLambdaAPI()
    address = await api.start()
    try:
        env = {
            "AWS_LAMBDA_RUNTIME_API": address,
            "CAPTURE_SINKS": "s3_parquet",
            "CAPTURE_S3_BUCKET": "b",
            "CAPTURE_STRICT": "1",
            "CAPTURE_PORT": str(free_port()),
            "CAPTURE_SOCKET": str(tmp_path / "s.sock"),
        }
        assert await asyncio.wait_for((await start_extension(env)).run(), 10) == 1
        (error,) = api.init_errors
        assert error["type"] == "Extension.ConfigError"
        assert "needs the Python package 'pyarrow'" in error["body"]["errorMessage"]
    finally:
        await api.stop()
