"""pytest fixtures that capture-ext offers to its own tests and to plugin authors.

Use it with ``pytest_plugins = ["capture_ext.testing.pytest_plugin"]`` in a ``conftest.py``.
"""

# -- local AWS (moto server mode) -------------------------------------------------------------
# moto and boto3 are imported inside the fixtures, so loading this plugin stays cheap for
# test runs that never touch AWS.
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

# The sink contract kit asserts in a library module: have pytest rewrite it so that a failing
# contract test shows the values. Plugin authors get this by loading this plugin.
pytest.register_assert_rewrite("capture_ext.testing.contract")

if TYPE_CHECKING:
    from capture_ext.testing.aws import AwsHelper, MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator["MotoServer"]:
    """One moto server (S3, CloudWatch Logs, Firehose, ...) on a free loopback port per session."""
    from capture_ext.testing.aws import MotoServer

    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_reset(moto_server: "MotoServer") -> "MotoServer":
    """Empty the moto server before the test; make it autouse in your conftest if you like."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def aws_env(moto_reset: "MotoServer", monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point botocore at a fresh moto: AWS_ENDPOINT_URL, dummy credentials, us-east-1.

    Returns the variables set (also usable as a sink's ``SinkContext.env``).
    """
    env = moto_reset.env()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def aws(aws_env: dict[str, str]) -> "AwsHelper":
    """Create buckets/log groups/delivery streams and read back what a sink wrote."""
    from capture_ext.testing.aws import AwsHelper

    return AwsHelper(aws_env["AWS_ENDPOINT_URL"], aws_env["AWS_REGION"])


# -- local Lambda (capture_ext.emulator) ----------------------------------------------
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from capture_ext.emulator import LambdaEmulator


@pytest_asyncio.fixture
async def lambda_emulator() -> "AsyncIterator[Callable[..., Awaitable[LambdaEmulator]]]":
    """Factory for started local Lambdas: ``emu = await lambda_emulator("app.handler", task_root, ext_dir, env)``.

    Takes ``LambdaEmulator``'s arguments. Every emulator made is shut down (SHUTDOWN, then SIGKILL
    of whatever is left) and its API server stopped when the test ends, even when it fails.
    """
    from capture_ext.emulator import LambdaEmulator

    started: list[LambdaEmulator] = []

    async def make(*args: object, **kwargs: object) -> LambdaEmulator:
        emulator = LambdaEmulator(*args, **kwargs)  # type: ignore[arg-type]
        await emulator.start()
        started.append(emulator)
        return emulator

    try:
        yield make
    finally:
        for emulator in reversed(started):
            await emulator.close()
