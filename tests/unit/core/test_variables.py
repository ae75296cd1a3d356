"""capture_ext.variables: one declaration per setting, read from an environment, argument first."""

from __future__ import annotations

import dataclasses

import pytest

from capture_ext.variables import (
    ConfigError,
    EnvConfig,
    Variable,
    choice,
    config_fields,
    markdown_table,
    positive_int,
    setting,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Example(EnvConfig):
    target: str = setting("CAPTURE_EX_TARGET", "", "Where it goes.", required=True)
    size: int = setting("CAPTURE_EX_SIZE", "10", "How many.", positive_int)
    mode: str = setting("CAPTURE_EX_MODE", "fast", "How.", choice("fast", "slow"))
    password: str = setting("CAPTURE_EX_PASSWORD", "", "Who.", secret=True)


def test_the_default_of_a_field_is_its_variable_default_parsed() -> None:
    assert (Example().size, Example().mode) == (10, "fast")
    for name, var in config_fields(Example):
        if not var.required:
            assert getattr(Example(), name) == getattr(Example.from_env({"CAPTURE_EX_TARGET": "t"}), name)


def test_values_are_read_and_parsed_from_the_environment() -> None:
    env = {"CAPTURE_EX_TARGET": "t", "CAPTURE_EX_SIZE": "3", "CAPTURE_EX_MODE": "SLOW", "CAPTURE_EX_PASSWORD": "pw"}
    assert Example.from_env(env) == Example("t", 3, "slow", "pw")


def test_an_argument_wins_and_none_means_the_environment() -> None:
    env = {"CAPTURE_EX_TARGET": "env", "CAPTURE_EX_SIZE": "3"}
    assert Example.from_env(env, target="arg", size=None) == Example("arg", 3)
    with pytest.raises(TypeError, match="no setting colour"):
        Example.from_env(env, colour="red")
    with pytest.raises(ConfigError, match="target='' was given, but CAPTURE_EX_TARGET is required"):
        Example.from_env(env, target="")


def test_every_problem_is_in_one_line_naming_each_variable_and_secrets_stay_hidden() -> None:
    with pytest.raises(ConfigError) as info:
        Example.from_env({"CAPTURE_EX_SIZE": "0", "CAPTURE_EX_MODE": "warp"})
    assert str(info.value) == (
        "CAPTURE_EX_TARGET is not set, and it is required (Where it goes); "
        "CAPTURE_EX_SIZE='0' is invalid (must be a positive integer); "
        "CAPTURE_EX_MODE='warp' is invalid (must be one of fast, slow)"
    )
    hidden = Variable("CAPTURE_EX_PIN", "0", "A pin.", positive_int, secret=True)
    with pytest.raises(ConfigError, match=r"^CAPTURE_EX_PIN=<hidden> is invalid") as info:
        hidden.read({"CAPTURE_EX_PIN": "-1234"})
    assert "1234" not in str(info.value)
    assert "pw" not in repr(Example("t", password="pw"))


def test_a_blank_required_variable_is_unset() -> None:
    with pytest.raises(ConfigError, match="CAPTURE_EX_TARGET is not set"):
        Example.from_env({"CAPTURE_EX_TARGET": "  "})


def test_the_table_marks_required_and_secret_variables() -> None:
    table = markdown_table(Example.variables(), {"CAPTURE_EX_SIZE": ["a", "b"]})
    assert "| `CAPTURE_EX_TARGET` | (required) |  | Where it goes. |" in table
    assert "| `CAPTURE_EX_SIZE` | `10` | `a`, `b` | How many. |" in table
    assert "| `CAPTURE_EX_PASSWORD` | — |  | Who. Secret: never logged or printed. |" in table
