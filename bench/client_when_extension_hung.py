"""The client's added latency when the extension is alive, hung (SIGSTOP) or dead (SIGKILL).

A hung extension stops reading its socket: the kernel buffer fills, then every call spends at
most ``CAPTURE_CLIENT_TIMEOUT_MS`` trying before it drops the record (counted in the client's
stats). A dead one refuses connections at once. The handler answers in every case.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from bench._harness import extension, percentile, record_of


def measure(client: object, calls: int, payload: dict) -> list[float]:
    samples = []
    for n in range(calls):
        started = time.perf_counter()
        client.capture(input=payload["input"], output=payload["output"], metadata={"n": n})  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024, help="record size in bytes")
    args = parser.parse_args(argv)
    from capture_ext.client import CaptureClient

    payload = record_of(args.size)
    rows = []
    for fate in ("alive", "hung (SIGSTOP)", "dead (SIGKILL)"):
        with extension({"CAPTURE_SINKS": "file"}) as ext:
            client = CaptureClient(socket_path=ext.socket_path, port=ext.port, timeout_ms=5)
            measure(client, 50, payload)  # connect and warm up
            if fate.startswith("hung"):
                ext.proc.send_signal(signal.SIGSTOP)
            elif fate.startswith("dead"):
                ext.proc.kill()
                ext.proc.wait(5)
            samples = measure(client, args.calls, payload)
            if fate.startswith("hung"):
                ext.proc.send_signal(signal.SIGCONT)
            stats = dict(client.stats)
            client.close()
        rows.append(
            (fate, percentile(samples, 50), percentile(samples, 99), max(samples), stats["sent"], stats["dropped"])
        )
    print(f"{args.calls} capture() calls of {args.size} B records, client timeout 5 ms\n")
    print("| extension | p50 µs | p99 µs | max µs | sent | dropped |")
    print("|---|---|---|---|---|---|")
    for fate, p50, p99, worst, sent, dropped in rows:
        print(f"| {fate} | {p50:.1f} | {p99:.1f} | {worst:.0f} | {sent} | {dropped} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
