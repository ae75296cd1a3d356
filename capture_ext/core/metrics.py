"""Self-metrics as CloudWatch Embedded Metric Format: one stdout line per flush, no API calls.

On Lambda the extension's stdout lands in the function's log group, where CloudWatch turns EMF
lines into metrics at no extra request cost.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import orjson

from capture_ext.core.dispatcher import FlushReport

UNITS = {
    "RecordsReceived": "Count",
    "RecordsDelivered": "Count",
    "RecordsDropped": "Count",
    "RecordsRetried": "Count",
    "RecordsBuffered": "Count",
    "RecordsSpooled": "Count",
    "FlushDuration": "Milliseconds",
}


class MetricsEmitter:
    """Emits per-flush deltas so sums over time in CloudWatch are exact."""

    def __init__(self, namespace: str, function_name: str, stream: IO[str] | None = None) -> None:
        self.namespace = namespace
        self.function_name = function_name
        self.stream = stream
        self._last_received = 0

    def emit(
        self,
        report: FlushReport,
        received_total: int,
        buffered: int,
        reason: str,
        totals: dict[str, Any] | None = None,
        spooled: int = 0,
    ) -> dict[str, Any]:
        """``totals``: the per-sink reconciliation of ``/v1/health`` at the same instant (cumulative)."""
        received = received_total - self._last_received
        self._last_received = received_total
        values = {
            "RecordsReceived": received,
            "RecordsDelivered": sum(report.delivered.values()),
            "RecordsDropped": sum(report.dropped.values()),
            "RecordsRetried": sum(report.retried.values()),
            "RecordsBuffered": buffered,
            "RecordsSpooled": spooled,
            "FlushDuration": round(report.duration_ms, 3),
        }
        document: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [["FunctionName"]],
                        "Metrics": [{"Name": name, "Unit": unit} for name, unit in UNITS.items()],
                    }
                ],
            },
            "FunctionName": self.function_name,
            "FlushReason": reason,
            **values,
            "DeliveredBySink": report.delivered,
        }
        if totals is not None:
            document["Totals"] = totals
        stream = self.stream or sys.stdout
        stream.write(orjson.dumps(document).decode() + "\n")
        stream.flush()
        return document
