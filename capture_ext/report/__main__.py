"""``python -m capture_ext.report``: the same entry point locally and in a SageMaker Processing job."""

from __future__ import annotations

import sys

from capture_ext.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
