"""Per-package branch coverage at the end of ``make test``, and the floors each package must keep.

``coverage report`` gives one total (statements and branches together, checked against
``fail_under`` in pyproject.toml). The delivery core and the function-side client carry the
project's promises, so they get floors of their own here, on branches alone: a branch that no
test takes is a decision nobody has seen go both ways.

Run after ``coverage combine``: ``python -m tests.coverage_summary`` (``--no-check`` prints only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Groups as path prefixes (relative to the repository), in the order they are printed.
GROUPS = {
    "capture_ext": "capture_ext/",
    "capture_ext/core": "capture_ext/core/",
    # The function-side client: client.py and client_support.py (split for size, one promise).
    "capture_ext/client*.py": "capture_ext/client",
    "capture_ext/sinks": "capture_ext/sinks/",
    "capture_ext/report": "capture_ext/report/",
    "capture_ext/emulator": "capture_ext/emulator/",
}

#: Branch-coverage floors (percent), set just under what the suite reaches (docs/testing.md).
BRANCH_FLOORS = {
    "capture_ext": 91.1,
    "capture_ext/core": 96.0,
    "capture_ext/client*.py": 95.0,
}


@dataclass
class Tally:
    statements: int = 0
    covered_lines: int = 0
    branches: int = 0
    covered_branches: int = 0

    def add(self, summary: dict[str, int]) -> None:
        self.statements += summary["num_statements"]
        self.covered_lines += summary["covered_lines"]
        self.branches += summary["num_branches"]
        self.covered_branches += summary["covered_branches"]

    @property
    def line_pct(self) -> float:
        return 100.0 * self.covered_lines / self.statements if self.statements else 100.0

    @property
    def branch_pct(self) -> float:
        return 100.0 * self.covered_branches / self.branches if self.branches else 100.0


def tallies(report: dict) -> dict[str, Tally]:
    """Sum coverage's per-file JSON summaries into the groups."""
    out = {name: Tally() for name in GROUPS}
    for path, data in report["files"].items():
        for name, prefix in GROUPS.items():
            if path == prefix or path.startswith(prefix):
                out[name].add(data["summary"])
    return out


def load_report(python: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "coverage.json"
        subprocess.run([python, "-m", "coverage", "json", "-q", "-o", str(target)], check=True)
        return json.loads(target.read_text())


def render(groups: dict[str, Tally]) -> str:
    rows = [f"{'package':<24} {'lines':>15} {'branches':>15} {'floor':>7}"]
    for name, t in groups.items():
        floor = BRANCH_FLOORS.get(name)
        rows.append(
            f"{name:<24} {t.line_pct:6.1f}% {t.covered_lines:>4}/{t.statements:<4}"
            f"{t.branch_pct:6.1f}% {t.covered_branches:>4}/{t.branches:<4}"
            f" {'' if floor is None else f'{floor:.1f}%':>6}"
        )
    return "\n".join(rows)


def below_floor(groups: dict[str, Tally]) -> list[str]:
    return [
        f"{name}: branch coverage {groups[name].branch_pct:.1f}% is under its floor of {floor:.1f}%"
        for name, floor in BRANCH_FLOORS.items()
        if groups[name].branch_pct < floor
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-check", action="store_true", help="print the table, enforce no floor")
    args = parser.parse_args(argv)
    groups = tallies(load_report(sys.executable))
    print("\nbranch coverage per package (statements and branches measured in every process):")
    print(render(groups))
    failures = [] if args.no_check else below_floor(groups)
    for failure in failures:
        print(f"coverage: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
