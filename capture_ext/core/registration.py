"""Registering with the Extensions API before anything else is imported.

Lambda starts the function's runtime only after every extension has registered, so the time to
``/extension/register`` is the extension's whole share of the cold start. This module uses only
``http.client`` and ``json`` so that ``python -m capture_ext`` can register before it even imports
asyncio; everything else is set up afterwards, beside the function's own init.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

EXTENSION_API = "/2020-01-01/extension"


class LambdaAPIError(RuntimeError):
    """The Lambda API refused a call; after this the extension must exit."""

    def __init__(self, call: str, status: int, body: bytes) -> None:
        super().__init__(f"{call} failed with HTTP {status}: {body[:500].decode('utf-8', 'replace')}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Registration:
    extension_id: str
    function_name: str
    function_version: str
    handler: str

    @classmethod
    def parse(cls, extension_id: str, payload: bytes) -> Registration:
        info = json.loads(payload or b"{}")
        return cls(
            extension_id,
            str(info.get("functionName", "")),
            str(info.get("functionVersion", "")),
            str(info.get("handler", "")),
        )


def split_address(runtime_api: str) -> tuple[str, int]:
    host, _, port = runtime_api.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"AWS_LAMBDA_RUNTIME_API={runtime_api!r} is not host:port")
    return host, int(port)


def register_blocking(
    runtime_api: str, name: str, events: tuple[str, ...] = ("INVOKE", "SHUTDOWN"), timeout: float = 10.0
) -> Registration:
    """``POST /extension/register`` with the standard library; raises LambdaAPIError or OSError."""
    host, port = split_address(runtime_api)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        body = json.dumps({"events": list(events)})
        connection.request(
            "POST",
            f"{EXTENSION_API}/register",
            body,
            {"Lambda-Extension-Name": name, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise LambdaAPIError("register", response.status, payload)
        return Registration.parse(response.getheader("Lambda-Extension-Identifier", ""), payload)
    except http.client.HTTPException as exc:
        # IncompleteRead, BadStatusLine...: not OSErrors, and python -m capture_ext turns only
        # LambdaAPIError and OSError into its one-line "could not register" exit.
        raise ConnectionError(f"malformed answer to register: {exc!r}") from exc
    finally:
        connection.close()
