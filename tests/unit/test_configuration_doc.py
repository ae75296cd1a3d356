"""docs/configuration.md carries the variables table generated from the code, exactly."""

import re
from pathlib import Path

from capture_ext.core.config import VARIABLES, markdown_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_variables_table_in_the_docs_is_the_generated_one():
    text = DOC.read_text()
    block = re.search(r"<!-- BEGIN VARIABLES -->\n(.*?)\n<!-- END VARIABLES -->", text, re.S)
    assert block, "docs/configuration.md lost its generated variables block"
    assert block.group(1) == markdown_table(), "regenerate with: python -m capture_ext.core.config --markdown"


def test_every_variable_read_by_the_package_is_in_the_table():
    documented = {var.name for var in VARIABLES}
    root = Path(__file__).resolve().parents[2] / "capture_ext"
    used = set()
    for path in root.rglob("*.py"):
        if "testing" in path.parts:
            continue
        used |= set(re.findall(r"\b(CAPTURE_[A-Z0-9_]+)\b", path.read_text()))
    used -= {"CAPTURE_EXT_HOME", "CAPTURE_EXT_PYTHON"}  # the launcher's own, documented below the table
    assert used <= documented, f"read but not in VARIABLES: {sorted(used - documented)}"
