"""``s3_jsonl``: JSON Lines on S3, one object per batch and partition.

Layouts (see docs/sinks.md):

- ``CAPTURE_JSONL_FORMAT=capture`` (default): the enriched records,
  ``<prefix>/jsonl/function=<name>/dt=YYYY-MM-DD/hour=HH/<batch_id>.jsonl.gz``.
- ``CAPTURE_JSONL_FORMAT=sagemaker``: the SageMaker Data Capture schema, in its own folder so
  the two schemas never share a table location: ``<prefix>/sagemaker/function=…/…/<batch_id>.jsonl.gz``,
  or with ``CAPTURE_SAGEMAKER_LAYOUT=sagemaker`` SageMaker's own layout and encoding,
  ``<prefix>/sagemaker/<name>/AllTraffic/yyyy/mm/dd/hh/<batch_id>.jsonl`` (not compressed).

Importing this module costs nothing: aioboto3 loads on the first batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from capture_ext.hookspecs import hookimpl
from capture_ext.models import Record, SinkContext, SinkRegistrar
from capture_ext.sinks._layout import sagemaker_partition_path
from capture_ext.sinks._s3 import S3Config, S3Sink
from capture_ext.sinks._serialize import encode_jsonl, encode_jsonl_gz
from capture_ext.variables import choice, setting

NAME = "s3_jsonl"


@dataclass(frozen=True, slots=True)
class JsonlConfig(S3Config):
    """``s3_jsonl``'s settings: the S3 ones and the schema and layout of its objects."""

    format: str = setting(
        "CAPTURE_JSONL_FORMAT",
        "capture",
        "`capture` (enriched records, under `jsonl/`) or `sagemaker` (SageMaker Data Capture schema, under "
        "`sagemaker/`).",
        choice("capture", "sagemaker"),
    )
    sagemaker_layout: str = setting(
        "CAPTURE_SAGEMAKER_LAYOUT",
        "hive",
        "Key layout of `CAPTURE_JSONL_FORMAT=sagemaker`: `hive` (`function=/dt=/hour=/<batch>.jsonl.gz`) or "
        "`sagemaker` (SageMaker's `<function>/AllTraffic/yyyy/mm/dd/hh/<batch>.jsonl`, uncompressed).",
        choice("hive", "sagemaker"),
    )


class S3JsonlSink(S3Sink):
    fmt = "jsonl"
    extension = "jsonl.gz"
    # Not Content-Encoding: gzip, which makes HTTP clients unpack the object on download
    # while Athena and Spark expect the .gz bytes they find by extension.
    content_type = "application/gzip"

    def __init__(self, ctx: SinkContext, config: JsonlConfig | None = None) -> None:
        jsonl = config or JsonlConfig.from_env(ctx.env)
        super().__init__(ctx, jsonl)
        self.format = jsonl.format
        self.compress = True
        if self.format == "sagemaker":
            self.fmt = "sagemaker"
            if jsonl.sagemaker_layout == "sagemaker":
                # SageMaker writes plain .jsonl files; its tooling filters keys on that suffix.
                self.partition = sagemaker_partition_path
                self.extension = "jsonl"
                self.content_type = "application/jsonlines"
                self.compress = False

    def encode(self, records: Sequence[Record]) -> bytes:
        if self.compress:
            return encode_jsonl_gz(records, self.format)
        return encode_jsonl(records, self.format)


@hookimpl
def capture_register_sinks(register: SinkRegistrar) -> None:
    register(NAME, S3JsonlSink, variables=JsonlConfig.variables())
