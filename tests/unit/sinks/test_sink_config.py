"""Each built-in sink owns its configuration: defaults, parsing, clear errors, argument first."""

from __future__ import annotations

import pytest

from capture_ext.models import SinkContext
from capture_ext.sinks._s3 import S3Config
from capture_ext.sinks.cloudwatch import CloudWatchConfig, CloudWatchSink
from capture_ext.sinks.firehose import FirehoseConfig, FirehoseSink
from capture_ext.sinks.local import FileConfig, _file_sink
from capture_ext.sinks.s3_jsonl import JsonlConfig, S3JsonlSink
from capture_ext.sinks.s3_parquet import S3ParquetSink
from capture_ext.variables import ConfigError, EnvConfig, config_fields

CONFIGS = [S3Config, JsonlConfig, CloudWatchConfig, FirehoseConfig, FileConfig]


def ctx(name: str = "sink", function_name: str = "qa-fn", **env: str) -> SinkContext:
    return SinkContext(name=name, env=env, function_name=function_name, region="eu-west-1")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_the_constructor_and_the_environment_agree_on_every_default(config: type[EnvConfig]) -> None:
    required = {var.name: "x" for _, var in config_fields(config) if var.required}
    from_env = config.from_env(required)
    built = config(**{name: "x" for name, var in config_fields(config) if var.required})
    for name, _ in config_fields(config):
        assert getattr(built, name) == getattr(from_env, name), name


def test_s3_settings_from_the_environment() -> None:
    config = JsonlConfig.from_env(
        {
            "CAPTURE_S3_BUCKET": "b",
            "CAPTURE_S3_PREFIX": "/a/b/",
            "CAPTURE_JSONL_FORMAT": "SageMaker",
            "CAPTURE_SAGEMAKER_LAYOUT": "sagemaker",
        }
    )
    assert config == JsonlConfig(bucket="b", prefix="a/b", format="sagemaker", sagemaker_layout="sagemaker")
    assert S3Config.from_env({"CAPTURE_S3_BUCKET": "b"}) == S3Config("b", "inference-capture")
    sink = S3JsonlSink(ctx(CAPTURE_S3_BUCKET="b", CAPTURE_JSONL_FORMAT="sagemaker"))
    assert (sink.bucket, sink.prefix, sink.fmt, sink.extension, sink.region) == (
        "b",
        "inference-capture",
        "sagemaker",
        "jsonl.gz",
        "eu-west-1",
    )


@pytest.mark.parametrize(
    ("sink", "env", "message"),
    [
        (S3JsonlSink, {}, "CAPTURE_S3_BUCKET is not set, and it is required (Bucket the S3 sinks write to)"),
        (S3ParquetSink, {"CAPTURE_S3_BUCKET": " "}, "CAPTURE_S3_BUCKET is not set"),
        (
            S3JsonlSink,
            {"CAPTURE_S3_BUCKET": "b", "CAPTURE_JSONL_FORMAT": "parquet"},
            "CAPTURE_JSONL_FORMAT='parquet' is invalid (must be one of capture, sagemaker)",
        ),
        (
            S3JsonlSink,
            {"CAPTURE_S3_BUCKET": "b", "CAPTURE_SAGEMAKER_LAYOUT": "flat"},
            "CAPTURE_SAGEMAKER_LAYOUT='flat' is invalid (must be one of hive, sagemaker)",
        ),
        (
            CloudWatchSink,
            {"CAPTURE_LOG_GROUP_CREATE": "maybe"},
            "CAPTURE_LOG_GROUP_CREATE='maybe' is invalid (expected 1/0, true/false, yes/no or on/off)",
        ),
        (FirehoseSink, {}, "CAPTURE_FIREHOSE_STREAM is not set, and it is required"),
        (_file_sink, {"CAPTURE_FILE_DIR": " "}, "CAPTURE_FILE_DIR=' ' is invalid (must not be empty)"),
    ],
)
def test_a_bad_or_missing_value_is_one_error_naming_the_variable(sink: object, env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        sink(ctx(**env))  # type: ignore[operator]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cloudwatch_group_defaults_to_the_function_the_context_names() -> None:
    """The name comes from the Extensions API registration, so it is the context's, not the environment's."""
    sink = CloudWatchSink(ctx(function_name="registered-fn", AWS_LAMBDA_FUNCTION_NAME="env-fn"))
    assert (sink.log_group, sink.create_group, sink.region) == ("/aws/capture-ext/registered-fn", True, "eu-west-1")
    sink = CloudWatchSink(ctx(CAPTURE_LOG_GROUP="/mine", CAPTURE_LOG_GROUP_CREATE="0"))
    assert (sink.log_group, sink.create_group) == ("/mine", False)


def test_an_argument_wins_over_the_environment() -> None:
    env = {"CAPTURE_FIREHOSE_STREAM": "from-env", "CAPTURE_S3_BUCKET": "env-bucket"}
    assert FirehoseSink(ctx(**env), FirehoseConfig.from_env(env, stream="given")).stream == "given"
    sink = S3ParquetSink(ctx(), S3Config(bucket="given", prefix="/p/"))  # no variable set at all
    assert (sink.bucket, sink.prefix) == ("given", "p")
    assert _file_sink(ctx(CAPTURE_FILE_DIR="/env"), FileConfig("/given")).directory == "/given"


def test_each_sink_registers_the_variables_of_its_config() -> None:
    from capture_ext.core.plugins import get_plugin_manager

    declared = get_plugin_manager().sink_variables()
    assert declared["s3_jsonl"] == JsonlConfig.variables()
    assert declared["s3_parquet"] == S3Config.variables()
    assert declared["cloudwatch"] == CloudWatchConfig.variables()
    assert declared["firehose"] == FirehoseConfig.variables()
    assert declared["file"] == FileConfig.variables()
    assert declared["stdout"] == ()
