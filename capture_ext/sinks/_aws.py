"""Shared plumbing of the AWS sinks: one lazily created aioboto3 client, and error classification.

Why a client per sink, created on first use: creating a botocore client costs ~25-180 ms (it
loads the service model), so doing it at extension start-up would add to cold start even when
nothing is captured, and doing it per flush would add it to every flush. ``aioboto3`` and
``botocore`` are imported here only inside functions, so importing a sink module stays cheap.

botocore's own retries are switched off: the dispatcher owns retries (backoff, deadlines,
resending only failed records). A second retry loop underneath would multiply attempts and
blow the SHUTDOWN budget. Timeouts are short for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from capture_ext.models import Batch, WriteResult

#: Seconds to open a TCP/TLS connection; a Lambda reaches its Region's endpoints in milliseconds.
CONNECT_TIMEOUT_S = 2.0
#: Seconds to wait between response bytes; a 5 MiB PutObject needs more than a tiny PutLogEvents.
READ_TIMEOUT_S = 10.0

#: Error codes that mean "try again later" whatever their HTTP status.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "OperationAbortedException",
        "OperationAborted",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
#: Error codes that mean "the configuration or the permissions are wrong": retrying cannot help.
PERMISSION_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "KMS.AccessDeniedException",
        "KMS.DisabledException",
        "KMS.NotFoundException",
    }
)


def endpoint_url(env: Mapping[str, str], service_env_name: str) -> str | None:
    """The endpoint botocore would use from the environment (service-specific first).

    Read from the sink's ``env`` rather than left to botocore's ``os.environ`` lookup, so that a
    sink built with an explicit environment (tests, embedding) talks to what it was told.
    """
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return env.get(f"AWS_ENDPOINT_URL_{service_env_name}") or env.get("AWS_ENDPOINT_URL") or None


class LazyClient:
    """One long-lived aioboto3 client, opened on first use and closed once.

    Not a pool: the dispatcher never calls ``write_batch`` concurrently on one sink, and botocore
    clients multiplex concurrent calls over their own connection pool anyway.
    """

    def __init__(self, service: str, env: Mapping[str, str], region: str, service_env_name: str) -> None:
        self.service = service
        self._env = env
        self._region = region
        self._service_env_name = service_env_name
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._open()
        return self._client

    async def _open(self) -> Any:
        import aioboto3
        from botocore.config import Config

        env = self._env
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        if all(env.get(n) == os.environ.get(n) for n in names):
            # botocore's own credential chain sees the same values and can refresh them.
            keys: dict[str, str | None] = {}
        else:  # an explicit environment (tests, embedding) wins over the process's
            keys = {
                "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID") or None,
                "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
                "aws_session_token": env.get("AWS_SESSION_TOKEN") or None,
            }
        session = aioboto3.Session(region_name=self._region, **keys)
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=16,
        )
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            session.client(self.service, config=config, endpoint_url=endpoint_url(env, self._service_env_name))
        )
        self._stack = stack
        return client

    async def close(self, timeout_s: float) -> None:
        """Close the client within ``timeout_s``; idempotent."""
        self.closed = True
        stack, self._stack, self._client = self._stack, None, None
        if stack is None:
            return
        try:
            await asyncio.wait_for(stack.aclose(), timeout=max(timeout_s, 0.001))
        except (TimeoutError, Exception) as exc:  # closing must never fail a shutdown
            logging.getLogger(__name__).debug("closing the %s client failed: %r", self.service, exc)


def error_code(exc: BaseException) -> tuple[str, int]:
    """The AWS error code and HTTP status of a botocore ``ClientError`` (``("", 0)`` otherwise)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    raw = headers.get("retry-after")
    try:
        return max(float(raw), 0.0) if raw is not None else None
    except ValueError:
        return None


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx, timeouts and connection failures: worth another attempt later."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code in PERMISSION_CODES:
            return False
        return code in RETRYABLE_CODES or status >= 500 or status == 429
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ParamValidationError):
        return False
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | HTTPClientError):
        return True
    # aiohttp's errors, asyncio timeouts and OSError are all transport trouble.
    return isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError) or type(exc).__module__.startswith("aiohttp")


def describe(exc: BaseException) -> str:
    """A short, single-line description: ``Code (HTTP status): message``."""
    code, status = error_code(exc)
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")) or str(exc)
        return f"{code} (HTTP {status}): {message}".replace("\n", " ")
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


class ErrorReporter:
    """Turns exceptions into :class:`WriteResult` and logs each fatal cause once per sink.

    One clear line per cause (not one per batch) because a misconfigured sink fails every
    batch, and a log flooded with the same line hides the one that explains it.
    """

    def __init__(self, sink: str, logger: logging.Logger) -> None:
        self.sink = sink
        self.logger = logger
        self._reported: set[str] = set()

    def result(
        self,
        exc: BaseException,
        *,
        action: str,
        resource: str,
        failed_ids: tuple[str, ...] | list[str] = (),
        hint: str = "",
    ) -> WriteResult:
        """Classify ``exc`` raised by ``action`` (an IAM action, e.g. ``s3:PutObject``) on ``resource``."""
        text = describe(exc)
        if is_retryable(exc):
            # Debug only: the dispatcher logs every retry with this result's error text.
            self.logger.debug("%s: %s on %s failed, retryable: %s", self.sink, action, resource, text)
            return WriteResult.retryable(f"{action} {resource}: {text}", failed_ids, _retry_after(exc))
        return self.fatal(self.fatal_message(exc, action=action, resource=resource, hint=hint))

    def fatal_message(self, exc: BaseException, *, action: str, resource: str, hint: str = "") -> str:
        code, _ = error_code(exc)
        text = describe(exc)
        if code in PERMISSION_CODES:
            why = f"the role lacks permission {action} on {resource}"
        elif hint:
            why = hint
        else:
            why = f"{action} on {resource} was rejected"
        return f"{self.sink}: {why} ({text}); records for this sink are dropped until it is fixed"

    def fatal(self, message: str) -> WriteResult:
        if message not in self._reported:
            self._reported.add(message)
            self.logger.error("%s", message)
        return WriteResult.fatal(message)


class AwsSink:
    """What the AWS sinks do alike around their one client: open it early, close it once, and
    the checks every ``write_batch`` makes before its first call.

    Subclasses set ``name``, ``client`` and ``errors`` in their ``__init__``.
    """

    name: str
    client: LazyClient
    errors: ErrorReporter
    #: Checked when the extension builds its sinks (without importing): a missing one disables the sink.
    requires: tuple[str, ...] = ("aioboto3",)
    install_hint: str = "capture-ext[aws]"

    async def start(self) -> None:
        """Open the client now, so the first flush, maybe a SHUTDOWN, does not pay for it."""
        await self.client.get()

    async def close(self, timeout_s: float) -> None:
        await self.client.close(timeout_s)

    async def _client_for(self, batch: Batch, *, action: str, resource: str) -> tuple[Any, WriteResult | None]:
        """The client to write ``batch`` with, or the result to return at once instead.

        After ``close()`` a write is a caller's bug (FATAL); an empty batch is done (OK); a client
        that cannot be opened fails as its exception classifies for ``action`` on ``resource``.
        """
        if self.client.closed:
            return None, WriteResult.fatal(f"{self.name}: write_batch after close()")
        if not batch.records:
            return None, WriteResult.ok()
        try:
            return await self.client.get(), None
        except Exception as exc:
            return None, self.errors.result(exc, action=action, resource=resource)
