"""The sandbox's processes: extensions and the runtime, each in its own process group.

Each child gets its own session so that signals reach whatever it spawns (a bash launcher that
does not ``exec``, a Python child): freezing sends SIGSTOP to the whole group, as Lambda freezes
the whole sandbox. Every process of an environment, also one that left its group with ``setsid``,
is in the environment's scope (:mod:`capture_ext.emulator.scope`): killing resumes and kills the
whole scope, and the scope dies with the emulator even when the emulator is SIGKILLed. Output is
read line by line (a line longer than :data:`MAX_LINE_BYTES` is split into several, none is cut)
and the last :data:`KEPT_LINES` are kept per process, so tests can read what an extension
printed; each line is forwarded to a callback that turns it into ``function``/``extension``
telemetry records.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from capture_ext.emulator import scope
from capture_ext.emulator.model import EmulatorConfig

log = logging.getLogger(__name__)

#: A longer line is passed on in pieces of this many bytes (the reader's limit), never cut.
MAX_LINE_BYTES = 64 * 1024
#: Lines of output kept per process for :meth:`LambdaEmulator.lines`; older ones are dropped.
KEPT_LINES = 10_000
#: How long output is still read after a process exited (a descendant may hold its pipe).
DRAIN_AFTER_EXIT_S = 0.5
_environments = itertools.count(1)

LineSink = Callable[["SandboxProcess", str, str], None]
ExitSink = Callable[["SandboxProcess"], None]

# What Lambda removes from the function's environment before starting an extension (docs/emulator.md).
_EXTENSION_DROPPED = frozenset(
    {
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
    }
)


def function_environment(cfg: EmulatorConfig, runtime_api: str) -> dict[str, str]:
    """The variables Lambda sets for a Python function, then the function's own configuration.

    In RIE mode the whole environment of the emulator is inherited and only the variables RIE
    itself sets are added, as RIE starts its children with its own environment.
    """
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    both = {
        "AWS_LAMBDA_FUNCTION_NAME": cfg.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": cfg.function_version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(cfg.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{cfg.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[{cfg.function_version}]{uuid.uuid4().hex}",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "_HANDLER": cfg.handler,
    }
    if cfg.rie:
        return {**os.environ, **both, **cfg.env}
    inherited = {k: os.environ[k] for k in cfg.inherit_env if k in os.environ}
    return {
        **inherited,
        **both,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": cfg.region,
        "AWS_DEFAULT_REGION": cfg.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
        "LAMBDA_TASK_ROOT": str(cfg.task_root),
        "LAMBDA_RUNTIME_DIR": str(os.path.dirname(cfg.python)),
        "TZ": ":UTC",
        **cfg.env,
    }


def extension_environment(function_env: Mapping[str, str], *, rie: bool = False) -> dict[str, str]:
    """The function's environment as Lambda hands it to extensions: minus the runtime-only keys and every ``_*``.

    RIE only withholds ``_HANDLER``: an extension there sees everything RIE was started with.
    """
    if rie:
        return {k: v for k, v in function_env.items() if k != "_HANDLER"}
    return {k: v for k, v in function_env.items() if k not in _EXTENSION_DROPPED and not k.startswith("_")}


def discover_extensions(extensions_dir: Path | None) -> list[Path]:
    """Executables Lambda would start from ``/opt/extensions``: regular files, in name order, directories skipped."""
    if extensions_dir is None or not extensions_dir.is_dir():
        return []
    found = []
    for path in sorted(extensions_dir.iterdir(), key=lambda p: p.name):
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise PermissionError(f"extension {path} is not executable (chmod +x it, as the layer zip keeps modes)")
            found.append(path)
    return found


@dataclass(eq=False)
class SandboxProcess:
    """One child of the sandbox and everything it printed."""

    name: str
    kind: str  # "extension" | "runtime"
    proc: asyncio.subprocess.Process
    started_at: float = field(default_factory=time.monotonic)
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    expected_exit: bool = False
    killed: bool = False
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _waiter: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def signal_group(self, sig: int) -> None:
        """Signal the whole process group; a child that already went away is not an error."""
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the group, resumed first: a frozen group must not stay stopped if the kill is missed."""
        self.killed = True
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGKILL)

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for exit (and for its output to be read); True when it exited in time."""
        try:
            await asyncio.wait_for(asyncio.shield(self._finished()), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _finished(self) -> None:
        if self._waiter is not None:
            await self._waiter


class ProcessSet:
    """Starts, freezes, thaws and kills the processes of one execution environment."""

    def __init__(self, on_line: LineSink, on_exit: ExitSink) -> None:
        self._on_line = on_line
        self._on_exit = on_exit
        self.processes: list[SandboxProcess] = []
        self.frozen = False
        #: Every process started here, and their descendants, carry this scope.
        self.scope = f"{scope.EMULATOR_SCOPE}/{next(_environments)}"

    async def start(
        self, name: str, kind: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> SandboxProcess:
        scope.ensure_guard()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**env, scope.SCOPE_VAR: self.scope},
            cwd=str(cwd) if cwd else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=scope.preexec(),
            limit=MAX_LINE_BYTES,
        )
        child = SandboxProcess(name=name, kind=kind, proc=proc)
        assert proc.stdout is not None and proc.stderr is not None
        child._readers = [
            asyncio.create_task(self._pump(child, proc.stdout, "stdout")),
            asyncio.create_task(self._pump(child, proc.stderr, "stderr")),
        ]
        child._waiter = asyncio.create_task(self._watch(child))
        self.processes.append(child)
        log.debug("started %s %s pid=%d: %s", kind, name, proc.pid, " ".join(argv))
        return child

    async def _pump(self, child: SandboxProcess, stream: asyncio.StreamReader, label: str) -> None:
        pending = b""
        while True:
            try:
                raw = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:  # end of output without a final newline
                raw = exc.partial
            except asyncio.LimitOverrunError as exc:  # no newline within the limit: pass a piece on
                raw = await stream.readexactly(min(exc.consumed, MAX_LINE_BYTES) or MAX_LINE_BYTES)
                pending += raw
                raw = b""
                while len(pending) >= MAX_LINE_BYTES:
                    piece, pending = _split_utf8(pending, MAX_LINE_BYTES)
                    self._line(child, label, piece)
                continue
            if not raw and not pending:
                return
            data, pending = pending + raw, b""
            while len(data) > MAX_LINE_BYTES + 1:  # + 1: the newline
                piece, data = _split_utf8(data, MAX_LINE_BYTES)
                self._line(child, label, piece)
            self._line(child, label, data)
            if not raw.endswith(b"\n"):
                return  # that was the end of the stream

    def _line(self, child: SandboxProcess, label: str, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        child.lines.append(line)
        self._on_line(child, label, line)

    async def _watch(self, child: SandboxProcess) -> None:
        await child.proc.wait()
        # A descendant (a daemon, a `setsid` child) may hold the pipes open: stop reading soon.
        _, late = await asyncio.wait(child._readers, timeout=DRAIN_AFTER_EXIT_S)
        for reader in late:
            reader.cancel()
        await asyncio.gather(*child._readers, return_exceptions=True)
        log.debug("%s %s exited with %s", child.kind, child.name, child.proc.returncode)
        self._on_exit(child)

    def alive(self, kind: str | None = None) -> list[SandboxProcess]:
        return [p for p in self.processes if p.alive and (kind is None or p.kind == kind)]

    def freeze(self) -> None:
        """SIGSTOP every process group: timers, threads and sockets all stop, as on Lambda between invokes."""
        for child in self.alive():
            child.signal_group(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        for child in self.processes:
            child.signal_group(signal.SIGCONT)
        self.frozen = False

    async def kill_all(self) -> None:
        """Kill every process of the environment, descendants that left their group included."""
        for child in self.alive():
            child.expected_exit = True
            child.kill()
        stray = scope.kill_scope(self.scope)
        if stray:
            log.info("killed %d processes left in the environment's scope: %s", len(stray), stray)
        await asyncio.gather(*(p.wait(5.0) for p in self.processes))


def _split_utf8(data: bytes, size: int) -> tuple[bytes, bytes]:
    """``data[:size]`` moved back to a UTF-8 character boundary, and the rest."""
    if len(data) <= size:
        return data, b""
    cut = size
    while cut > size - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    if cut <= size - 4 or cut == 0:
        cut = size
    return data[:cut], data[cut:]
