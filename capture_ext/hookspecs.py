"""Plugin hook specifications (pluggy project ``capture_ext``).

Hooks are synchronous because pluggy never awaits; the sinks they register do their I/O
asynchronously. Every hook name starts with ``capture_`` so plugins are easy to grep.
"""

from __future__ import annotations

from typing import Any

import pluggy

from capture_ext.models import SinkRegistrar

PROJECT_NAME = "capture_ext"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def capture_register_sinks(register: SinkRegistrar) -> None:
    """Register sink factories by name.

    Called once at extension start-up, before any record is accepted, for every plugin (1:N).
    Call ``register(name, factory)`` for each sink; the factory is called later with one
    :class:`~capture_ext.models.SinkContext`, and only for sinks named in ``CAPTURE_SINKS``.
    Must not block or do I/O: import heavy libraries inside the factory, not here.
    """


@hookspec
def capture_prepare_record(record: dict[str, Any]) -> None:
    """Redact or enrich one record in place before it is buffered or spooled.

    Called for every accepted record, on the ingest path of the extension's event loop (1:N,
    in plugin registration order). Must be fast and must not block or do I/O. To drop a
    field, delete it; to mask a value, overwrite it. Raising counts the record as dropped
    with reason ``prepare_error``.
    """
