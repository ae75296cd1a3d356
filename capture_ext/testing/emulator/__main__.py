"""``python -m capture_ext.testing.emulator``: same as ``capture-ext local``."""

import sys

from capture_ext.testing.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
