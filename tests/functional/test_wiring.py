"""Start-up and clean-up: resources open in order and close in reverse, also when one cannot open.

Real components throughout: the extension in-process against the fake Lambda API, a real spool
directory, the ``file`` sink, real listeners; the order is read from the wiring's own debug lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from capture_ext.client import CaptureClient
from capture_ext.testing.net import free_port
from tests.fakes.lambda_api import FakeLambdaAPI
from tests.helpers import read_file_sink, start_extension

#: What start-up opens, in order (the Extensions API connection comes with registration, first).
OPENED_IN_ORDER = ["Extensions API", "spool", "sinks", "Telemetry listener", "ingest endpoint", "capture socket"]


def _env(tmp_path: Path, address: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_LAMBDA_RUNTIME_API": address,
        "CAPTURE_SINKS": "file",
        "CAPTURE_FILE_DIR": str(tmp_path / "out"),
        "CAPTURE_SPOOL_DIR": str(tmp_path / "spool"),
        "CAPTURE_PORT": str(free_port()),
        "CAPTURE_SOCKET": str(tmp_path / "capture.sock"),
        "CAPTURE_METRICS": "0",
        **extra,
    }


def _steps(caplog: pytest.LogCaptureFixture, verb: str) -> list[str]:
    """The resources named by the wiring's ``opened …``/``closed …`` lines, in log order."""
    names = OPENED_IN_ORDER
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{verb} the ")]
    return [next(n for n in names if n in line) for line in lines]


def _open_files_under(directory: Path) -> list[str]:
    """Files this process holds open under ``directory`` (the spool's segments and locks)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held


async def test_resources_open_in_order_and_close_in_reverse_after_shutdown(tmp_path, caplog):
    api = FakeLambdaAPI()
    address = await api.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="capture_ext"):
            extension = await start_extension(_env(tmp_path, address))
            task = asyncio.create_task(extension.run())
            await api.wait_idle()
            assert _steps(caplog, "opened") == OPENED_IN_ORDER
            assert _steps(caplog, "closed") == []
            client = CaptureClient(socket_path=str(tmp_path / "capture.sock"), port=0)
            request_id = await api.invoke()
            client.capture(input="kept", request_id=request_id)
            client.close()
            await api.runtime_done(request_id)
            await api.wait_idle()
            await api.shutdown(1700)
            assert await asyncio.wait_for(task, 5) == 0
        assert _steps(caplog, "closed") == list(reversed(OPENED_IN_ORDER))
        assert extension.shut_down
        assert [r["input"] for r in read_file_sink(tmp_path / "out")] == ["kept"]
        assert not (tmp_path / "capture.sock").exists()
        assert _open_files_under(tmp_path / "spool") == []
    finally:
        await api.stop()


def _busy_port(tmp_path: Path, holder: socket.socket) -> dict[str, str]:
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return {"CAPTURE_PORT": str(holder.getsockname()[1])}


def _impossible_socket(tmp_path: Path, holder: socket.socket) -> dict[str, str]:
    (tmp_path / "a-file").write_text("")
    return {"CAPTURE_SOCKET": str(tmp_path / "a-file" / "capture.sock")}  # its directory is a file


@pytest.mark.parametrize(
    ("breaks", "failed", "names"),
    [
        (_busy_port, "ingest endpoint", "(CAPTURE_PORT)"),
        (_impossible_socket, "capture socket", "(CAPTURE_SOCKET)"),
    ],
    ids=["busy port", "socket directory is a file"],
)
async def test_a_resource_that_cannot_open_closes_the_others_in_reverse_and_the_function_runs_on(
    tmp_path, caplog, breaks, failed, names
):
    api = FakeLambdaAPI()
    address = await api.start()
    holder = socket.socket()
    try:
        with caplog.at_level(logging.DEBUG, logger="capture_ext"):
            extension = await start_extension(_env(tmp_path, address, **breaks(tmp_path, holder)))
            task = asyncio.create_task(extension.run())
            await api.wait_idle()  # still registered and in /next: Lambda's init goes on
            opened = OPENED_IN_ORDER[: OPENED_IN_ORDER.index(failed)]
            assert _steps(caplog, "opened") == opened
            assert _steps(caplog, "closed") == list(reversed(opened))[:-1]  # the API stays, for /next
            (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert f"could not open the {failed}" in error and names in error and "\n" not in error
            assert extension.runtime is None
            assert _open_files_under(tmp_path / "spool") == []
            for _ in range(2):  # invokes go on, capturing nothing and waiting for nothing
                await api.invoke()
                await api.wait_idle()
            await api.shutdown(1700)
            assert await asyncio.wait_for(task, 5) == 0
        assert _steps(caplog, "closed") == [*list(reversed(opened))[:-1], "Extensions API"]
        assert api.init_errors == []
    finally:
        holder.close()
        await api.stop()


async def test_strict_mode_turns_a_resource_that_cannot_open_into_an_init_error(tmp_path, caplog):
    api = FakeLambdaAPI()
    address = await api.start()
    holder = socket.socket()
    try:
        env = _env(tmp_path, address, CAPTURE_STRICT="1", **_busy_port(tmp_path, holder))
        with caplog.at_level(logging.DEBUG, logger="capture_ext"):
            code = await asyncio.wait_for((await start_extension(env)).run(), 10)
        assert code == 1
        (error,) = api.init_errors
        assert error["type"] == "Extension.StartError"
        assert "could not open the ingest endpoint" in error["body"]["errorMessage"]
        assert _steps(caplog, "closed") == list(reversed(OPENED_IN_ORDER[:4]))
        assert _open_files_under(tmp_path / "spool") == []
    finally:
        holder.close()
        await api.stop()
