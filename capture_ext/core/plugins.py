"""The plugin manager and a typed facade over its hooks.

Discovery order: built-in sinks (entry point ``builtin_*`` of this distribution), then every
other ``capture_ext`` entry point, skipping names in ``CAPTURE_DISABLED_PLUGINS``. A plugin that
fails to import or to register is reported and skipped; it never takes the extension down.
Core code calls the facade, never ``pm.hook`` directly.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from capture_ext import hookspecs
from capture_ext.models import SinkFactory

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "capture_ext"


class PluginError(Exception):
    """A plugin could not be loaded or broke the registration rules."""


@dataclass(slots=True)
class PluginInfo:
    """What ``capture-ext plugins`` shows for one plugin."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    sinks: list[str] = field(default_factory=list)
    error: str = ""


class Plugins:
    """Typed facade: the only place that talks to pluggy."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.infos: dict[str, PluginInfo] = {}
        self.errors: list[str] = []
        self._factories: dict[str, SinkFactory] = {}
        self._owners: dict[str, str] = {}
        self._collected = False

    # -- registration -------------------------------------------------------------------
    def register(self, plugin: Any, name: str, info: PluginInfo | None = None) -> None:
        """Register one plugin object (module or class instance) under ``name``."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation errors, duplicate names
            self._fail(info or PluginInfo(name, getattr(plugin, "__name__", repr(plugin))), exc)
            return
        self.infos[name] = info or PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__))

    def load_entry_points(self, disabled: Iterable[str] = ()) -> None:
        """Load the ``capture_ext`` entry-point group; built-ins come first."""
        blocked = set(disabled)
        entry_points = sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (not ep.name.startswith("builtin_"), ep.name),
        )
        seen: set[str] = set()
        for ep in entry_points:
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = ep.dist
            info = PluginInfo(ep.name, ep.value, dist.name if dist else "", dist.version if dist else "")
            if ep.name in blocked:
                logger.info("plugin %s is disabled by CAPTURE_DISABLED_PLUGINS", ep.name)
                self.pm.set_blocked(ep.name)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(info, exc, "failed to import")
                continue
            self.register(plugin, ep.name, info)

    def _fail(self, info: PluginInfo, exc: BaseException, what: str = "failed to register") -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        self.infos[info.name] = info
        message = f"plugin {info.name!r} ({info.module}) {what}: {info.error}"
        self.errors.append(message)
        logger.error("%s; the extension continues without it", message)

    # -- hooks ----------------------------------------------------------------------------
    def sink_factories(self) -> dict[str, SinkFactory]:
        """Call ``capture_register_sinks`` on every plugin once and return name -> factory."""
        if self._collected:
            return dict(self._factories)
        self._collected = True
        for impl in reversed(self.pm.hook.capture_register_sinks.get_hookimpls()):
            plugin_name = impl.plugin_name

            def register(name: str, factory: SinkFactory, _owner: str = plugin_name) -> None:
                self._add_factory(name, factory, _owner)

            try:
                impl.function(register=register)
            except PluginError as exc:
                self.errors.append(str(exc))
                logger.error("%s", exc)
            except Exception as exc:
                self._fail(self.infos.get(plugin_name, PluginInfo(plugin_name, plugin_name)), exc)
        return dict(self._factories)

    def _add_factory(self, name: str, factory: SinkFactory, owner: str) -> None:
        if not isinstance(name, str) or not name or not callable(factory):
            raise PluginError(f"plugin {owner!r} called register() with an invalid name or factory: {name!r}")
        if name in self._factories:
            raise PluginError(
                f"sink name {name!r} is registered by two plugins: {self._owners[name]!r} and {owner!r}; "
                f"disable one with CAPTURE_DISABLED_PLUGINS"
            )
        self._factories[name] = factory
        self._owners[name] = owner
        self.infos.setdefault(owner, PluginInfo(owner, owner)).sinks.append(name)

    def sink_owner(self, name: str) -> str:
        return self._owners.get(name, "")

    def prepare_record(self, record: dict[str, Any]) -> None:
        """Run every ``capture_prepare_record`` implementation on ``record`` (in place)."""
        self.pm.hook.capture_prepare_record(record=record)

    @property
    def has_prepare_hooks(self) -> bool:
        return bool(self.pm.hook.capture_prepare_record.get_hookimpls())


def get_plugin_manager(load_entrypoints: bool = True, disabled: Iterable[str] = ()) -> Plugins:
    """Build the plugin manager; tests pass ``load_entrypoints=False`` and register explicitly."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    if load_entrypoints:
        plugins.load_entry_points(disabled)
    pm.check_pending()
    return plugins
