"""Byte sizes with units, clear messages for numbers, and strict mode's wording."""

import pytest

from capture_ext.core.config import MIB, ConfigError, Settings, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("5242880", 5 * MIB),
        ("5MiB", 5 * MIB),
        ("5 mib", 5 * MIB),
        ("5MB", 5_000_000),
        ("1.5KiB", 1536),
        ("2gb", 2_000_000_000),
        ("64B", 64),
        ("0", 0),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "5XB", "five", "1.0001KB", "nanMB", "infKiB", "5 M B"])
def test_bad_sizes_name_the_units(text):
    with pytest.raises(ConfigError):
        parse_size(text)


def test_size_settings_accept_units_and_explain_bad_ones():
    settings = Settings.from_env({"CAPTURE_FLUSH_MAX_BYTES": "5MB", "CAPTURE_SPOOL_MAX_BYTES": "1GiB"})
    assert (settings.flush_max_bytes, settings.spool_max_bytes, settings.problems) == (5_000_000, 1024 * MIB, ())
    (problem,) = Settings.from_env({"CAPTURE_MAX_RECORD_BYTES": "1 megabyte"}).problems
    assert problem.startswith(
        "CAPTURE_MAX_RECORD_BYTES='1 megabyte' is invalid (expected bytes, optionally with a unit"
    )
    (problem,) = Settings.from_env({"CAPTURE_FLUSH_MAX_RECORDS": "lots"}).problems
    assert problem == "CAPTURE_FLUSH_MAX_RECORDS='lots' is invalid (not an integer); using the default '1000'"


def test_strict_mode_does_not_claim_a_default_is_used():
    env = {"CAPTURE_SAMPLE_RATE": "2", "CAPTURE_REDACT": "input..x"}
    lenient = Settings.from_env(env).problems
    assert lenient[0] == "CAPTURE_SAMPLE_RATE='2' is invalid (must be between 0.0 and 1.0); using the default '1.0'"
    strict = Settings.from_env({**env, "CAPTURE_STRICT": "1"}).problems
    assert strict[0] == "CAPTURE_SAMPLE_RATE='2' is invalid (must be between 0.0 and 1.0)"
    assert len(strict) == 2 and not any("using" in problem for problem in strict)
