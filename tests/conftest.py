"""Shared fixtures: the public ones from capture_ext.testing plus test-suite helpers."""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fakes.webhook import WebhookReceiver

pytest_plugins = ["capture_ext.testing.pytest_plugin"]


@pytest.fixture
async def receiver() -> AsyncIterator["WebhookReceiver"]:
    """A running webhook endpoint for the example webhook plugin (``receiver.url``)."""
    from tests.fakes.webhook import WebhookReceiver  # aiohttp only for the tests that use it

    server = WebhookReceiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
