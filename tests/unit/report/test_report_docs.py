"""docs/report.md keeps up with the command: every option, every exit code, every threshold."""

from __future__ import annotations

import re
from pathlib import Path

from capture_ext.report import cli, drift

DOC = (Path(__file__).resolve().parents[3] / "docs" / "report.md").read_text(encoding="utf-8")


def test_every_option_is_documented() -> None:
    options = {opt for action in cli.build_parser()._actions for opt in action.option_strings if opt.startswith("--")}
    options -= {"--help", "--verbose"}
    missing = sorted(o for o in options if f"`{o}" not in DOC and f"{o} " not in DOC)
    assert not missing, f"docs/report.md does not mention {missing}"


def test_exit_code_table_matches_the_code() -> None:
    table = dict(re.findall(r"^\| (\d) \| (.+?) \|$", DOC, flags=re.M))
    assert set(table) == {"0", "1", "2", "3", "4"}
    assert "drift detected" in table[str(cli.EXIT_DRIFT)]
    assert "no report" in table[str(cli.EXIT_NO_DATA)]
    assert "data-quality" in table[str(cli.EXIT_QUALITY)]
    assert "argparse" in table[str(cli.EXIT_USAGE)]
    assert "no violations" in table[str(cli.EXIT_OK)]


def test_thresholds_and_check_types_in_the_docs_are_the_defaults() -> None:
    assert f"p < {drift.P_VALUE}" in DOC and f"≥ {drift.DISTANCE}" in DOC
    assert f"≤ {drift.SMALL_SAMPLE:,}" in DOC
    for check in (drift.DRIFT, drift.COMPLETENESS, drift.DATA_TYPE, drift.MISSING_COLUMN, drift.EXTRA_COLUMN):
        assert f"`{check}`" in DOC
