"""The import-linter contracts in pyproject.toml can fail: one deliberate violation per wall breaks it.

`make lint` runs `lint-imports` over the real package (it must pass there). Here a copy of the
package gets one forbidden import per contract, and every contract must then report BROKEN: a
contract that names a module wrongly, or one loosened until it allows everything, fails this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

#: (module file in the copy, the forbidden import added to it, the contract it must break)
VIOLATIONS = [
    ("sinks/local.py", "import capture_ext.core.ledger", "never import one another"),
    ("client.py", "import capture_ext.core.records", "imports no part of the package's internals"),
    ("wire.py", "import h11", "need only the standard library"),
    ("emulator/api.py", "import capture_ext.testing.net", "Only tests (outside the package) import the testing kit"),
]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("lint-imports is not installed: run `make setup` (import-linter is in the dev extra)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(lint), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "capture_ext", tmp_path / "capture_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def contract_names() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [contract["name"] for contract in config["tool"]["importlinter"]["contracts"]]


def test_every_contract_has_a_violation_here():
    names = contract_names()
    for _, _, fragment in VIOLATIONS:
        assert sum(fragment in name for name in names) == 1, f"no single contract matches {fragment!r}"
    assert len(names) == len(VIOLATIONS), "a contract was added: give it a deliberate violation here"


def test_one_forbidden_import_per_wall_breaks_every_contract(tmp_path):
    root = copy_package(tmp_path)
    for relative, statement, _ in VIOLATIONS:
        module = root / "capture_ext" / relative
        module.write_text(module.read_text() + f"\n{statement}  # deliberate violation\n")

    result = lint_imports(root)

    assert result.returncode == 1, result.stdout + result.stderr
    output = " ".join(result.stdout.split())  # import-linter wraps long contract names
    for name in contract_names():
        assert f"{name} BROKEN" in output, f"{name!r} was not broken:\n{result.stdout}"
    assert "Contracts: 0 kept, 4 broken." in output
