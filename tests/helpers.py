"""Small helpers several test modules need the same way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capture_ext.core.lifecycle import Extension

#: What coverage.py needs in a child's environment to measure it (see [tool.coverage.run]).
COVERAGE_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def coverage_env() -> dict[str, str]:
    """The coverage variables of this process, for a child started with an environment built from scratch."""
    return {name: os.environ[name] for name in COVERAGE_VARIABLES if name in os.environ}


def read_file_sink(directory: Path) -> list[dict[str, Any]]:
    """Every record the ``file`` sink wrote under ``directory``, file by file in name order.

    Strict on purpose: a blank or torn line fails the test (the sink writes whole lines only).
    """
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


def install_dist(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """What ``pip install --target`` leaves for plugin discovery: a dist-info with entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[capture_ext]\n{lines}")


async def start_extension(env: dict[str, str], name: str = "capture-ext") -> Extension:
    """An in-process extension registered as ``__main__`` registers it (the one registration path,
    blocking, so off the loop the fake Lambda API runs on)."""
    from capture_ext.core.config import Settings
    from capture_ext.core.lifecycle import Extension
    from capture_ext.core.registration import register_blocking

    address = env["AWS_LAMBDA_RUNTIME_API"]
    registration = await asyncio.to_thread(register_blocking, address, name)
    return Extension(Settings.from_env(env), registration, address, env=env)


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to a local HTTP server and read its answer until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()  # until the server closes
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
