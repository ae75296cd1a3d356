"""The extension as a real separate process, driven through the fake Lambda API, and killable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI
from tests.helpers import coverage_env

ROOT = Path(__file__).resolve().parents[2]


class ExtensionProcess:
    """One ``python -m capture_ext`` with its own fake Extensions API; a restart is a new instance."""

    def __init__(self, workdir: Path, env: dict[str, str], log_name: str = "extension") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SOCKET": str(workdir / "capture.sock"),
            "CAPTURE_SPOOL_DIR": str(workdir / "spool"),
            "CAPTURE_METRICS": "0",
            "AWS_LAMBDA_FUNCTION_NAME": "faults-fn",
            **coverage_env(),
            **env,
        }
        self.api = FakeLambdaAPI(function_name="faults-fn")
        self.log_path = workdir / f"{log_name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.http: aiohttp.ClientSession | None = None

    def _spawn(self, address: str) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "capture_ext"],
                env={**self.env, "AWS_LAMBDA_RUNTIME_API": address},
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )

    async def start(self) -> ExtensionProcess:
        address = await self.api.start()
        self._spawn(address)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await self.api.wait_idle(timeout=30)
        return self

    async def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.http is not None:
            await self.http.close()
        await self.api.stop()

    # -- platform side ----------------------------------------------------------------------------
    async def invoke(self) -> str:
        return await self.api.invoke()

    async def done(self, request_id: str) -> None:
        await self.api.runtime_done(request_id)

    async def cycle(self) -> None:
        """One invoke that posts nothing: gives a due flush its turn."""
        request_id = await self.invoke()
        await self.done(request_id)
        await self.api.wait_idle(timeout=30)

    async def shutdown(self, budget_ms: float) -> tuple[int | None, float]:
        """Send SHUTDOWN; SIGKILL at the deadline as Lambda does. Returns (exit code, seconds left)."""
        await self.api.shutdown(budget_ms)
        deadline = time.monotonic() + budget_ms / 1000
        assert self.proc is not None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code, deadline - time.monotonic()
            await asyncio.sleep(0.005)
        self.proc.kill()
        self.proc.wait(5)
        return None, 0.0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    # -- function side ----------------------------------------------------------------------------
    async def post(self, records: list[dict[str, Any]]) -> int:
        assert self.http is not None
        async with self.http.post(f"{self.url}/v1/records", json=records) as response:
            await response.read()
            return response.status

    async def health(self) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(f"{self.url}/v1/health") as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def assert_reconciled(health: dict[str, Any]) -> None:
    for name, sink in health["sinks"].items():
        total = sink["delivered"] + sink["buffered"] + sink["spooled"] + sum(sink["dropped"].values())
        assert sink["reconciled"] and total == sink["received"], (name, sink)
