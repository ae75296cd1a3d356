"""The AWS sample's capture path, re-implemented from its description, as the baseline to beat.

aws-samples/aws-lambda-ml-monitoring (described in docs/benchmarks.md): the handler calls
``requests.post`` twice per invoke (``{type: INPUTS, ...}`` then ``{type: RESULTS, ...}``), with no
session, no timeout, to a stdlib ``HTTPServer`` the extension runs in a thread; the server merges
both halves into a dict keyed by request id. Reproduced faithfully except for the bind address
(loopback, never 0.0.0.0) and a lock around the dict (the sample has none; adding one only makes
the baseline slightly slower, never faster).

Run it as its own process, as the sample's extension is: ``python -m bench._aws_sample --port N``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

_entries: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


class _LogsHandler(BaseHTTPRequestHandler):
    """The sample's ``logs_subscriber`` handler: read, parse, merge, answer 200."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        with _lock:
            entry = _entries.setdefault(str(body.get("request_id")), {})
            if body.get("type") == "INPUTS":
                entry.setdefault("inputs", body.get("inputs"))
            else:
                entry.setdefault("results", body.get("results"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def post_inference(url: str, request_id: str, inputs: Any, results: Any) -> None:
    """The sample's ``monitor.py`` calls, as the handler makes them: two un-timed, session-less POSTs."""
    import requests

    requests.post(url, json={"type": "INPUTS", "request_id": request_id, "inputs": inputs})
    requests.post(url, json={"type": "RESULTS", "request_id": request_id, "results": results})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The AWS sample's extension-side HTTP server (benchmark baseline).")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = HTTPServer(("127.0.0.1", args.port), _LogsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)  # as the sample: a server thread
    thread.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # lives until the benchmark closes our stdin
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
