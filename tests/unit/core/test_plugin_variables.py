"""Sinks declare their variables where they register; old plugins fail with one clear line."""

from __future__ import annotations

import json

import pytest

from capture_ext import hookimpl
from capture_ext.core import plugins_cli
from capture_ext.core.config import Settings
from capture_ext.core.plugins import get_plugin_manager
from capture_ext.core.sink_setup import build_sinks
from capture_ext.variables import Variable
from tests.unit.core.test_plugins import MakeDist, make_dist  # noqa: F401 - the fixture

# A third-party sink written as the tutorial says: a config object, its variables registered.
DECLARING = """
import dataclasses
from capture_ext import hookimpl
from capture_ext.variables import EnvConfig, setting

@dataclasses.dataclass(frozen=True)
class QueueConfig(EnvConfig):
    url: str = setting("CAPTURE_QUEUE_URL", "", "Queue to send to.", required=True)
    key: str = setting("CAPTURE_QUEUE_KEY", "", "API key.", secret=True)

class QueueSink:
    def __init__(self, ctx):
        self.name, self.config = ctx.name, QueueConfig.from_env(ctx.env)

@hookimpl
def capture_register_sinks(register):
    register("queue", QueueSink, variables=QueueConfig.variables())
"""

# Written against the old contract: the built-in settings object on the context.
LEGACY = """
from capture_ext import hookimpl

class LegacySink:
    def __init__(self, ctx):
        self.name = ctx.name
        self.directory = ctx.settings.file_dir

@hookimpl
def capture_register_sinks(register):
    register("legacy", LegacySink)
"""


def test_a_plugin_sink_declares_variables_as_a_builtin_does(
    make_dist: MakeDist,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_dist("capture-ext-queue", "capture_queue", DECLARING, ep_name="queue")
    plugins = get_plugin_manager()
    assert [v.name for v in plugins.sink_variables()["queue"]] == ["CAPTURE_QUEUE_URL", "CAPTURE_QUEUE_KEY"]
    monkeypatch.setenv("CAPTURE_SINKS", "queue")
    monkeypatch.setenv("CAPTURE_QUEUE_KEY", "topsecret")
    monkeypatch.delenv("CAPTURE_QUEUE_URL", raising=False)
    assert plugins_cli.main(["--json"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out)
    [plugin] = [p for p in report["plugins"] if p["name"] == "queue"]
    url, key = plugin["variables"]["queue"]
    assert (url["name"], url["required"], url["set"]) == ("CAPTURE_QUEUE_URL", True, False)
    assert (key["secret"], key["set"]) == (True, True) and "topsecret" not in out
    assert report["selected"][0]["error"] == (
        "sink 'queue' is misconfigured: CAPTURE_QUEUE_URL is not set, and it is required (Queue to send to)"
    )
    monkeypatch.setenv("CAPTURE_QUEUE_URL", "https://q")
    monkeypatch.setenv("CAPTURE_DISABLED_PLUGINS", "capture-ext")
    assert plugins_cli.main([]) == 0
    assert "queue reads: CAPTURE_QUEUE_URL (required), CAPTURE_QUEUE_KEY='' (secret)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ("CAPTURE_X", "must be a sequence of capture_ext.variables.Variable"),
        (["CAPTURE_X"], "must be capture_ext.variables.Variable objects, not 'CAPTURE_X'"),
        ([Variable("capture_x", "", "")], "declares variable 'capture_x': use upper-case"),
        ([Variable("CAPTURE_SINKS", "", "")], "declares CAPTURE_SINKS, which is one of capture-ext's own"),
    ],
)
def test_bad_variables_fail_that_registration_only(variables: object, problem: str) -> None:
    class Sloppy:
        @hookimpl
        def capture_register_sinks(self, register):
            register("bad_sink", dict, variables=variables)
            register("ok_sink", dict, variables=(Variable("CAPTURE_OK_SINK_X", "1", "x"),))

    plugins = get_plugin_manager(load_entrypoints=False)
    plugins.register(Sloppy(), "sloppy")
    assert set(plugins.sink_variables()) == {"ok_sink"}
    [error] = plugins.errors
    assert "plugin 'sloppy'" in error and problem in error


def test_a_variable_two_sinks_declare_differently_is_a_warning() -> None:
    class Two:
        @hookimpl
        def capture_register_sinks(self, register):
            register("one", dict, variables=(Variable("CAPTURE_SHARED", "1", "x"),))
            register("two", dict, variables=(Variable("CAPTURE_SHARED", "2", "x"),))

    plugins = get_plugin_manager(load_entrypoints=False)
    plugins.register(Two(), "two")
    assert set(plugins.sink_factories()) == {"one", "two"} and not plugins.errors
    assert plugins.warnings == [
        "sinks 'one' and 'two' both read CAPTURE_SHARED but declare it differently (defaults '1' and '2'); "
        "set it with both in mind"
    ]


def test_an_old_plugin_reading_ctx_settings_fails_with_one_line_naming_it(make_dist: MakeDist) -> None:  # noqa: F811
    make_dist("capture-ext-legacy", "capture_legacy", LEGACY, ep_name="legacy")
    env = {"CAPTURE_SINKS": "legacy,stdout"}
    sinks, _, problems = build_sinks(Settings.from_env(env), env, "env")
    assert list(sinks) == ["stdout"]
    assert problems == [
        "sink 'legacy' is disabled: SinkContext has no 'settings' any more (sink 'legacy'): read your "
        "CAPTURE_<SINK>_* variables from ctx.env, e.g. with a capture_ext.variables.EnvConfig; see "
        "docs/writing-sinks.md#configuration (plugin capture_legacy from capture-ext-legacy 1.0)"
    ]
