"""The argument parser every capture-ext command uses: usage errors are one line, exit status 2.

Standard library only, so the report and the emulator can use it without importing each other.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2.

    argparse's own answer is a usage block followed by the error; in a terminal or a CI log the
    message that matters is then the second of several lines. The message already names the
    option and the value.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
