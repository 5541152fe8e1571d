"""Plugins: build the plugin manager and call hooks through a typed façade.

The folder holds what hosts plugins: entry-point loading (``entrypoints``), the
core's trylast fallbacks (``defaults``), the config file (``config``), the
plugins' declared config schemas (``schema``) and the core's own tables
(``culling``, ``pools``; :func:`core_schema`).
Nothing loads at import time: :func:`make_plugin_manager` builds a fresh
manager each time. Host code calls hooks only through :class:`HookRelay`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from ..contract import hookspecs
from ..contract.errors import LaunchError, PluginError
from ..contract.types import KernelType, UnavailableType
from ..wire.connection import redact_keys

if TYPE_CHECKING:
    import importlib.metadata
    from collections.abc import Awaitable, Iterable, Mapping

    from ..contract.hookspecs import HubContext
    from ..contract.manager import KernelManager
    from ..contract.types import LaunchRequest, LaunchResult, RestartPolicy
    from .entrypoints import EntryPoint
    from .schema import ConfigSchema

__all__ = [
    "ENTRYPOINT_GROUP",
    "HookRelay",
    "PluginInfo",
    "await_me_maybe",
    "core_schema",
    "make_plugin_manager",
]

log = logging.getLogger("kernel_hub.plugins")

ENTRYPOINT_GROUP = "kernel_hub"

T = TypeVar("T")


def core_schema(table: str) -> ConfigSchema | None:
    """Return the schema of *table* when the core reads it itself (``config.CORE_TABLES``).

    ``[culling]`` (:mod:`.culling`), ``[pool]`` (:mod:`.pools`) and ``[transport]``
    (:mod:`.transport`); ``None`` for a plugin's table. Imported on use: most hosts read none.
    """
    if table == "culling":
        from .culling import SCHEMA as culling

        return culling
    if table == "pool":
        from .pools import SCHEMA as pools

        return pools
    if table == "transport":
        from .transport import SCHEMA as transport

        return transport
    return None


async def await_me_maybe(value: T | Awaitable[T]) -> T:
    """Return *value*, awaited first if awaitable: the one place where hook output is awaited."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class PluginInfo:
    """What ``kernel-hub plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of every field (``kernel-hub plugins --json``)."""
        return asdict(self)


class KernelHubPluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that remembers distributions and load failures."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        #: plugin name -> (distribution name, version) for entry-point plugins
        self.distributions: dict[str, tuple[str, str]] = {}
        #: plugin name -> PluginInfo for plugins that failed to load
        self.failed: dict[str, PluginInfo] = {}

    def distribution_of(self, name: str) -> str:
        """Return ``"<dist> <version>"`` for plugin *name*, or a description of it."""
        if name in self.distributions:
            return " ".join(self.distributions[name])
        return f"plugin {name!r} (registered in code)"


def _entry_points() -> Iterable[EntryPoint | importlib.metadata.EntryPoint]:
    # Our own reader: importlib.metadata costs ~2.6 MB of RSS and is not needed to launch.
    # Imported here, as a host that passes its plugins explicitly never reads entry points.
    from .entrypoints import entry_points

    return entry_points(ENTRYPOINT_GROUP)


def load_entrypoint_plugins(
    pm: KernelHubPluginManager,
    entry_points: Iterable[EntryPoint | importlib.metadata.EntryPoint] | None = None,
) -> None:
    """Register every plugin of the ``kernel_hub`` entry-point group.

    A plugin that fails to import is logged and recorded in ``pm.failed``; the
    others still load. Two distributions registering the same plugin name is a
    :class:`PluginError` that names both.
    """
    for ep in _entry_points() if entry_points is None else entry_points:
        if pm.is_blocked(ep.name):
            continue
        dist = (ep.dist.name, ep.dist.version) if ep.dist is not None else (ep.value, "")
        if pm.get_plugin(ep.name) is not None:
            other = pm.distribution_of(ep.name)
            if other == " ".join(dist):
                continue  # the same distribution seen twice on sys.path
            raise PluginError(
                f"two plugins are named {ep.name!r}: {other} and {' '.join(dist)}. "
                "Uninstall one of them, or block one with KERNEL_HUB_DISABLE_PLUGINS."
            )
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the others
            log.warning("kernel_hub plugin %r (%s) failed to load: %r", ep.name, dist[0], exc)
            # The type, the message and what was imported: enough to find the culprit.
            error = f"{type(exc).__name__}: {exc} (importing {ep.value})"
            pm.failed[ep.name] = PluginInfo(ep.name, dist[0], dist[1], error=error)
            continue
        try:
            pm.register(plugin, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            log.warning("kernel_hub plugin %r (%s) is invalid: %s", ep.name, dist[0], exc)
            pm.failed[ep.name] = PluginInfo(ep.name, dist[0], dist[1], error=str(exc))
            continue
        pm.distributions[ep.name] = dist


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    plugins: Iterable[object] = (),
    entry_points: Iterable[EntryPoint | importlib.metadata.EntryPoint] | None = None,
) -> KernelHubPluginManager:
    """Build a fresh plugin manager.

    Order: add the hookspecs, block plugins (*blocked* plus the comma-separated
    ``KERNEL_HUB_DISABLE_PLUGINS``), load entry points, register *plugins*
    (explicit, for tests and embedding), register the core defaults
    (``trylast``), then ``check_pending()``. ``KERNEL_HUB_TRACE_PLUGINS=1`` logs
    every hook call at DEBUG level on the ``kernel_hub.plugins`` logger, with
    connection keys redacted.
    """
    from .defaults import DEFAULT_PLUGINS

    pm = KernelHubPluginManager()
    pm.add_hookspecs(hookspecs)
    env_blocked = os.environ.get("KERNEL_HUB_DISABLE_PLUGINS", "")
    for name in [*blocked, *(n.strip() for n in env_blocked.split(",") if n.strip())]:
        pm.set_blocked(name)
    if load_entrypoints:
        load_entrypoint_plugins(pm, entry_points)
    for plugin in plugins:
        pname = getattr(plugin, "name", None) or getattr(plugin, "__name__", None)
        pm.register(plugin, name=pname if isinstance(pname, str) else None)
    for name, plugin in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None and not pm.is_blocked(name):
            pm.register(plugin, name=name)
    pm.check_pending()
    if os.environ.get("KERNEL_HUB_TRACE_PLUGINS"):
        # Hook arguments and results hold connection info: keys never reach the log.
        pm.trace.root.setwriter(lambda msg: log.debug("%s", redact_keys(msg.rstrip())))
        pm.enable_tracing()
    return pm


class HookRelay:
    """Typed, keyword-only calls of each hook; the only way the hub calls plugins."""

    def __init__(self, pm: KernelHubPluginManager) -> None:
        self.pm = pm

    def plugin_name(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or repr(plugin)

    def _routed(self, hook: str, owner: str) -> Any:
        """Return a caller of *hook* that reaches only plugin *owner* and the core defaults.

        Routing by ownership: the plugin that offered a kernel type is the only
        one asked to launch, manage or choose a restart policy for it, so no
        plugin needs to decline types it does not own.
        """
        from .defaults import DEFAULT_PLUGINS

        keep = {owner, *(name for name, _ in DEFAULT_PLUGINS)}
        others = [p for name, p in self.pm.list_name_plugin() if name not in keep]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    async def find_kernel_types(
        self, *, hub: HubContext, only: str | None = None
    ) -> list[tuple[str, KernelType | UnavailableType]]:
        """Call every ``find_kernel_types`` implementation concurrently.

        :param only: the name of the one plugin to ask (``None``: all of them).
        :returns: ``(plugin name, kernel type)`` pairs, with the
            :class:`UnavailableType` notes plugins gave. A plugin that raises or
            returns something else than kernel types is logged and skipped.
        """
        impls = [
            impl
            for impl in self.pm.hook.find_kernel_types.get_hookimpls()
            if only is None or impl.plugin_name == only
        ]
        plugins = self.pm.get_plugins()

        async def one(impl: pluggy.HookImpl) -> list[tuple[str, KernelType | UnavailableType]]:
            name = impl.plugin_name
            try:
                # Each plugin on its own (so one that raises costs only its own types), but
                # through pluggy, so that tracing and hook-call monitoring see the call.
                others = [p for p in plugins if p is not impl.plugin]
                call = self.pm.subset_hook_caller("find_kernel_types", remove_plugins=others)
                answers = call(hub=hub)
                result: Any = await await_me_maybe(answers[0]) if answers else None
                types = [] if result is None else list(result)
            except Exception as exc:  # noqa: BLE001 - isolate a broken plugin
                log.warning(
                    "kernel_hub plugin %r failed in find_kernel_types (%s): %r; "
                    "its kernel types are left out",
                    name,
                    self.pm.distribution_of(name),
                    exc,
                )
                return []
            good: list[tuple[str, KernelType | UnavailableType]] = []
            for kt in types:
                if isinstance(kt, KernelType | UnavailableType):
                    good.append((name, kt))
                else:
                    log.warning(
                        "kernel_hub plugin %r returned %r from find_kernel_types; "
                        "expected KernelType objects (skipped)",
                        name,
                        kt,
                    )
            return good

        results = await asyncio.gather(*(one(i) for i in reversed(impls)))
        return [pair for r in results for pair in r]

    async def launch(
        self, *, plugin: str, hub: HubContext, kernel_type: KernelType, request: LaunchRequest
    ) -> LaunchResult:
        """Call the ``launch`` hook of *plugin*; raise :class:`PluginError` if it has none."""
        from ..contract.types import LaunchResult

        result = self._routed("launch", plugin)(hub=hub, kernel_type=kernel_type, request=request)
        if result is None:
            raise PluginError(
                f"plugin {plugin!r} ({self.pm.distribution_of(plugin)}) offers kernel type "
                f"{kernel_type.id!r} but does not launch it: it implements no launch hook "
                "or returned None; report this to the plugin's authors"
            )
        result = await await_me_maybe(result)
        if not isinstance(result, LaunchResult):
            raise PluginError(
                f"the launch hook for {kernel_type.id!r} returned {result!r}, not a LaunchResult"
            )
        return result

    async def make_manager(
        self,
        *,
        plugin: str,
        hub: HubContext,
        kernel_type: KernelType,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
    ) -> KernelManager:
        """Call the ``make_manager`` hook of *plugin* (and the core's nanny fallback)."""
        from ..contract.manager import KernelManager

        result = self._routed("make_manager", plugin)(
            hub=hub, kernel_type=kernel_type, connection_info=connection_info, state=state
        )
        if result is None:
            raise LaunchError(
                f"plugin {plugin!r} cannot rebuild a manager for kernel type "
                f"{kernel_type.id!r}: it implements no make_manager hook for saved state; "
                "ensure the plugin that launched the kernel is installed, in a version "
                "that supports re-attaching"
            )
        manager = await await_me_maybe(result)
        if not isinstance(manager, KernelManager):
            raise PluginError(
                f"make_manager for {kernel_type.id!r} returned {manager!r}, not a KernelManager"
            )
        if not manager.type_id:
            manager.type_id = kernel_type.id
        return manager

    def restart_policy(
        self, *, plugin: str, hub: HubContext, kernel_type: KernelType
    ) -> RestartPolicy:
        """Call the ``restart_policy`` hook of *plugin* (the core default always answers)."""
        from ..contract.types import RestartPolicy

        policy = self._routed("restart_policy", plugin)(hub=hub, kernel_type=kernel_type)
        return policy if isinstance(policy, RestartPolicy) else RestartPolicy()

    def list_plugins(self) -> list[PluginInfo]:
        """Return name, distribution, version and implemented hooks of every plugin."""
        from importlib.metadata import version as dist_version  # listing is not on the launch path

        from .defaults import DEFAULT_PLUGINS

        core = {name for name, _ in DEFAULT_PLUGINS}
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            dist, version = self.pm.distributions.get(name, (None, None))
            if name in core:  # the core's own trylast fallbacks
                dist, version = "kernel-hub", dist_version("kernel-hub")
            infos.append(PluginInfo(name, dist, version, hooks))
        infos.extend(self.pm.failed.values())
        return sorted(infos, key=lambda i: i.name)
