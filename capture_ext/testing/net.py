"""Loopback ports for the servers that tests, the demo and plugin authors start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port that was free a moment ago.

    For a server in *another* process that must be told its port up front (the extension's
    ``CAPTURE_PORT``, a moto child process); a server in this process should bind port 0 itself,
    which cannot race. Also a port nobody listens on, for "unreachable endpoint" tests.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
