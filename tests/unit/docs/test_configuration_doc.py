"""docs/configuration.md carries the variables tables generated from the declarations, exactly."""

import re
from pathlib import Path

from capture_ext.core.config import VARIABLES
from capture_ext.core.config_check import builtin_sink_variables
from capture_ext.variables import markdown_table

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
REGENERATE = "regenerate with: python -m capture_ext.core.config --markdown"


def block(marker: str) -> str:
    found = re.search(rf"<!-- BEGIN {marker} -->\n(.*?)\n<!-- END {marker} -->", DOC.read_text(), re.S)
    assert found, f"docs/configuration.md lost its generated {marker} block"
    return found.group(1)


def test_the_core_variables_table_is_the_generated_one():
    assert block("VARIABLES") == markdown_table(VARIABLES), REGENERATE


def test_the_sink_variables_table_is_what_the_builtin_sinks_register():
    variables, used_by = builtin_sink_variables()
    assert {"CAPTURE_S3_BUCKET", "CAPTURE_LOG_GROUP", "CAPTURE_FIREHOSE_STREAM", "CAPTURE_FILE_DIR"} <= set(used_by)
    assert used_by["CAPTURE_S3_BUCKET"] == ["s3_jsonl", "s3_parquet"]
    assert block("SINK VARIABLES") == markdown_table(variables, used_by), REGENERATE


def test_every_variable_read_by_the_package_is_in_a_table():
    documented = {var.name for var in VARIABLES} | {var.name for var in builtin_sink_variables()[0]}
    root = Path(__file__).resolve().parents[3] / "capture_ext"
    used = set()
    for path in root.rglob("*.py"):
        if "testing" in path.parts:
            continue
        used |= set(re.findall(r"\b(CAPTURE_[A-Z0-9_]+)\b", path.read_text()))
    used -= {"CAPTURE_EXT_HOME", "CAPTURE_EXT_PYTHON"}  # the launcher's own, documented below the table
    assert used <= documented, f"read but not declared by core or a built-in sink: {sorted(used - documented)}"
