"""Every command answers a bad value with one clear line on stderr and a non-zero exit, never a traceback.

Each case runs the real command in a child process, as a user would from a shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture_ext import __version__

CLI = [sys.executable, "-m", "capture_ext.cli"]
RUN = [sys.executable, "-m", "capture_ext"]
CONFIG = [sys.executable, "-m", "capture_ext.core.config"]
BUCKET = {"CAPTURE_S3_BUCKET": "bucket"}


def run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTURE_", "AWS_LAMBDA_"))}
    return subprocess.run(
        argv, cwd=tmp_path, env={**base, **env}, capture_output=True, text=True, timeout=60, check=False
    )


# (argv, environment, exit status, a phrase the one line must contain)
CASES = [
    (CLI, {}, 2, "a command is required"),
    ([*CLI, "launch"], {}, 2, "invalid choice: 'launch'"),
    ([*CLI, "--verbose"], {}, 2, "unknown option '--verbose'"),
    ([*CLI, "run", "--nme", "x"], {}, 2, "unrecognized arguments: --nme"),
    ([*CLI, "run"], {}, 2, "AWS_LAMBDA_RUNTIME_API is not set"),
    ([*RUN, "--name"], {}, 2, "argument --name: expected one argument"),
    ([*CLI, "plugins", "--yaml"], {}, 2, "unrecognized arguments: --yaml"),
    ([*CLI, "local", "--log-level", "LOUD"], {}, 2, "unknown level 'LOUD'"),
    ([*CLI, "local", "--port", "99999"], {}, 2, "99999 is not a TCP port"),
    ([*CLI, "local", "--timeout", "-1"], {}, 2, "--timeout: must be at least"),
    ([*CLI, "local", "--task-root", "/nonexistent"], {}, 2, "'/nonexistent' does not exist"),
    (CONFIG, {**BUCKET, "CAPTURE_FLUSH_MAX_BYTES": "5XB"}, 1, "CAPTURE_FLUSH_MAX_BYTES='5XB' is invalid (expected"),
    (CONFIG, {**BUCKET, "CAPTURE_SAMPLE_RATE": "often"}, 1, "CAPTURE_SAMPLE_RATE='often' is invalid (not a number)"),
    # A selected sink's variables are checked as the sink declared them.
    (CONFIG, {}, 1, "sink 's3_jsonl': CAPTURE_S3_BUCKET is not set, and it is required"),
    (
        CONFIG,
        {"CAPTURE_SINKS": "firehose,file", "CAPTURE_FIREHOSE_STREAM": "s", "CAPTURE_FILE_DIR": ""},
        1,
        "sink 'file': CAPTURE_FILE_DIR",
    ),
]


@pytest.mark.parametrize(
    ("argv", "env", "status", "phrase"), CASES, ids=lambda v: " ".join(map(str, v[1:])) if isinstance(v, list) else None
)
def test_bad_value_is_one_clear_line(argv, env, status, phrase, tmp_path):
    result = run(argv, tmp_path, **env)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert phrase in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv",
    [["report", "--p-value", "often"], ["report"], ["report", "--data", "/nonexistent", "--last", "soon"]],
    ids=" ".join,
)
def test_report_bad_values_end_in_one_error_line(argv, tmp_path):
    # The report's parser prints argparse's usage block before the error line; the error itself
    # is still the last line, with exit status 2, and never a traceback.
    result = run([*CLI, *argv], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.splitlines()[-1].startswith("capture-ext report: error: "), result.stderr


def test_version_and_the_prog_of_run(tmp_path):
    version = run([*CLI, "--version"], tmp_path)
    assert (version.returncode, version.stdout) == (0, f"capture-ext {__version__}\n")
    usage = run([*CLI, "run", "--help"], tmp_path)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: capture-ext run ")
    assert "(default: None)" not in usage.stdout
    for command in ("local", "plugins"):
        help_text = run([*CLI, command, "--help"], tmp_path).stdout
        assert help_text.startswith(f"usage: capture-ext {command} ") and "(default: None)" not in help_text
