"""Plugin discovery and hygiene, with plugins installed the way pip installs them.

Each fake distribution is a real ``*.dist-info`` directory (METADATA + entry_points.txt) next
to its module on a temporary ``sys.path`` entry, so ``importlib.metadata`` finds it exactly as
it finds a pip-installed plugin in the Lambda layer.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capture_ext import hookimpl
from capture_ext.core import plugins_cli
from capture_ext.core.plugins import get_plugin_manager
from capture_ext.models import SinkContext

SINK_SOURCE = """
from capture_ext import hookimpl

class EchoSink:
    def __init__(self, ctx):
        self.name = ctx.name

@hookimpl
def capture_register_sinks(register):
    for name in {sinks!r}:
        register(name, EchoSink)
"""

MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Install a throwaway distribution: ``make_dist(dist, module, source, ep_name=module)``."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def make(dist: str, module: str, source: str, ep_name: str | None = None, version: str = "1.0") -> Path:
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[capture_ext]\n{ep_name or module} = {module}\n")
        modules.append(module)
        return info

    yield make
    for module in modules:
        sys.modules.pop(module, None)


def test_entry_point_plugin_is_discovered_with_its_distribution(make_dist: MakeDist) -> None:
    make_dist("capture-ext-echo", "capture_echo", SINK_SOURCE.format(sinks=("echo", "echo2")), ep_name="echo")
    plugins = get_plugin_manager()
    factories = plugins.sink_factories()
    assert {"echo", "echo2"} <= set(factories)
    info = plugins.infos["echo"]
    assert (info.distribution, info.version, info.module, info.status) == (
        "capture-ext-echo",
        "1.0",
        "capture_echo",
        "ok",
    )
    assert info.sinks == ["echo", "echo2"]
    assert info.hooks == ["capture_register_sinks"]
    assert plugins.sink_owner("echo2") == "echo"
    sink = factories["echo"](SinkContext(name="echo", env={}, function_name="fn"))
    assert sink.name == "echo"


def test_disabled_by_entry_point_or_distribution_name_is_never_imported(make_dist: MakeDist) -> None:
    make_dist("capture-ext-one", "capture_one", SINK_SOURCE.format(sinks=("one",)), ep_name="one")
    make_dist("capture-ext-two", "capture_two", SINK_SOURCE.format(sinks=("two",)), ep_name="two")
    plugins = get_plugin_manager(disabled=["one", "capture_ext_two"])  # names are normalised like pip's
    assert not {"one", "two"} & set(plugins.sink_factories())
    assert "capture_one" not in sys.modules
    assert "capture_two" not in sys.modules
    assert plugins.infos["one"].status == plugins.infos["two"].status == "disabled"
    assert not [e for e in plugins.errors if "'one'" in e or "'two'" in e]
    assert not plugins.warnings


def test_disabling_a_name_nobody_has_is_a_warning(make_dist: MakeDist) -> None:
    make_dist("capture-ext-one", "capture_one", SINK_SOURCE.format(sinks=("one",)), ep_name="one")
    plugins = get_plugin_manager(disabled=["onee"])
    assert "one" in plugins.sink_factories()
    [warning] = plugins.warnings
    assert "'onee'" in warning and "no installed plugin" in warning and "one" in warning
    assert not [e for e in plugins.errors if "onee" in e]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("raise RuntimeError('boom at import')", "RuntimeError: boom at import"),
        ("import capture_ext_missing_dependency", "ModuleNotFoundError"),
        ("import sys; sys.exit(3)", "SystemExit: 3"),
    ],
)
def test_plugin_failing_at_import_is_reported_and_others_still_load(
    make_dist: MakeDist, body: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_dist("capture-ext-bad", "capture_bad", body, ep_name="bad")
    make_dist("capture-ext-good", "capture_good", SINK_SOURCE.format(sinks=("good",)), ep_name="good")
    with caplog.at_level(logging.ERROR, "capture_ext.core.plugins"):
        plugins = get_plugin_manager()
    assert "good" in plugins.sink_factories()
    [error] = [e for e in plugins.errors if "'bad'" in e]
    assert "failed to import" in error
    assert expected in error
    assert "capture-ext-bad 1.0" in error
    assert plugins.infos["bad"].status == "error"
    assert "continues without it" in caplog.text


def test_plugin_raising_in_registration_keeps_what_it_registered_before(make_dist: MakeDist) -> None:
    make_dist(
        "capture-ext-flaky",
        "capture_flaky",
        """
        from capture_ext import hookimpl

        @hookimpl
        def capture_register_sinks(register):
            register("flaky_first", dict)
            raise ValueError("registration exploded")
        """,
        ep_name="flaky",
    )
    plugins = get_plugin_manager()
    factories = plugins.sink_factories()
    assert "flaky_first" in factories
    [error] = [e for e in plugins.errors if "'flaky'" in e]
    assert "raised in capture_register_sinks" in error
    assert "ValueError: registration exploded" in error


def test_unknown_hook_name_is_reported_with_a_suggestion_not_raised(make_dist: MakeDist) -> None:
    make_dist(
        "capture-ext-typo",
        "capture_typo",
        """
        from capture_ext import hookimpl

        @hookimpl
        def capture_register_sink(register):
            register("typo", dict)

        @hookimpl
        def capture_prepare_record(record):
            record["typo_seen"] = True
        """,
        ep_name="typo",
    )
    plugins = get_plugin_manager()  # pluggy's check_pending() would raise here
    [error] = [e for e in plugins.errors if "'typo'" in e]
    assert "unknown hook 'capture_register_sink'" in error
    assert "did you mean 'capture_register_sinks'" in error
    # The whole plugin is dropped, not just the bad hook: half a plugin is worse than none.
    record: dict[str, object] = {}
    plugins.prepare_record(record)
    assert record == {}
    assert "typo" not in plugins.sink_factories()


def test_hookimpl_with_arguments_not_in_the_spec_is_refused() -> None:
    class WrongArgs:
        @hookimpl
        def capture_register_sinks(self, registry):  # the spec calls it "register"
            raise AssertionError("never called")

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(WrongArgs(), "wrong") is False
    [error] = plugins.errors
    assert "'wrong'" in error and "invalid hook implementation" in error and "registry" in error
    assert plugins.sink_factories() == {}


def test_async_hookimpl_is_refused_instead_of_never_awaited() -> None:
    class Async:
        @hookimpl
        async def capture_register_sinks(self, register):
            register("never", dict)

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(Async(), "async_plugin") is False
    [error] = plugins.errors
    assert "'async_plugin'" in error and "not `async def`: capture_register_sinks" in error
    assert plugins.sink_factories() == {}


def test_hookimpl_may_take_fewer_arguments_than_the_spec() -> None:
    calls = []

    class NoArgs:
        @hookimpl
        def capture_register_sinks(self):
            calls.append("called")

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(NoArgs(), "noargs")
    assert plugins.sink_factories() == {}
    assert calls == ["called"] and not plugins.errors


def test_duplicate_sink_name_is_an_error_naming_both_plugins(make_dist: MakeDist) -> None:
    make_dist("capture-ext-alpha", "capture_alpha", SINK_SOURCE.format(sinks=("shared", "alpha")), ep_name="alpha")
    make_dist("capture-ext-beta", "capture_beta", SINK_SOURCE.format(sinks=("shared", "beta")), ep_name="beta")
    plugins = get_plugin_manager()
    factories = plugins.sink_factories()
    [error] = [e for e in plugins.errors if "'shared'" in e]
    assert "'alpha'" in error and "'beta'" in error
    assert "capture-ext-alpha 1.0" in error and "capture-ext-beta 1.0" in error
    assert "CAPTURE_DISABLED_PLUGINS" in error
    # Deterministic winner (discovery order), and the loser keeps its other sinks.
    assert plugins.sink_owner("shared") == "alpha"
    assert {"alpha", "beta"} <= set(factories)
    # Disabling one of them resolves the clash.
    fixed = get_plugin_manager(disabled=["alpha"])
    assert fixed.sink_owner("shared") == "beta"
    assert not [e for e in fixed.errors if "'shared'" in e]


def test_builtins_claim_their_names_before_third_party_plugins() -> None:
    class Builtin:
        @hookimpl
        def capture_register_sinks(self, register):
            register("file", dict)

    class Impostor:
        @hookimpl
        def capture_register_sinks(self, register):
            register("file", list)

    plugins = get_plugin_manager(load_entrypoints=False)
    plugins.register(Builtin(), "builtin_fake")
    plugins.register(Impostor(), "impostor")
    assert plugins.sink_factories()["file"] is dict
    assert any("'builtin_fake'" in e and "'impostor'" in e for e in plugins.errors)


def test_same_entry_point_name_from_two_distributions_is_reported(make_dist: MakeDist) -> None:
    make_dist("capture-ext-first", "capture_first", SINK_SOURCE.format(sinks=("first",)), ep_name="clash")
    make_dist("capture-ext-second", "capture_second", SINK_SOURCE.format(sinks=("second",)), ep_name="clash")
    plugins = get_plugin_manager()
    assert [e for e in plugins.errors if "'clash'" in e and "already used by distribution" in e]
    assert len({"first", "second"} & set(plugins.sink_factories())) == 1


@pytest.mark.parametrize(
    "name, factory, problem",
    [
        ("Bad-Name", dict, "invalid sink name 'Bad-Name'"),
        ("a,b", dict, "invalid sink name 'a,b'"),
        ("", dict, "invalid sink name ''"),
        ("fine", "not callable", "factory for sink 'fine' is not callable"),
    ],
)
def test_register_rejects_bad_names_and_factories(name: str, factory: object, problem: str) -> None:
    class Sloppy:
        @hookimpl
        def capture_register_sinks(self, register):
            register(name, factory)
            register("ok_sink", dict)

    plugins = get_plugin_manager(load_entrypoints=False)
    plugins.register(Sloppy(), "sloppy")
    assert set(plugins.sink_factories()) == {"ok_sink"}
    [error] = plugins.errors
    assert "'sloppy'" in error and problem in error


def test_blocked_name_is_not_registered_explicitly_either() -> None:
    class Plugin:
        @hookimpl
        def capture_register_sinks(self, register):
            register("blocked_sink", dict)

    plugins = get_plugin_manager(load_entrypoints=False, disabled=["blocked"])
    assert plugins.register(Plugin(), "blocked") is False
    assert plugins.infos["blocked"].status == "disabled"
    assert plugins.sink_factories() == {}


def test_prepare_record_runs_every_implementation_in_place() -> None:
    class Redact:
        @hookimpl
        def capture_prepare_record(self, record):
            record["input"] = "***"

    class Tag:
        @hookimpl
        def capture_prepare_record(self, record):
            record.setdefault("metadata", {})["tagged"] = True

    plugins = get_plugin_manager(load_entrypoints=False)
    assert not plugins.has_prepare_hooks
    plugins.register(Redact(), "redact")
    plugins.register(Tag(), "tag")
    assert plugins.has_prepare_hooks
    record: dict[str, object] = {"input": "secret"}
    plugins.prepare_record(record)
    assert record == {"input": "***", "metadata": {"tagged": True}}


def test_registration_hooks_are_called_once() -> None:
    calls = []

    class Counting:
        @hookimpl
        def capture_register_sinks(self, register):
            calls.append(1)
            register("counted", dict)

    plugins = get_plugin_manager(load_entrypoints=False)
    plugins.register(Counting(), "counting")
    assert plugins.sink_factories() == plugins.sink_factories() == {"counted": dict}
    assert calls == [1]


def test_cli_lists_plugins_sinks_and_problems_as_json(
    make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dist("capture-ext-echo", "capture_echo", SINK_SOURCE.format(sinks=("echo",)), ep_name="echo")
    make_dist("capture-ext-bad", "capture_bad", "raise ImportError('no such luck')", ep_name="bad")
    make_dist("capture-ext-off", "capture_off", SINK_SOURCE.format(sinks=("off",)), ep_name="off")
    monkeypatch.setenv("CAPTURE_SINKS", "echo,ecoh")
    monkeypatch.setenv("CAPTURE_DISABLED_PLUGINS", "off")
    assert plugins_cli.main(["--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in report["plugins"]}
    assert by_name["echo"] | {"hooks": None} == {
        "name": "echo",
        "module": "capture_echo",
        "distribution": "capture-ext-echo",
        "version": "1.0",
        "status": "ok",
        "sinks": ["echo"],
        "variables": {"echo": []},
        "hooks": None,
        "error": None,
    }
    assert by_name["bad"]["status"] == "error" and "no such luck" in by_name["bad"]["error"]
    assert by_name["off"]["status"] == "disabled"
    assert report["sinks"]["echo"] == "echo"
    assert report["selected"][0] == {"name": "echo", "plugin": "echo"}
    assert "did you mean 'echo'" in report["selected"][1]["error"]


def test_cli_table_exits_zero_when_all_is_well(
    make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dist("capture-ext-echo", "capture_echo", SINK_SOURCE.format(sinks=("echo",)), ep_name="echo")
    make_dist(
        "capture-ext-mask",
        "capture_mask",
        """
        from capture_ext import hookimpl

        @hookimpl
        def capture_prepare_record(record):
            record["input"] = "***"
        """,
        ep_name="mask",
    )
    monkeypatch.setenv("CAPTURE_SINKS", "echo")
    # Only this test's plugins: the built-ins are checked by the functional suite.
    monkeypatch.setenv("CAPTURE_DISABLED_PLUGINS", "capture-ext")
    assert plugins_cli.main([]) == 0
    out = capsys.readouterr().out
    assert "capture-ext-echo 1.0" in out and "sinks: echo" in out
    assert re.search(r"mask +capture-ext-mask 1.0 +capture_mask +sinks: -; prepares records", out), out
    assert "CAPTURE_SINKS: echo (echo)" in out
    assert "problem" not in out
