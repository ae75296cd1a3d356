"""``s3_parquet``: one zstd Parquet file per batch and Hive partition, with a stable schema.

Layout: ``<prefix>/parquet/function=<name>/dt=YYYY-MM-DD/hour=HH/<batch_id>.parquet``; the
schema is :data:`capture_ext.sinks._parquet.COLUMNS`. pyarrow is imported by the first
encode (in a worker thread, after the response was sent), never at import or start-up, so
neither cold start nor functions that use other sinks pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Record, SinkRegistrar
from capture_ext.sinks._s3 import S3Config, S3Sink

NAME = "s3_parquet"


class S3ParquetSink(S3Sink):
    fmt = "parquet"
    extension = "parquet"
    content_type = "application/vnd.apache.parquet"
    requires = ("aioboto3", "pyarrow")
    install_hint = "capture-ext[parquet]"

    def warm_encoder(self) -> None:
        import pyarrow.parquet  # noqa: F401 - about 150 ms, better spent before the first flush

    def encode(self, records: Sequence[Record]) -> bytes:
        from capture_ext.sinks._parquet import encode_parquet

        return encode_parquet(records)


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    register(NAME, S3ParquetSink, variables=S3Config.variables())
