"""The plugin manager and a typed facade over its hooks.

Discovery order: built-in sinks (entry points ``builtin_*`` of this distribution), then every
other ``capture_ext`` entry point by name, skipping the names (entry-point or distribution) in
``CAPTURE_DISABLED_PLUGINS``. Whatever a plugin does wrong (fails to import, implements a hook
that does not exist or with arguments the spec does not have, raises while registering, claims
a sink name another plugin already has) is reported in :attr:`Plugins.errors`, logged, and costs
only that plugin: it never takes the extension down. Core code calls the facade, never
``pm.hook`` directly.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from capture_ext import hookspecs
from capture_ext.models import SinkFactory
from capture_ext.variables import Variable

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "capture_ext"
BUILTIN_PREFIX = "builtin_"
#: Sink names end up in ``CAPTURE_SINKS`` (comma-separated) and ``CAPTURE_<SINK>_*`` variables.
SINK_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
VARIABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


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
    hooks: list[str] = field(default_factory=list)
    error: str = ""
    disabled: bool = False

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else "error" if self.error else "ok"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Plugins:
    """Typed facade: the only place that talks to pluggy."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.infos: dict[str, PluginInfo] = {}
        self.errors: list[str] = []
        #: Worth a look but harmless, e.g. a name in CAPTURE_DISABLED_PLUGINS that matches nothing.
        self.warnings: list[str] = []
        #: Wall time spent discovering and importing entry points (a cold-start cost).
        self.load_ms = 0.0
        self._order: list[str] = []
        self._factories: dict[str, SinkFactory] = {}
        self._owners: dict[str, str] = {}
        self._variables: dict[str, tuple[Variable, ...]] = {}
        self._collected = False

    # -- registration -------------------------------------------------------------------
    def register(self, plugin: Any, name: str, info: PluginInfo | None = None) -> bool:
        """Register one plugin object (module or class instance) under ``name``.

        Returns False (and reports why) when pluggy refuses it: an implementation whose
        arguments are not in the hook's spec, a name already taken, a blocked name.
        """
        info = info or PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__))
        if self.pm.is_blocked(name):
            info.disabled = True
            self.infos[name] = info
            return False
        coroutines = [
            attr
            for attr in dir(plugin)
            if self.pm.parse_hookimpl_opts(plugin, attr) is not None
            and inspect.iscoroutinefunction(getattr(plugin, attr, None))
        ]
        if coroutines:  # pluggy would call it, get a coroutine, and never await it
            self._fail(info, PluginError(f"hooks must be plain functions, not `async def`: {', '.join(coroutines)}"))
            return False
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            self._fail(info, exc, "has an invalid hook implementation")
            return False
        except Exception as exc:  # duplicate plugin names or objects
            self._fail(info, exc)
            return False
        info.hooks = sorted(set(self._hook_names(plugin)))
        self.infos[name] = info
        self._order.append(name)
        return True

    def _hook_names(self, plugin: Any) -> Iterable[str]:
        for caller in self.pm.get_hookcallers(plugin) or ():
            yield caller.name

    def load_entry_points(self, disabled: Iterable[str] = ()) -> None:
        """Load the ``capture_ext`` entry-point group; built-ins come first."""
        started = time.perf_counter()
        blocked = {_normalise(name) for name in disabled}
        entry_points = sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (not ep.name.startswith(BUILTIN_PREFIX), ep.name),
        )
        seen: dict[str, str] = {}
        matched: set[str] = set()
        for ep in entry_points:
            dist = ep.dist
            dist_name = dist.name if dist else ""
            info = PluginInfo(ep.name, ep.value, dist_name, dist.version if dist else "")
            if ep.name in seen:
                if _normalise(seen[ep.name]) != _normalise(dist_name):
                    self._fail(
                        info,
                        PluginError(
                            f"the entry-point name is already used by distribution {seen[ep.name]!r}; "
                            f"uninstall or disable one of them"
                        ),
                        "was not loaded",
                        record=False,
                    )
                continue  # else: the same distribution visible twice on sys.path
            seen[ep.name] = dist_name
            names = {_normalise(ep.name), _normalise(dist_name)} if dist_name else {_normalise(ep.name)}
            matched |= names & blocked
            if names & blocked:
                logger.info("plugin %s is disabled by CAPTURE_DISABLED_PLUGINS", ep.name)
                self.pm.set_blocked(ep.name)
                info.disabled = True
                self.infos[ep.name] = info
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # a plugin's sys.exit() or Ctrl-C-alike must not end the extension
                self._fail(info, exc, "failed to import")
                continue
            self.register(plugin, ep.name, info)
        for name in sorted(blocked - matched):
            self.warnings.append(
                f"CAPTURE_DISABLED_PLUGINS names {name!r}, which is no installed plugin or distribution "
                f"(installed: {', '.join(sorted(seen)) or 'none'})"
            )
            logger.warning("%s", self.warnings[-1])
        self.load_ms = (time.perf_counter() - started) * 1000
        logger.debug("loaded %d plugin entry points in %.1f ms", len(seen), self.load_ms)

    def check_pending(self) -> None:
        """Unregister plugins that implement hooks with no spec (typos, removed hooks).

        pluggy's own ``check_pending()`` raises on the first one; here each offender is
        reported with a suggestion and dropped, and the others keep working.
        """
        known = sorted(
            name for name, caller in vars(self.pm.hook).items() if not name.startswith("_") and caller.has_spec()
        )
        for hook_name, caller in list(vars(self.pm.hook).items()):
            if hook_name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(hook_name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known hooks: {', '.join(known)}"
                info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name)
                self._fail(info, PluginError(f"unknown hook {hook_name!r}{hint}"), "is not loaded")
                self._unregister(impl.plugin_name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # pragma: no cover - belt and braces
            self.errors.append(f"plugin validation failed: {exc}")
            logger.error("plugin validation failed: %s", exc)

    def _unregister(self, name: str) -> None:
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        if name in self._order:
            self._order.remove(name)

    def _fail(
        self, info: PluginInfo, exc: BaseException, what: str = "failed to register", *, record: bool = True
    ) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        if record:
            self.infos[info.name] = info
        origin = f"{info.module}" + (f" from {info.distribution} {info.version}" if info.distribution else "")
        message = f"plugin {info.name!r} ({origin}) {what}: {info.error}"
        self.errors.append(message)
        logger.error("%s; the extension continues without it", message)

    # -- hooks ----------------------------------------------------------------------------
    def sink_factories(self) -> dict[str, SinkFactory]:
        """Call ``capture_register_sinks`` on every plugin once and return name -> factory.

        Plugins are asked in registration order (built-ins first), so on a name clash the
        earlier plugin keeps the name. Each plugin is called on its own: one that raises
        loses only the sinks it had not registered yet.
        """
        if self._collected:
            return dict(self._factories)
        self._collected = True
        rank = {name: i for i, name in enumerate(self._order)}
        impls = sorted(
            self.pm.hook.capture_register_sinks.get_hookimpls(),
            key=lambda impl: rank.get(impl.plugin_name, len(rank)),
        )
        for impl in impls:
            owner = impl.plugin_name
            info = self.infos.setdefault(owner, PluginInfo(owner, getattr(impl.plugin, "__name__", owner)))
            if impl.hookwrapper or impl.wrapper:
                self._fail(info, PluginError("capture_register_sinks cannot be a wrapper"), "is ignored")
                continue

            def register(
                name: str, factory: SinkFactory, *, variables: Sequence[Variable] = (), _owner: str = owner
            ) -> None:
                self._add_factory(name, factory, _owner, variables)

            kwargs: dict[str, Any] = {"register": register}
            try:
                impl.function(*(kwargs[arg] for arg in impl.argnames))
            except BaseException as exc:  # SystemExit, KeyboardInterrupt, CancelledError: the plugin's alone
                self._fail(info, exc, "raised in capture_register_sinks")
        return dict(self._factories)

    def sink_variables(self) -> dict[str, tuple[Variable, ...]]:
        """Sink name -> the variables it declared with ``register(..., variables=...)``."""
        self.sink_factories()
        return {name: self._variables.get(name, ()) for name in self._factories}

    def _check_variables(self, name: str, variables: Any) -> str | None:
        """Why ``variables`` cannot be registered for sink ``name``, or None."""
        from capture_ext.core.config import VARIABLES

        if isinstance(variables, (str, bytes)) or not isinstance(variables, Iterable):
            return f"variables of sink {name!r} must be a sequence of capture_ext.variables.Variable"
        core = {var.name for var in VARIABLES}
        for var in variables:
            if not isinstance(var, Variable):
                return f"variables of sink {name!r} must be capture_ext.variables.Variable objects, not {var!r:.60}"
            if not VARIABLE_NAME.match(var.name):
                return f"sink {name!r} declares variable {var.name!r}: use upper-case letters, digits and '_'"
            if var.name in core:
                return f"sink {name!r} declares {var.name}, which is one of capture-ext's own variables"
        return None

    def _add_factory(self, name: str, factory: SinkFactory, owner: str, variables: Sequence[Variable] = ()) -> None:
        info = self.infos[owner]
        problem = self._check_variables(name, variables)
        if problem is not None:
            self._fail(info, PluginError(problem), "registered a sink badly")
            return
        if not isinstance(name, str) or not SINK_NAME.match(name):
            self._fail(
                info,
                PluginError(f"invalid sink name {name!r}: use lower-case letters, digits and '_'"),
                "registered a sink badly",
            )
            return
        if not callable(factory):
            self._fail(info, PluginError(f"the factory for sink {name!r} is not callable"), "registered a sink badly")
            return
        if name in self._factories:
            first = self._owners[name]
            message = (
                f"sink name {name!r} is registered by two plugins: {first!r} "
                f"({self.describe(first)}) and {owner!r} ({self.describe(owner)}); "
                f"{first!r} keeps it; disable one with CAPTURE_DISABLED_PLUGINS"
            )
            self.errors.append(message)
            logger.error("%s", message)
            info.error = info.error or f"PluginError: {message}"
            return
        self._factories[name] = factory
        self._owners[name] = owner
        self._variables[name] = tuple(variables)
        info.sinks.append(name)
        self._warn_on_redefinitions(name)

    def _warn_on_redefinitions(self, name: str) -> None:
        """Two sinks may read one variable (the S3 sinks share theirs), but must mean the same by it."""
        for var in self._variables[name]:
            for other, declared in self._variables.items():
                first = next((v for v in declared if v.name == var.name), None)
                if other == name or first is None or first == var:
                    continue
                self.warnings.append(
                    f"sinks {other!r} and {name!r} both read {var.name} but declare it differently "
                    f"(defaults {first.default!r} and {var.default!r}); set it with both in mind"
                )
                logger.warning("%s", self.warnings[-1])
                break

    def describe(self, plugin_name: str) -> str:
        """``module from distribution version`` for messages."""
        info = self.infos.get(plugin_name)
        if info is None:
            return plugin_name
        return info.module + (f" from {info.distribution} {info.version}" if info.distribution else "")

    def is_builtin_sink(self, name: str) -> bool:
        """Whether sink ``name`` ships with capture-ext (contract-tested, trusted to run inline)."""
        return self.sink_owner(name).startswith(BUILTIN_PREFIX)

    def sink_owner(self, name: str) -> str:
        """The plugin that registered sink ``name`` ("" when none did)."""
        self.sink_factories()
        return self._owners.get(name, "")

    def prepare_record(self, record: dict[str, Any]) -> None:
        """Run every ``capture_prepare_record`` implementation on ``record`` (in place).

        A hook's ``SystemExit``, ``KeyboardInterrupt`` or ``CancelledError`` (it is a plain
        function: no cancellation can reach it from outside) becomes a :class:`PluginError`, so it
        costs that record only, as any other exception of a hook does.
        """
        try:
            self.pm.hook.capture_prepare_record(record=record)
        except Exception:
            raise
        except BaseException as exc:
            raise PluginError(f"capture_prepare_record raised {type(exc).__name__}: {exc}") from exc

    @property
    def has_prepare_hooks(self) -> bool:
        return bool(self.pm.hook.capture_prepare_record.get_hookimpls())


def get_plugin_manager(load_entrypoints: bool = True, disabled: Iterable[str] = ()) -> Plugins:
    """Build the plugin manager; tests pass ``load_entrypoints=False`` and register explicitly.

    Plugins registered later through :meth:`Plugins.register` should be followed by
    :meth:`Plugins.check_pending` to drop any with unknown hooks.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    if load_entrypoints:
        plugins.load_entry_points(disabled)
    else:
        for name in disabled:
            pm.set_blocked(name)
    plugins.check_pending()
    return plugins
