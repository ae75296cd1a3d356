"""Building the configured sinks from the plugins, with one loud line per problem.

An unknown sink name, a sink whose Python package is missing, or a factory that fails (for
example a missing required setting), raises anything at all (``SystemExit`` included) or hangs
disables that sink only; the others run. A
plugin's sink is built in its own thread under a time limit and runs there
(:mod:`capture_ext.core.isolation`); built-in sinks are built and run inline. With
``CAPTURE_STRICT=1`` the lifecycle turns the returned problems into an init error instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from capture_ext.core.config import Settings
from capture_ext.core.isolation import IsolatedSink, SinkFault, describe
from capture_ext.models import Sink, SinkContext

logger = logging.getLogger(__name__)

PrepareHook = Callable[[dict[str, Any]], None]


def missing_requirement(factory: Callable[..., Any]) -> str | None:
    """Why a sink cannot run in this environment, or None.

    A sink (factory) may list the top-level modules it imports on first use in ``requires``, and
    the distribution that brings them in ``install_hint``. They are found without being imported,
    so this costs nothing at cold start, and a sink whose package is missing is a configuration
    error now instead of a start-up failure retried after every flush.
    """
    import importlib.util

    for module in getattr(factory, "requires", ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            hint = getattr(factory, "install_hint", "")
            return f"needs the Python package {module!r}, which is not installed" + (
                f" (pip install {hint!r})" if hint else ""
            )
    return None


def sink_context(name: str, settings: Settings, env: Mapping[str, str], environment_id: str) -> SinkContext:
    """What a sink factory is given: the same for built-in and plugin sinks."""
    return SinkContext(
        name=name,
        env=env,
        function_name=settings.function_name,
        function_version=settings.function_version,
        environment_id=environment_id,
        region=settings.region,
        logger=logging.getLogger(f"capture_ext.sinks.{name}"),
    )


def build_sinks(
    settings: Settings, env: Mapping[str, str], environment_id: str
) -> tuple[dict[str, Sink], PrepareHook | None, list[str]]:
    """Return (sinks by name, the prepare hook or None, problems)."""
    from capture_ext.core.plugins import get_plugin_manager

    plugins = get_plugin_manager(load_entrypoints=True, disabled=settings.disabled_plugins)
    problems = list(plugins.errors)
    factories = plugins.sink_factories()
    problems += [e for e in plugins.errors if e not in problems]
    sinks: dict[str, Sink] = {}
    for name in dict.fromkeys(settings.sinks):
        factory = factories.get(name)
        if factory is None:
            known = ", ".join(sorted(factories)) or "none"
            problems.append(f"CAPTURE_SINKS names unknown sink {name!r} (installed sinks: {known}); it is disabled")
            logger.error("%s", problems[-1])
            continue
        missing = missing_requirement(factory)
        if missing is not None:
            problems.append(f"sink {name!r} is disabled: {missing}")
            logger.error("%s", problems[-1])
            continue
        context = sink_context(name, settings, env, environment_id)
        try:
            if plugins.is_builtin_sink(name):
                sinks[name] = factory(context)
            else:
                sinks[name] = IsolatedSink.build(name, factory, context)
        except BaseException as exc:  # a factory's SystemExit or KeyboardInterrupt is its failure alone
            plain = isinstance(exc, Exception) and not isinstance(exc, SinkFault)
            owner = "" if plugins.is_builtin_sink(name) else f" (plugin {plugins.describe(plugins.sink_owner(name))})"
            problems.append(f"sink {name!r} is disabled: {exc if plain else describe(exc)}{owner}")
            logger.error("%s", problems[-1])
    if not sinks:
        logger.error("no usable sink: records are accepted and counted, but not delivered anywhere")
    prepare = plugins.prepare_record if plugins.has_prepare_hooks else None
    return sinks, prepare, problems
