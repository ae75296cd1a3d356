import logging

import pytest

from capture_ext.core.config import MIB, VARIABLES, Settings


def test_defaults_match_the_design():
    settings = Settings.from_env({})
    assert settings.sinks == ("s3_jsonl",)
    assert settings.s3_prefix == "inference-capture"
    assert settings.flush_interval_s == 60
    assert settings.flush_max_records == 1000
    assert settings.flush_max_bytes == 5 * MIB
    assert settings.buffer_max_bytes == 64 * MIB
    assert settings.sample_rate == 1.0
    assert settings.port == 9009
    assert settings.strict is False
    assert settings.log_group == "/aws/capture-ext/local-function"
    assert settings.problems == ()


def test_every_variable_fills_a_settings_field_and_its_default_parses():
    fields = set(Settings.__dataclass_fields__)
    for var in VARIABLES:
        assert var.name.startswith("CAPTURE_")
        assert var.attr in fields, var.name
        var.parse(var.default)


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            "CAPTURE_SINKS": " s3_jsonl , cloudwatch,,",
            "CAPTURE_FLUSH_INTERVAL_S": "0",
            "CAPTURE_SAMPLE_RATE": "0.25",
            "CAPTURE_STRICT": "true",
            "CAPTURE_S3_PREFIX": "/a/b/",
            "AWS_LAMBDA_FUNCTION_NAME": "qa",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert settings.sinks == ("s3_jsonl", "cloudwatch")
    assert settings.flush_interval_s == 0
    assert settings.sample_rate == 0.25
    assert settings.strict is True
    assert settings.s3_prefix == "a/b"
    assert settings.function_name == "qa"
    assert settings.log_group == "/aws/capture-ext/qa"
    assert settings.region == "eu-west-1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CAPTURE_SAMPLE_RATE", "2"),
        ("CAPTURE_SAMPLE_RATE", "lots"),
        ("CAPTURE_PORT", "9001"),
        ("CAPTURE_PORT", "70000"),
        ("CAPTURE_FLUSH_MAX_RECORDS", "0"),
        ("CAPTURE_FLUSH_INTERVAL_S", "-1"),
        ("CAPTURE_STRICT", "maybe"),
        ("CAPTURE_JSONL_FORMAT", "parquet"),
        ("CAPTURE_SAGEMAKER_LAYOUT", "flat"),
        ("CAPTURE_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_the_variable_and_value_and_falls_back(name, value, caplog):
    settings = Settings.from_env({name: value})
    default = Settings.from_env({})
    var = next(v for v in VARIABLES if v.name == name)
    assert getattr(settings, var.attr) == getattr(default, var.attr)
    assert len(settings.problems) == 1
    assert name in settings.problems[0] and repr(value) in settings.problems[0]
    with caplog.at_level(logging.ERROR):
        settings.log_problems()
    assert name in caplog.text


def test_flush_bytes_cannot_exceed_the_memory_bound():
    settings = Settings.from_env({"CAPTURE_FLUSH_MAX_BYTES": "2000", "CAPTURE_BUFFER_MAX_BYTES": "1000"})
    assert settings.flush_max_bytes == 1000
    assert any("CAPTURE_FLUSH_MAX_BYTES" in p for p in settings.problems)
