"""Every process of an emulated environment dies with it, whatever happens to the emulator.

Three layers, because no single one is enough without cgroups:

- each child the emulator starts carries ``LOCAL_LAMBDA_SCOPE=<emulator>/<environment>`` in
  its environment, which its descendants inherit, also those that leave its process group with
  ``setsid``: :func:`kill_scope` finds them all in ``/proc`` and resumes (``SIGCONT``) then kills
  them, so a frozen (stopped) process is never left behind;
- each child is started with ``PR_SET_PDEATHSIG`` = ``SIGKILL``: the kernel kills it the moment
  the emulator dies, even by ``SIGKILL`` (a stopped process is killed too);
- a guard process (this file, run by path with the standard library only) waits on a pipe from the
  emulator; when the emulator dies the pipe closes and the guard kills what is left in the
  emulator's scope: the grandchildren ``PR_SET_PDEATHSIG`` does not reach.

Linux only; elsewhere the first layer (process groups, ``SIGCONT`` before ``SIGKILL``) remains.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable

SCOPE_VAR = "LOCAL_LAMBDA_SCOPE"
PR_SET_PDEATHSIG = 1

#: This emulator process's scope; environments get ``<EMULATOR_SCOPE>/<n>``.
EMULATOR_SCOPE = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
_guard: subprocess.Popen[bytes] | None = None
_libc: ctypes.CDLL | None = None


def _prctl() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def die_with_parent() -> None:
    """``preexec_fn`` of every sandbox child: SIGKILL it when the emulator dies."""
    libc = _libc  # loaded before fork: nothing is imported or opened in the child
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preexec() -> Callable[[], None] | None:
    """The ``preexec_fn`` to start sandbox children with (None where prctl is unavailable)."""
    return die_with_parent if _prctl() is not None else None


def members(scope: str) -> list[int]:
    """PIDs of the processes whose environment names ``scope`` (or a scope under it)."""
    wanted = f"{SCOPE_VAR}={scope}".encode()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:  # gone, or not ours
            continue
        for item in environ.split(b"\0"):
            if item == wanted or item.startswith(wanted + b"/"):
                found.append(int(entry))
                break
    return found


def kill_scope(scope: str) -> list[int]:
    """Resume, then SIGKILL, every process in ``scope``; returns their PIDs."""
    pids = members(scope)
    for sig in (signal.SIGCONT, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    return pids


def ensure_guard() -> None:
    """Start (once per emulator process) the guard that cleans up if the emulator dies."""
    global _guard
    if _guard is not None and _guard.poll() is None:
        return
    if not sys.platform.startswith("linux"):
        return
    _guard = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            os.path.abspath(__file__),
            "--scope",
            EMULATOR_SCOPE,
            "--parent",
            f"{os.getpid()}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the emulator's terminal must not take the guard first
    )


def _guard_main(scope: str, parent: int) -> int:
    """Wait for the emulator to go (its pipe closes), then kill what is left in its scope."""
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    # Processes may still be forking: a few sweeps catch children born during the first.
    for _ in range(3):
        if not kill_scope(scope):
            break
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kill an emulator's processes when the emulator dies.")
    parser.add_argument("--scope", required=True, help="the emulator scope to clean up")
    parser.add_argument("--parent", type=int, default=0, help="the emulator's PID (for ps listings)")
    args = parser.parse_args(argv)
    return _guard_main(args.scope, args.parent)


if __name__ == "__main__":
    sys.exit(main())
