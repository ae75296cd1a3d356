"""``s3_jsonl``: gzip JSON Lines on S3, one object per batch and Hive partition.

Layout: ``<prefix>/jsonl/function=<name>/dt=YYYY-MM-DD/hour=HH/<batch_id>.jsonl.gz``.
``CAPTURE_JSONL_FORMAT=sagemaker`` writes the SageMaker Data Capture schema instead of the
enriched records. Importing this module costs nothing: aioboto3 loads on the first batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Record, SinkContext, SinkRegistrar
from capture_ext.sinks._s3 import S3Sink
from capture_ext.sinks._serialize import encode_jsonl_gz

NAME = "s3_jsonl"


class S3JsonlSink(S3Sink):
    fmt = "jsonl"
    extension = "jsonl.gz"
    # Not Content-Encoding: gzip, which makes HTTP clients unpack the object on download
    # while Athena and Spark expect the .gz bytes they find by extension.
    content_type = "application/gzip"

    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx)
        self.format = self._settings.jsonl_format

    def encode(self, records: Sequence[Record]) -> bytes:
        return encode_jsonl_gz(records, self.format)


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    register(NAME, S3JsonlSink)
