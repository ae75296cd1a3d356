"""``python -m capture_ext.emulator``: same as ``capture-ext local``."""

import sys

from capture_ext.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
