"""``firehose``: hand records to an Amazon Data Firehose delivery stream with PutRecordBatch.

This is the sink for volumes that outgrow one file per environment and batch: Firehose
buffers across all environments, converts JSON to Parquet with a Glue schema, partitions and
compacts at any scale. Each record is one newline-terminated JSON document, so objects
Firehose writes to S3 are JSON Lines.

Requests keep the documented limits (500 records, 4 MiB, 1,000 KiB per record; a bigger
record is replaced by a visibly truncated stand-in). PutRecordBatch succeeds partially: only
the records with an ``ErrorCode`` are reported back as ``failed_indices`` for the dispatcher to
resend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Batch, Outcome, Record, SinkContext, SinkRegistrar, WriteResult
from capture_ext.sinks._aws import AwsSink, ErrorReporter, LazyClient, error_code
from capture_ext.sinks._serialize import dumps, fit
from capture_ext.variables import EnvConfig, setting

NAME = "firehose"
MAX_RECORDS_PER_REQUEST = 500
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024


def encode(record: Record) -> tuple[bytes, bool]:
    """One Firehose record: the JSON document plus a newline, truncated visibly if too big."""
    data, cut = fit(record, dumps(record), MAX_RECORD_BYTES - 1)
    return data + b"\n", cut


def plan_requests(blobs: Sequence[bytes]) -> list[list[int]]:
    """Indices of ``blobs`` grouped into requests within the count and size limits."""
    requests: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, blob in enumerate(blobs):
        if current and (len(current) >= MAX_RECORDS_PER_REQUEST or size + len(blob) > MAX_REQUEST_BYTES):
            requests.append(current)
            current, size = [], 0
        current.append(index)
        size += len(blob)
    if current:
        requests.append(current)
    return requests


@dataclass(frozen=True, slots=True)
class FirehoseConfig(EnvConfig):
    """The ``firehose`` sink's settings."""

    stream: str = setting(
        "CAPTURE_FIREHOSE_STREAM", "", "Delivery stream the `firehose` sink writes to.", required=True
    )


class FirehoseSink(AwsSink):
    def __init__(self, ctx: SinkContext, config: FirehoseConfig | None = None) -> None:
        self.config = config or FirehoseConfig.from_env(ctx.env)
        self.name = ctx.name
        self.stream = self.config.stream
        self.region = ctx.region
        self.logger = ctx.logger
        self.client = LazyClient("firehose", ctx.env, self.region, "FIREHOSE")
        self.errors = ErrorReporter(ctx.name, ctx.logger)
        self.stats = {"records": 0, "requests": 0, "failed_records": 0, "truncated": 0, "bytes": 0}

    async def write_batch(self, batch: Batch) -> WriteResult:
        arn = f"arn:aws:firehose:{self.region}:*:deliverystream/{self.stream}"
        client, early = await self._client_for(batch, action="firehose:PutRecordBatch", resource=arn)
        if early is not None:
            return early
        records = batch.records
        blobs: list[bytes] = []
        for record in records:
            blob, cut = encode(record)
            self.stats["truncated"] += cut
            blobs.append(blob)
        failed: list[int] = []
        errors: list[str] = []
        requests = plan_requests(blobs)
        for position, request in enumerate(requests):
            try:
                response = await client.put_record_batch(
                    DeliveryStreamName=self.stream, Records=[{"Data": blobs[i]} for i in request]
                )
            except Exception as exc:
                code = error_code(exc)[0]
                hint = f"delivery stream {self.stream!r} does not exist" if code == "ResourceNotFoundException" else ""
                result = self.errors.result(exc, action="firehose:PutRecordBatch", resource=arn, hint=hint)
                if result.outcome is Outcome.FATAL:
                    return result
                # Throttled or unreachable: later requests would fare no better this attempt.
                failed.extend(i for r in requests[position:] for i in r)
                errors.append(result.error or code)
                break
            self.stats["requests"] += 1
            answers = response.get("RequestResponses", [])
            for slot, index in enumerate(request):
                answer = answers[slot] if slot < len(answers) else {"ErrorCode": "MissingResponse"}
                if answer.get("ErrorCode"):
                    failed.append(index)
                    errors.append(f"{answer['ErrorCode']}: {answer.get('ErrorMessage', '')}")
                else:
                    self.stats["records"] += 1
                    self.stats["bytes"] += len(blobs[index])
        if not failed:
            return WriteResult.ok()
        self.stats["failed_records"] += len(failed)
        summary = f"{len(failed)} of {len(records)} records not accepted by {self.stream}: {errors[0]}"
        # Per-record codes are ServiceUnavailableException or InternalFailure: both transient.
        # Debug only: the dispatcher logs the retry with this summary.
        self.logger.debug("%s: %s", self.name, summary)
        if len(set(failed)) >= len(records):
            return WriteResult.retryable(summary)
        return WriteResult.retryable(summary, failed_indices=sorted(set(failed)))


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    register(NAME, FirehoseSink, variables=FirehoseConfig.variables())
