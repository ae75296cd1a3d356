"""What the two S3 sinks share: partitioning a batch, one PutObject per partition, classification.

A batch is split by the Hive partition of each record's ``captured_at``; each part becomes one
object whose key is derived from the batch id, so a retry overwrites rather than duplicates.
When some parts fail, their records are reported by position (``failed_indices``): the
dispatcher's retry resends exactly the failed parts, whole, and they land under the same keys
with the same content. Client ids could not do this: two records may share an id, and a retry
that picked a record of a part already written would rewrite that object from the retry alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capture_ext.models import Batch, Outcome, Record, SinkContext, WriteResult
from capture_ext.sinks._aws import AwsSink, ErrorReporter, LazyClient, error_code
from capture_ext.sinks._layout import group_by_partition, object_key, partition_path
from capture_ext.variables import EnvConfig, setting

#: Objects of one batch uploaded at once; a batch rarely spans more than two hours.
MAX_CONCURRENT_PUTS = 8


@dataclass(frozen=True, slots=True)
class S3Config(EnvConfig):
    """The settings both S3 sinks read."""

    bucket: str = setting("CAPTURE_S3_BUCKET", "", "Bucket the S3 sinks write to.", required=True)
    prefix: str = setting("CAPTURE_S3_PREFIX", "inference-capture", "Key prefix of the S3 sinks' objects.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.prefix.strip("/"))


class S3Sink(AwsSink):
    """Base of ``s3_jsonl`` and ``s3_parquet``: subclasses only say how to encode records."""

    #: ``jsonl``, ``sagemaker`` or ``parquet``: the layout folder under the prefix.
    fmt = ""
    extension = ""
    content_type = "application/octet-stream"
    #: (function name, capture time) -> the key segments between the folder and the file name.
    partition = staticmethod(partition_path)

    def __init__(self, ctx: SinkContext, config: S3Config | None = None) -> None:
        self.config = config or S3Config.from_env(ctx.env)
        self.name = ctx.name
        self.bucket = self.config.bucket
        self.prefix = self.config.prefix
        self.function_name = ctx.function_name
        self.region = ctx.region
        self.logger = ctx.logger
        self.client = LazyClient("s3", ctx.env, ctx.region, "S3")
        self.errors = ErrorReporter(ctx.name, ctx.logger)
        self.stats = {"objects": 0, "records": 0, "bytes": 0}

    def encode(self, records: Sequence[Record]) -> bytes:
        raise NotImplementedError

    def key_for(self, partition: str, batch_id: str) -> str:
        return object_key(self.prefix, self.fmt, partition, batch_id, self.extension)

    async def start(self) -> None:
        """Open the client (and load the encoder) now, so the first flush, maybe a SHUTDOWN, is warm."""
        await super().start()
        self.warm_encoder()

    def warm_encoder(self) -> None:
        """Import what :meth:`encode` needs; subclasses with heavy encoders override it."""

    async def write_batch(self, batch: Batch) -> WriteResult:
        client, early = await self._client_for(batch, action="s3:PutObject", resource=self._resource())
        if early is not None:
            return early
        groups = group_by_partition(batch.records, self.function_name, self.partition)
        positions = {id(record): index for index, record in enumerate(batch.records)}
        gate = asyncio.Semaphore(MAX_CONCURRENT_PUTS)
        outcomes = await asyncio.gather(
            *(
                self._put(client, gate, self.key_for(partition, batch.batch_id), records, batch.batch_id)
                for partition, records in groups.items()
            )
        )
        failed = [(records, result) for records, result in zip(groups.values(), outcomes, strict=True) if result]
        if not failed:
            return WriteResult.ok()
        fatal = next((r for _, r in failed if r.outcome is Outcome.FATAL), None)
        if fatal is not None:
            return fatal
        first = failed[0][1]
        if len(failed) == len(groups):
            return WriteResult.retryable(first.error or "PutObject failed", (), first.retry_after_s)
        indices = sorted(positions[id(r)] for records, _ in failed for r in records)
        return WriteResult.retryable(first.error or "PutObject failed", (), first.retry_after_s, failed_indices=indices)

    async def _put(
        self, client: Any, gate: asyncio.Semaphore, key: str, records: list[Record], batch_id: str
    ) -> WriteResult | None:
        """Upload one partition; None on success, else the classified failure."""
        async with gate:
            try:
                body = await asyncio.to_thread(self.encode, records)
            except Exception as exc:  # an encoder bug must not masquerade as an AWS error
                self.logger.exception("%s: could not encode %d records for %s", self.name, len(records), key)
                return WriteResult.fatal(f"{self.name}: encoding failed: {type(exc).__name__}: {exc}")
            try:
                await client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=self.content_type,
                    Metadata={"batch-id": batch_id, "records": str(len(records))},
                )
            except Exception as exc:
                return self.errors.result(exc, action="s3:PutObject", resource=self._resource(), hint=self._hint(exc))
        self.stats["objects"] += 1
        self.stats["records"] += len(records)
        self.stats["bytes"] += len(body)
        return None

    def _resource(self) -> str:
        path = f"{self.prefix}/{self.fmt}/*" if self.prefix else f"{self.fmt}/*"
        return f"arn:aws:s3:::{self.bucket}/{path}"

    def _hint(self, exc: BaseException) -> str:
        code, _ = error_code(exc)
        if code == "NoSuchBucket":
            return f"bucket {self.bucket!r} does not exist (create it, or fix CAPTURE_S3_BUCKET)"
        if code in {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}:
            return f"bucket {self.bucket!r} is in another Region than {self.region!r}"
        return ""
