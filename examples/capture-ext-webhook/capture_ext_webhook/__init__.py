"""capture-ext sink plugin ``webhook``: POST each batch as one JSON document to an HTTP endpoint.

The plugin is this module: capture-ext finds it through the ``capture_ext`` entry point and
calls :func:`capture_register_sinks` once at start-up. Everything else happens in the sink.
"""

from __future__ import annotations

from capture_ext import hookimpl
from capture_ext.models import SinkRegistrar
from capture_ext_webhook.sink import WebhookConfig, WebhookSink

__all__ = ["WebhookConfig", "WebhookSink", "capture_register_sinks"]


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    # The class is the factory: WebhookSink(ctx) reads its CAPTURE_WEBHOOK_* settings. The variables
    # are declared once, by WebhookConfig; `capture-ext plugins` lists them from here.
    register("webhook", WebhookSink, variables=WebhookConfig.variables())
