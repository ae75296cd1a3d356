"""The ``webhook`` sink: one HTTP POST per batch, classified into ok / retryable / fatal.

Standard library only (``http.client`` in a worker thread): a sink that ships in a Lambda layer
should add as little as possible to cold start and to the layer. The blocking request runs in
``asyncio.to_thread`` so the extension's event loop keeps accepting records meanwhile.

The sink never retries and never sleeps: it says what happened and capture-ext's dispatcher
decides (backoff, ``Retry-After``, deadline). Because a request cancelled by the dispatcher's
deadline may still reach the receiver, every request carries ``Idempotency-Key: <batch_id>``
and retries send byte-identical bodies.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass

from capture_ext.models import Batch, SinkContext, WriteResult
from capture_ext.variables import ConfigError, EnvConfig, positive_number, setting

#: Answers worth another attempt: timeout, conflict (a request with this key is in flight),
#: too early, throttled. Every 5xx is retryable too.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class WebhookConfig(EnvConfig):
    """The sink's settings: each field declares its ``CAPTURE_WEBHOOK_*`` variable once.

    ``WebhookConfig.from_env(ctx.env)`` reads and validates them (one :class:`ConfigError` naming
    every bad variable); ``from_env(env, url=...)`` lets an argument win over the environment.
    ``WebhookConfig.variables()`` is what the plugin registers, so ``capture-ext plugins`` lists them.
    """

    url: str = setting(
        "CAPTURE_WEBHOOK_URL", "", "`http://` or `https://` URL the batches are POSTed to.", required=True
    )
    token: str = setting("CAPTURE_WEBHOOK_TOKEN", "", "Sent as `Authorization: Bearer <token>`.", secret=True)
    timeout_s: float = setting(
        "CAPTURE_WEBHOOK_TIMEOUT_S", "5", "Seconds for connecting plus the whole response.", positive_number
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.strip())
        parts = urllib.parse.urlsplit(self.url)
        if self.url and (parts.scheme not in {"http", "https"} or not parts.hostname):
            raise ConfigError(f"CAPTURE_WEBHOOK_URL={self.url!r} is not an http:// or https:// URL")


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class WebhookSink:
    """POSTs ``{"batch_id", "environment_id", "sequence", "records"}`` to ``CAPTURE_WEBHOOK_URL``."""

    def __init__(self, ctx: SinkContext, config: WebhookConfig | None = None) -> None:
        self.name = ctx.name
        self.config = config or WebhookConfig.from_env(ctx.env)
        self.logger = ctx.logger
        self.closed = False

    async def start(self) -> None:
        """Nothing to open: each batch uses its own short-lived connection."""

    async def write_batch(self, batch: Batch) -> WriteResult:
        if self.closed:
            return WriteResult.fatal(f"{self.name}: write_batch after close()")
        if not batch.records:
            return WriteResult.ok()
        body = json.dumps(
            {
                "batch_id": batch.batch_id,
                "environment_id": batch.environment_id,
                "sequence": batch.sequence,
                "records": batch.records,
            },
            ensure_ascii=False,
            default=str,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": batch.batch_id,
            "X-Capture-Attempt": str(batch.attempt),
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        try:
            status, reason, retry_after = await asyncio.to_thread(self._post, body, headers)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, DNS, timeout
            return WriteResult.retryable(f"{self.name}: POST {self._where()} failed: {type(exc).__name__}: {exc}")
        return self.classify(status, reason, retry_after)

    def classify(self, status: int, reason: str, retry_after: str | None) -> WriteResult:
        """Map an HTTP answer to a :class:`WriteResult`."""
        if 200 <= status < 300:
            return WriteResult.ok()
        error = f"{self.name}: POST {self._where()} answered {status} {reason}".rstrip()
        if status in RETRYABLE_STATUS or status >= 500:
            return WriteResult.retryable(error, retry_after_s=retry_after_s(retry_after))
        if 300 <= status < 400:
            error += " (redirects are not followed: set CAPTURE_WEBHOOK_URL to the final URL)"
        elif status in {401, 403}:
            error += " (check CAPTURE_WEBHOOK_TOKEN)"
        return WriteResult.fatal(error)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, str | None]:
        """The blocking request; runs in a worker thread."""
        parts = urllib.parse.urlsplit(self.config.url)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname or "", parts.port, timeout=self.config.timeout_s)
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()  # drain, so the server sees a clean close
            return response.status, response.reason, response.getheader("Retry-After")
        finally:
            connection.close()

    def _where(self) -> str:
        """The URL without credentials or query string, safe for logs."""
        parts = urllib.parse.urlsplit(self.config.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    async def close(self, timeout_s: float) -> None:
        """Idempotent. A request still in flight finishes (or times out) on its own."""
        self.closed = True
