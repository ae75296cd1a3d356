"""What the function-side client and the extension must agree on, in one place.

Standard library only and constants only: ``capture_ext.client`` imports it inside the user's
function, where every import is cold-start time.
"""

from __future__ import annotations

#: Unix socket of the fast transport (``CAPTURE_SOCKET``).
SOCKET_PATH = "/tmp/capture-ext.sock"
#: Loopback port of the HTTP ingest endpoint (``CAPTURE_PORT``).
PORT = 9009
#: A line whose object has this key is a control message, not a record.
CONTROL_KEY = "_capture_ext"
#: Control values sent by ``@capture_handler``: the handler started / returned (request id given).
CONTROL_START = "start"
CONTROL_DONE = "done"
#: Query of ``POST /v1/records`` that makes NDJSON lines stand alone (the client's HTTP fallback).
PARTIAL_QUERY = "partial=1"
