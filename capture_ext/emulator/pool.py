"""Scale-out: up to N execution environments of one function, started on demand, as Lambda does.

Lambda runs one environment per concurrent request: when every environment is busy, a new one
is initialised for the next request, up to the concurrency limit; beyond it, requests wait.
Each environment here is a ``LambdaEmulator`` of its own (its own Runtime API server, runtime,
extension processes) with a private ``/tmp``: on Lambda every environment has its own ``/tmp``
and its own loopback, so two capture-ext extensions never share a socket, a spool or a port.
On one machine that is emulated by giving each environment its own directory (``TMPDIR``,
capture-ext's socket and spool) and its own free ``CAPTURE_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from capture_ext.emulator.emulator import LambdaEmulator, PendingInvoke
from capture_ext.emulator.model import EmulatorConfig, InvokeResult, Reply, ShutdownReport

log = logging.getLogger(__name__)

# capture-ext's defaults under /tmp, moved into each environment's private /tmp. The socket and the
# spool can never be shared; a file sink folder the user names may be (file names carry the
# environment id), so only its default moves.
_PRIVATE = {"CAPTURE_SOCKET": "capture-ext.sock", "CAPTURE_SPOOL_DIR": "capture-ext-spool"}
_PRIVATE_DEFAULTS = {"CAPTURE_FILE_DIR": "capture-ext/files"}


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server in another process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def private_env(env: dict[str, str], tmp: Path, *, shared: bool) -> dict[str, str]:
    """``env`` as one environment sees it: its own ``TMPDIR``, socket, spool and ingest port.

    With ``shared`` False (more than one environment) values the user gave for the socket, spool
    and port are replaced too, keeping the file name, since two environments cannot share them.
    """
    out = dict(env)
    for key, name in _PRIVATE.items():
        given = env.get(key)
        if given is None or not shared:
            out[key] = str(tmp / (Path(given).name if given else name))
    for key, name in _PRIVATE_DEFAULTS.items():
        out.setdefault(key, str(tmp / name))
    out["TMPDIR"] = str(tmp)
    if not (shared and "CAPTURE_PORT" in env):
        out["CAPTURE_PORT"] = str(free_port())
    return out


@dataclass(eq=False)
class Environment:
    """One slot of the pool: its emulator, private /tmp and ingest port."""

    index: int
    emulator: LambdaEmulator
    tmp: Path
    busy: bool = False
    invokes: int = 0
    shutdown_report: ShutdownReport | None = field(default=None, repr=False)

    @property
    def capture_port(self) -> int:
        return int(self.emulator.config.env["CAPTURE_PORT"])


class PooledInvoke:
    """An invoke waiting for (then running in) a free environment; the same face as ``PendingInvoke``."""

    def __init__(self, task: asyncio.Task[PendingInvoke], request_id: str) -> None:
        self._task, self.request_id = task, request_id

    async def response(self) -> Reply:
        return await (await self._task).response()

    async def result(self) -> InvokeResult:
        return await (await self._task).result()


class EnvironmentPool:
    """Up to ``concurrency`` environments of one function, each started when all others are busy.

    Takes the arguments of ``LambdaEmulator``; ``runtime_api_port`` (if not 0) is the first
    environment's, the others take any free port.
    """

    def __init__(
        self,
        handler: str,
        task_root: str | Path,
        extensions_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        *,
        concurrency: int = 1,
        runtime_api_port: int = 0,
        **options: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._args = (handler, task_root, extensions_dir)
        self._env = dict(env or {})
        self._options = options
        self._first_port = runtime_api_port
        # Validates the options once, up front, and answers config questions (account id, ...).
        self.config = EmulatorConfig(handler=handler, task_root=Path(task_root), env=self._env, **options)
        self.environments: list[Environment] = []
        self._changed = asyncio.Condition()
        self._http: aiohttp.ClientSession | None = None

    # -- environments -------------------------------------------------------------------------
    async def _new_environment(self) -> Environment:
        index = len(self.environments)
        tmp = Path(tempfile.mkdtemp(prefix=f"capture-ext-env{index}-"))
        env = private_env(self._env, tmp, shared=self.concurrency == 1)
        port = self._first_port if index == 0 else 0
        emu = LambdaEmulator(*self._args, env, runtime_api_port=port, **self._options)
        slot = Environment(index, emu, tmp, busy=True)
        self.environments.append(slot)  # reserved before the first await: no two callers take one index
        try:
            await emu.start()
        except BaseException:
            self.environments.remove(slot)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("environment %d: Lambda APIs on http://%s, /tmp is %s", index, emu.runtime_api, tmp)
        return slot

    async def _acquire(self) -> Environment:
        async with self._changed:
            while True:
                for slot in self.environments:
                    if not slot.busy:
                        slot.busy = True
                        return slot
                if len(self.environments) < self.concurrency:
                    break
                await self._changed.wait()
        return await self._new_environment()

    async def _release(self, slot: Environment) -> None:
        async with self._changed:
            slot.busy = False
            self._changed.notify()

    async def start(self) -> Environment:
        """Open a free environment's Lambda APIs (the first one's, at the start) without initialising it."""
        slot = await self._acquire()
        await self._release(slot)
        return slot

    async def init(self) -> Environment:
        """Start and initialise one environment now (as provisioned concurrency would)."""
        slot = await self._acquire()
        try:
            await slot.emulator.init()
        finally:
            await self._release(slot)
        return slot

    # -- invokes ------------------------------------------------------------------------------
    def start_invoke(self, event: Any, **kwargs: Any) -> PooledInvoke:
        """Run the invoke in a free environment (a new one if all are busy and the limit allows)."""
        request_id = kwargs.pop("request_id", None) or str(uuid.uuid4())
        task = asyncio.create_task(self._dispatch(event, request_id, kwargs))
        return PooledInvoke(task, request_id)

    async def _dispatch(self, event: Any, request_id: str, kwargs: dict[str, Any]) -> PendingInvoke:
        slot = await self._acquire()
        slot.invokes += 1
        pending = slot.emulator.start_invoke(event, request_id=request_id, **kwargs)

        async def release_when_over() -> None:
            # The environment is busy until its invoke phase ends: extensions back in /next.
            with contextlib.suppress(Exception):
                await pending.result()
            await self._release(slot)

        task = asyncio.create_task(release_when_over())
        _keep.add(task)
        task.add_done_callback(_keep.discard)
        return pending

    async def invoke(self, event: Any, **kwargs: Any) -> InvokeResult:
        return await self.start_invoke(event, **kwargs).result()

    # -- looking inside -----------------------------------------------------------------------
    async def health(self) -> list[dict[str, Any]]:
        """Each idle environment's capture-ext ``/v1/health``, read with the sandbox thawed for the call.

        Between invokes Lambda freezes the sandbox, so a plain ``curl .../v1/health`` hangs until
        the next invoke; this thaws an idle environment just long enough to ask.
        """
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        session, answers = self._http, []
        for slot in list(self.environments):
            entry: dict[str, Any] = {"environment": slot.index, "invokes": slot.invokes, "busy": slot.busy}

            async def ask(port: int = slot.capture_port) -> Any:
                async with session.get(f"http://127.0.0.1:{port}/v1/health") as r:
                    return await r.json(content_type=None)

            try:
                entry["health"] = await slot.emulator.thawed(ask)
            except Exception as exc:  # an environment without capture-ext, or one that is gone
                entry["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            answers.append(entry)
        return answers

    # -- shutdown -----------------------------------------------------------------------------
    def interrupt(self, message: str = "the emulator was interrupted") -> None:
        """Ctrl-C: end every environment now; invokes in flight are answered with an error at once."""
        for slot in self.environments:
            slot.emulator.interrupt(message)

    async def shutdown(self, reason: str = "spindown") -> list[ShutdownReport]:
        """SHUTDOWN every environment at once, as a scale-in of all of them would."""
        reports = await asyncio.gather(*(slot.emulator.shutdown(reason) for slot in self.environments))
        for slot, report in zip(self.environments, reports, strict=True):
            slot.shutdown_report = report
        return [r for r in reports if r is not None]

    async def close(self) -> None:
        """Shut down, stop every API server and remove the private /tmp directories."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        await asyncio.gather(*(slot.emulator.close() for slot in self.environments))
        for slot in self.environments:
            shutil.rmtree(slot.tmp, ignore_errors=True)

    async def __aenter__(self) -> EnvironmentPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what happened ------------------------------------------------------------------------
    @property
    def results(self) -> list[InvokeResult]:
        return [r for slot in self.environments for r in slot.emulator.results]

    def logs(self, name: str) -> list[str]:
        return [line for slot in self.environments for line in slot.emulator.logs(name)]


_keep: set[asyncio.Task[None]] = set()
