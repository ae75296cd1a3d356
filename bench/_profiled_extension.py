"""``python -m capture_ext`` under cProfile, for benchmark 10's profile of where the CPU goes.

The profiler counts CPU time (not wall time: the extension spends most of its life blocked in
``/next``), and only from the first SIGUSR1 on, which the benchmark sends once start-up is over,
so imports do not crowd the invokes out. The extension leaves with ``os._exit`` after a SHUTDOWN
drain (no interpreter teardown), so the profile is written just before that exit.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    out = (argv if argv is not None else sys.argv[1:])[0]
    profiler = cProfile.Profile(time.process_time)
    real_exit = os._exit

    def dump_then_exit(code: int) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        real_exit(code)

    os._exit = dump_then_exit  # type: ignore[assignment]
    from capture_ext.__main__ import main as extension_main

    sys.argv = ["capture_ext"]
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    try:
        return extension_main()
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main())
