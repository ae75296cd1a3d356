"""Plugin hygiene's remaining refusals (issue 21's branch gaps): duplicates, wrappers, optional
hooks, plugins registered behind the facade's back, one distribution seen twice on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from capture_ext import hookimpl
from capture_ext.core.plugins import PluginError, get_plugin_manager


class EchoSink:
    def __init__(self, context: object) -> None:
        self.context = context


class Sinks:
    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def capture_register_sinks(self, register):
        for name in self.names:
            register(name, EchoSink)


def test_a_plugin_object_or_name_registered_twice_is_refused_with_the_reason() -> None:
    plugins = get_plugin_manager(load_entrypoints=False)
    first = Sinks("one")
    assert plugins.register(first, "first")
    assert not plugins.register(first, "again")  # the same object under another name
    assert not plugins.register(Sinks("two"), "first")  # another object under a taken name
    assert len(plugins.errors) == 2
    assert all("failed to register: ValueError" in e for e in plugins.errors), plugins.errors
    assert "'again'" in plugins.errors[0] and "'first'" in plugins.errors[1]
    assert set(plugins.sink_factories()) == {"one"}


def test_a_wrapper_around_capture_register_sinks_is_ignored_and_named() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def capture_register_sinks(self, register):
            register("sneaky", EchoSink)
            return (yield)

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(Wrapper(), "wrapper") and plugins.register(Sinks("plain"), "plain")
    assert set(plugins.sink_factories()) == {"plain"}
    [error] = plugins.errors
    assert "plugin 'wrapper'" in error and "is ignored" in error and "cannot be a wrapper" in error


def test_an_optional_hook_nobody_specifies_is_tolerated_and_a_raw_registration_is_checked() -> None:
    class Optional:
        @hookimpl(optionalhook=True)
        def capture_future_hook(self, record):
            record["future"] = True

        @hookimpl
        def capture_prepare_record(self, record):
            record["optional"] = True

    class Typo:
        @hookimpl
        def capture_prepare_recrod(self, record):
            record["typo"] = True

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(Optional(), "optional")
    plugins.pm.register(Typo(), name="raw")  # behind the facade: no PluginInfo, not in the order
    plugins.check_pending()
    [error] = plugins.errors
    assert "plugin 'raw'" in error and "unknown hook 'capture_prepare_recrod'" in error
    assert "did you mean 'capture_prepare_record'" in error
    assert plugins.pm.get_plugin("raw") is None and plugins.pm.get_plugin("optional") is not None
    record: dict[str, object] = {}
    plugins.prepare_record(record)
    assert record == {"optional": True}


def test_an_ordinary_exception_of_a_prepare_hook_reaches_the_caller_unchanged() -> None:
    class Broken:
        @hookimpl
        def capture_prepare_record(self, record):
            raise ValueError("no such field")

    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(Broken(), "broken")
    with pytest.raises(ValueError, match="no such field") as info:
        plugins.prepare_record({})
    assert not isinstance(info.value, PluginError)


def test_one_distribution_seen_twice_on_sys_path_is_loaded_once_without_complaint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "capture_twice_seen"
    for site_name in ("site-a", "site-b"):  # e.g. the layer's folder and a copy in the function
        site = tmp_path / site_name
        info = site / "capture_ext_twice-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: capture-ext-twice\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[capture_ext]\ntwice = {module}\n")
        (site / f"{module}.py").write_text(
            "from capture_ext import hookimpl\n\n"
            "@hookimpl\n"
            "def capture_register_sinks(register):\n"
            "    register('twice', dict)\n"
        )
        monkeypatch.syspath_prepend(str(site))
    try:
        plugins = get_plugin_manager()
        assert plugins.errors == []
        assert "twice" in plugins.sink_factories()
        assert plugins.describe("twice") == f"{module} from capture-ext-twice 1.0"
        assert plugins.describe("nobody") == "nobody"  # an unknown plugin is named as given
    finally:
        sys.modules.pop(module, None)
