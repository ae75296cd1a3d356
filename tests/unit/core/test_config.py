import dataclasses
import logging

import pytest

from capture_ext.core.config import MIB, VARIABLES, Settings
from capture_ext.variables import config_fields

ATTR = {var.name: attr for attr, var in config_fields(Settings)}


def test_defaults_match_the_design():
    settings = Settings.from_env({})
    assert settings.sinks == ("s3_jsonl",)
    assert settings.flush_interval_s == 60
    assert settings.flush_max_records == 1000
    assert settings.flush_max_bytes == 5 * MIB
    assert settings.buffer_max_bytes == 64 * MIB
    assert settings.sample_rate == 1.0
    assert settings.port == 9009
    assert settings.strict is False
    assert settings.spool_dir == "/tmp/capture-ext-spool"
    assert settings.problems == ()


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda f: f.name)
def test_the_constructor_and_an_empty_environment_agree_on_every_field(field):
    """One source per default: a default written twice (class and table) could drift apart."""
    assert getattr(Settings(), field.name) == getattr(Settings.from_env({}), field.name)


def test_every_variable_is_a_field_whose_default_is_its_documented_default_parsed():
    assert len(ATTR) == len(VARIABLES) == len({v.name for v in VARIABLES})
    for attr, var in config_fields(Settings):
        assert var.name.startswith("CAPTURE_")
        if attr != "spool_dir":  # "" means "beside the socket", resolved on construction
            assert getattr(Settings(), attr) == var.parse(var.default), var.name


def test_core_keeps_only_its_own_keys():
    """Sink settings belong to the sinks (docs/configuration.md, "The built-in sinks'")."""
    names = {var.name for var in VARIABLES}
    assert not names & {"CAPTURE_S3_BUCKET", "CAPTURE_S3_PREFIX", "CAPTURE_LOG_GROUP", "CAPTURE_FIREHOSE_STREAM"}
    assert not {"s3_bucket", "log_group", "file_dir", "jsonl_format"} & {f.name for f in dataclasses.fields(Settings)}


def test_secrets_are_flagged_explicitly():
    assert [var.name for var in VARIABLES if var.secret] == ["CAPTURE_REDACT_KEY"]
    assert "topsecret" not in repr(Settings.from_env({"CAPTURE_REDACT_KEY": "topsecret"}))


def test_the_spool_sits_beside_the_socket_unless_set():
    assert Settings(socket_path="/run/x/cap.sock").spool_dir == "/run/x/capture-ext-spool"
    assert Settings.from_env({"CAPTURE_SOCKET": "/run/x/cap.sock"}).spool_dir == "/run/x/capture-ext-spool"
    assert Settings.from_env({"CAPTURE_SPOOL_DIR": "/data/s"}).spool_dir == "/data/s"


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            "CAPTURE_SINKS": " s3_jsonl , cloudwatch,,",
            "CAPTURE_FLUSH_INTERVAL_S": "0",
            "CAPTURE_SAMPLE_RATE": "0.25",
            "CAPTURE_STRICT": "true",
            "AWS_LAMBDA_FUNCTION_NAME": "qa",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert settings.sinks == ("s3_jsonl", "cloudwatch")
    assert settings.flush_interval_s == 0
    assert settings.sample_rate == 0.25
    assert settings.strict is True
    assert settings.function_name == "qa"
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
        ("CAPTURE_SPOOL_FSYNC", "sometimes"),
        ("CAPTURE_WARMUP", "eager"),
        ("CAPTURE_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_the_variable_and_value_and_falls_back(name, value, caplog):
    settings = Settings.from_env({name: value})
    default = Settings.from_env({})
    assert getattr(settings, ATTR[name]) == getattr(default, ATTR[name])
    assert len(settings.problems) == 1
    assert name in settings.problems[0] and repr(value) in settings.problems[0]
    with caplog.at_level(logging.ERROR):
        settings.log_problems()
    assert name in caplog.text


def test_flush_bytes_cannot_exceed_the_memory_bound():
    settings = Settings.from_env({"CAPTURE_FLUSH_MAX_BYTES": "2000", "CAPTURE_BUFFER_MAX_BYTES": "1000"})
    assert settings.flush_max_bytes == 1000
    assert any("CAPTURE_FLUSH_MAX_BYTES" in p for p in settings.problems)
