"""The cheapest possible external extension: register, then go straight back to ``/next`` forever.

A baseline for benchmarks 2 and 3: whatever it costs the function (the platform delivering one
more INVOKE, one more process to thaw) is the price of having any extension at all, so the rest
of capture-ext's figure is capture-ext's own. Stdlib only, one blocking loop, as small as it gets.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

BASE = f"http://{os.environ.get('AWS_LAMBDA_RUNTIME_API', '')}/2020-01-01/extension"


def main(argv: list[str] | None = None) -> int:
    name = (argv if argv is not None else sys.argv[1:] or ["noop"])[0]
    body = json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode()
    request = urllib.request.Request(f"{BASE}/register", data=body, headers={"Lambda-Extension-Name": name})
    with urllib.request.urlopen(request) as response:
        ident = response.headers["Lambda-Extension-Identifier"]
    while True:
        request = urllib.request.Request(f"{BASE}/event/next", headers={"Lambda-Extension-Identifier": ident})
        with urllib.request.urlopen(request) as response:
            if json.loads(response.read()).get("eventType") == "SHUTDOWN":
                return 0


if __name__ == "__main__":
    sys.exit(main())
