"""The webhook sink passes the capture-ext sink contract against a real HTTP receiver."""

from __future__ import annotations

from typing import Any

import pytest
from capture_ext_webhook import WebhookSink
from conftest import Receiver

from capture_ext.models import Outcome
from capture_ext.testing.contract import SinkContract


class TestWebhookContract(SinkContract):
    sink_name = "webhook"  # also checks the installed entry point
    breakages = ("unavailable", "throttled", "receiver_down", "rejected", "unauthorized")

    @pytest.fixture(autouse=True)
    def _receiver(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def make_sink(self) -> WebhookSink:
        return WebhookSink(self.context("webhook", env={"CAPTURE_WEBHOOK_URL": self.receiver.url}))

    async def read_back(self) -> list[dict[str, Any]]:
        return self.receiver.records()

    async def break_sink(self, breakage: str) -> Outcome:
        if breakage == "receiver_down":
            self.receiver.stop()  # connection refused
            return Outcome.RETRYABLE
        status, outcome = {
            "unavailable": (503, Outcome.RETRYABLE),
            "throttled": (429, Outcome.RETRYABLE),
            "rejected": (400, Outcome.FATAL),
            "unauthorized": (401, Outcome.FATAL),
        }[breakage]
        self.receiver.failure = (status, {"Retry-After": "1"} if status == 429 else {})
        return outcome

    async def heal_sink(self, breakage: str) -> None:
        self.receiver.failure = None
        if self.receiver.server is None:
            self.receiver.start()  # same port again
