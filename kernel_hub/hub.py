"""KernelHub: the host's entry point. It loads plugins, lists and launches kernels.

The hub remembers which plugin offered each kernel type and routes ``launch``,
``make_manager`` and ``restart_policy`` to that plugin only. One kernel's life
belongs to its :class:`~kernel_hub.RunningKernel` (:mod:`kernel_hub.lifecycle.kernel`);
the launch sequence itself is :mod:`kernel_hub.lifecycle.starter`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
import uuid
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .contract.errors import KernelHubError, NoSuchKernelType, PluginError
from .contract.events import EventBus, KernelEvent
from .contract.types import (
    CullPolicy,
    KernelType,
    LaunchRequest,
    RestartPolicy,
    UnavailableType,
    check_encryption,
)
from .lifecycle.adapt import ADAPT_TIMEOUT, run_adaptation
from .lifecycle.keeper import StateKeeper, end_record
from .lifecycle.kernel import RunningKernel, first_line
from .lifecycle.monitor import ActivityMonitor
from .lifecycle.pool import KernelPool, PoolKey, take_spare
from .lifecycle.starter import Started, Starter
from .lifecycle.state import DEFAULT_GRACE, StateDir
from .plugins import HookRelay, PluginInfo, make_plugin_manager
from .plugins.config import CORE_TABLES, config_path, load_config, note_unknown_tables

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path

    from .contract.manager import KernelManager
    from .contract.types import TransportEncryption
    from .lifecycle.culler import Culler
    from .lifecycle.state import Record
    from .plugins import KernelHubPluginManager

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_KERNEL_TYPES",
    "KernelHub",
    "RunningKernel",
    "ShutdownReport",
    "shutdown_concurrency",
]

log = logging.getLogger("kernel_hub")

#: Tried in order when no kernel type is named: this Python's ipykernel, then the python3 spec.
DEFAULT_KERNEL_TYPES = ("ipykernel/python3", "spec/python3")


def shutdown_concurrency() -> int:
    """Return how many kernels :meth:`KernelHub.shutdown_all` ends at once by default.

    Four per CPU this process may run on, at least 8: a Python kernel's exit is
    mostly CPU (ipykernel: tens of ms), so more at once only makes each slower,
    and with 100 ipykernels ended at the same instant on 2 CPUs half of them
    missed a 5 s timeout and were killed.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(8, 4 * cpus)


@dataclasses.dataclass(frozen=True)
class ShutdownReport:
    """How :meth:`KernelHub.shutdown_all` ended the kernels; ``str()`` is its log line.

    :param politely: kernels whose process ended by itself (or had already ended).
    :param killed: kernels killed: no exit within *timeout* of their request (or *now*).
    :param failed: kernels whose shutdown raised (logged at DEBUG, the first named).
    :param seconds: how long the whole shutdown took.
    """

    politely: int = 0
    killed: int = 0
    failed: int = 0
    seconds: float = 0.0
    now: bool = False
    timeout: float = 5.0

    @property
    def total(self) -> int:
        return self.politely + self.killed + self.failed

    def __str__(self) -> str:
        if self.now:
            how = f"{self.killed} killed (now=True)"
        else:
            how = f"{self.politely} ended politely, {self.killed} killed"
            if self.killed:
                how += f" (no exit within {self.timeout:g} s of their shutdown_request)"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"shut down {self.total} kernels in {self.seconds:.1f} s: {how}{failed}"


class KernelHub:
    """Find, launch and keep track of kernels through the installed plugins.

    :param plugins: plugin objects to register besides the entry points (tests, embedding).
    :param load_entrypoints: load the ``kernel_hub`` entry-point group.
    :param blocked: plugin names not to load (also ``KERNEL_HUB_DISABLE_PLUGINS``).
    :param config: the parsed config; read from the config file
        (:func:`kernel_hub.plugins.config.config_path`) if ``None``.
    :param plugin_manager: a ready plugin manager (overrides the three previous arguments).
    :param cull: idle culling (:class:`~kernel_hub.CullPolicy`) for every kernel of the
        hub, or a mapping of type id (or ``"*"``: the rest) to a policy or ``None``
        (never cull that type). Where it is silent, the config file's ``[culling]``
        tables apply (:meth:`cull_policy` says which policy a type gets).
    :param state_dir: keep kernels across the host's death: record every kernel
        there (see :mod:`kernel_hub.lifecycle.state`), launch kernels so that they
        survive this process for *grace* seconds, and adopt, at :meth:`adopt`
        (called by ``async with``), the kernels an earlier host recorded.
        ``kernel_hub.default_state_dir(name)`` is the documented place (where
        ``kernel-hub ps`` looks). ``None`` (the default): kernels end with the host.
    :param grace: seconds a kernel of a hub with a *state_dir* outlives this
        process; after that, whatever no new hub adopted is ended and removed.
    :param transport_encryption: CurveZMQ for this hub's kernels, unless a launch or
        the config's ``[transport."<type id>"]`` says otherwise: ``"auto"`` (for every
        type that declares ``supported_encryption: ["curve"]``, ipykernel >= 7.4's
        types among them), ``"required"`` (a type that cannot is a
        :class:`~kernel_hub.LaunchError`) or ``"disabled"``; ``None`` (the default):
        the config's ``[transport] encryption``, else ``"auto"``. See
        :meth:`encryption_for` and :attr:`LaunchRequest.transport_encryption`.

    Use it as ``async with KernelHub() as hub:`` so that every kernel it
    launched is shut down on exit.
    """

    def __init__(
        self,
        *,
        plugins: Iterable[object] = (),
        load_entrypoints: bool = True,
        blocked: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
        plugin_manager: KernelHubPluginManager | None = None,
        cull: CullPolicy | Mapping[str, CullPolicy | None] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        grace: float = DEFAULT_GRACE,
        transport_encryption: str | None = None,
    ) -> None:
        if not isinstance(grace, int | float) or not grace > 0:
            raise ValueError(f"grace must be a positive number of seconds, not {grace!r}")
        self._encryption: TransportEncryption | None = (
            check_encryption(transport_encryption) if transport_encryption is not None else None
        )
        self._encryption_config: (
            tuple[TransportEncryption | None, dict[str, TransportEncryption]] | None
        ) = None
        #: The state dir (``None``: kernels end with this process).
        self.state: StateDir | None = StateDir(state_dir) if state_dir is not None else None
        #: Seconds this hub's kernels outlive it (with a state dir).
        self.grace = float(grace)
        self.pm = plugin_manager or make_plugin_manager(
            load_entrypoints=load_entrypoints, blocked=blocked, plugins=plugins
        )
        self.hooks = HookRelay(self.pm)
        self.config: Mapping[str, Any] = load_config() if config is None else config
        #: The file the config came from (named in config messages), or None: given as a mapping.
        self.config_file: Path | None = config_path() if config is None else None
        if config is None:  # the user's file: note, at debug level, the tables no plugin reads
            names = (name for name, _ in self.pm.list_name_plugin())
            note_unknown_tables(self.config, names, CORE_TABLES)
        self._types: dict[str, KernelType] = {}
        #: type id -> name of the plugin that offered it
        self._owners: dict[str, str] = {}
        #: type id -> why its plugin cannot offer it here (UnavailableType.reason)
        self._unavailable: dict[str, str] = {}
        self._kernels: dict[str, RunningKernel] = {}
        self._pools: dict[PoolKey, KernelPool] = {}
        #: Spares taken from a pool and being adapted to a launch (ended by shutdown_all).
        self._handing: set[RunningKernel] = set()
        #: A handed-out spare's launch id -> its id now (its provider emits under the first).
        self._aliases: dict[str, str] = {}
        self._cull: dict[str, CullPolicy | None] = (
            {"*": cull} if isinstance(cull, CullPolicy) else dict(cull or {})
        )
        for key, policy in self._cull.items():
            if policy is not None and not isinstance(policy, CullPolicy):
                raise TypeError(
                    f"cull[{key!r}] is {policy!r}; give a kernel_hub.CullPolicy(idle=...) or "
                    "None (never cull kernels of that type)"
                )
        self._cull_config: tuple[CullPolicy | None, dict[str, CullPolicy | None]] | None = None
        self._culler: Culler | None = None
        #: Lifecycle events of this hub's kernels; ``hub.events.subscribe(callback)``.
        self.events = EventBus()
        self._starter = Starter(self.hooks, self, self.manager_for)
        #: Records this hub's kernels in its state dir and adopts an earlier hub's.
        self._keeper = (
            StateKeeper(self, self.state, self.grace, self._starter)
            if self.state is not None
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def _bind_loop(self) -> None:
        """Remember the loop the hub runs on, so that other threads' events reach it."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    def emit(self, kind: str, kernel_id: str, type_id: str, **data: Any) -> None:
        """Emit a :class:`~kernel_hub.contract.events.KernelEvent` (``progress``, ...).

        Safe to call from any thread: from another thread than the hub's loop's,
        the event is delivered on that loop, so subscribers always run there.
        A pool's spare handed out under another id: its provider's events, under
        the id it launched the spare with, are emitted under the kernel's id.
        """
        kernel_id = self._aliases.get(kernel_id, kernel_id)
        event = KernelEvent(kind, kernel_id, type_id, data)
        if kind == "restarted" and self._keeper is not None and kernel_id in self._kernels:
            # A new process: new state, maybe new ports.
            self._keeper.record(self._kernels[kernel_id])
        elif kind == "connection_restored" and kernel_id in self._kernels:
            # Sockets reconnected through a new link: IOPub must deliver again before output.
            self._kernels[kernel_id].link_restored()
        loop = self._loop
        if (
            loop is not None
            and threading.get_ident() != self._loop_thread
            and loop.is_running()
            and not loop.is_closed()
        ):
            loop.call_soon_threadsafe(self.events.emit, event)
            return
        self.events.emit(event)

    def __repr__(self) -> str:
        return f"<KernelHub plugins={len(self.pm.get_plugins())} kernels={len(self._kernels)}>"

    async def __aenter__(self) -> KernelHub:
        if self.state is not None:
            await self.adopt()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def config_for(self, plugin: str) -> dict[str, Any]:
        """Return the config table of *plugin* (empty if absent)."""
        return dict(self.config.get(plugin, {}))

    def list_plugins(self) -> list[PluginInfo]:
        """Return every plugin with its distribution, version, hooks, or load error."""
        return self.hooks.list_plugins()

    # ---- discovery ----

    async def find_kernel_types(self) -> list[KernelType]:
        """Ask every plugin for its kernel types, concurrently, and return them sorted by id.

        :raises PluginError: when two plugins offer the same id (naming both).
        """
        self._bind_loop()
        found: dict[str, tuple[str, KernelType]] = {}
        unavailable: dict[str, str] = {}
        for plugin, kt in await self.hooks.find_kernel_types(hub=self):
            if isinstance(kt, UnavailableType):
                unavailable.setdefault(kt.id, kt.reason)
                continue
            if kt.id in found and found[kt.id][0] != plugin:
                first = found[kt.id][0]
                raise PluginError(
                    f"kernel type {kt.id!r} is offered by two plugins: "
                    f"{self.pm.distribution_of(first)} and {self.pm.distribution_of(plugin)}. "
                    "Uninstall or disable one of them (KERNEL_HUB_DISABLE_PLUGINS=name)."
                )
            found.setdefault(kt.id, (plugin, kt))
        self._types = {tid: kt for tid, (_, kt) in sorted(found.items())}
        self._owners = {tid: plugin for tid, (plugin, _) in found.items()}
        self._unavailable = {tid: why for tid, why in unavailable.items() if tid not in found}
        return list(self._types.values())

    @property
    def unavailable_types(self) -> dict[str, str]:
        """Type ids that plugins would offer but cannot here, with why (after discovery)."""
        return dict(self._unavailable)

    def _no_such_type(self, type_id: str) -> NoSuchKernelType:
        return NoSuchKernelType(type_id, self._types, unavailable=self._unavailable.get(type_id))

    def owner_of(self, type_id: str) -> str:
        """Return the name of the plugin that offered *type_id* (after discovery).

        :raises NoSuchKernelType: when no plugin offered it.
        """
        try:
            return self._owners[type_id]
        except KeyError:
            raise self._no_such_type(type_id) from None

    async def get_kernel_type(self, type_id: str) -> KernelType:
        """Return the kernel type *type_id*, discovering types if it is not known yet.

        :raises NoSuchKernelType: listing the known ids and close matches.
        """
        if type_id not in self._types and not await self._find_one(type_id):
            await self.find_kernel_types()
        try:
            return self._types[type_id]
        except KeyError:
            raise self._no_such_type(type_id) from None

    async def _find_one(self, type_id: str) -> bool:
        """Ask only the plugin named as *type_id*'s provider for its types; True if it has it.

        What a launch of one known type costs: no other plugin is asked (no Docker
        engine pinged, no SSH config read for ``ipykernel/python3``). The types found
        are added to those known; :meth:`find_kernel_types` asks everyone.
        """
        provider = type_id.partition("/")[0]
        if not provider or self.pm.get_plugin(provider) is None:
            return False
        self._bind_loop()
        found = False
        for plugin, kt in await self.hooks.find_kernel_types(hub=self, only=provider):
            if isinstance(kt, UnavailableType):
                self._unavailable.setdefault(kt.id, kt.reason)
            elif kt.id not in self._types:
                self._types[kt.id] = kt
                self._owners[kt.id] = plugin
                found = found or kt.id == type_id
        return found

    async def default_kernel_type(self) -> KernelType:
        """Return the first available of :data:`DEFAULT_KERNEL_TYPES`."""
        for tid in DEFAULT_KERNEL_TYPES:
            if tid in self._types or await self._find_one(tid):
                return self._types[tid]
        await self.find_kernel_types()
        for tid in DEFAULT_KERNEL_TYPES:
            if tid in self._types:
                return self._types[tid]
        # The first default that a plugin says why it cannot offer is the one to fix.
        for tid in DEFAULT_KERNEL_TYPES:
            if tid in self._unavailable:
                raise self._no_such_type(tid)
        raise self._no_such_type(DEFAULT_KERNEL_TYPES[0])

    # ---- launch ----

    def _restart_policy(
        self, kernel_type: KernelType, restart: RestartPolicy | bool | None, *, plugin: str
    ) -> RestartPolicy:
        """Resolve ``launch(restart=...)``: a policy wins, False is off, None/True ask the hook."""
        if isinstance(restart, RestartPolicy):
            return restart
        if restart is False:
            return RestartPolicy(enabled=False)
        policy = self.hooks.restart_policy(plugin=plugin, hub=self, kernel_type=kernel_type)
        return dataclasses.replace(policy, enabled=True) if restart is True else policy

    def _register(
        self,
        kt: KernelType,
        request: LaunchRequest,
        started: Started,
        *,
        plugin: str,
        policy: RestartPolicy,
        monitor: ActivityMonitor | None,
        ready_timeout: float,
        listed: bool = True,
        created: float | None = None,
        launch_id: str | None = None,
    ) -> RunningKernel:
        """Wrap a started kernel in its RunningKernel, record it and start watching it.

        :param listed: in :attr:`kernels` (a pool's spare is not, until handed out).
        :param launch_id: the id its provider knows it by, when not its own (an
            adopted kernel that was a pool's spare).
        """

        def emit(kind: str, **data: Any) -> None:
            self.emit(kind, kernel.id, kt.id, **data)  # its id now: a spare takes another

        kernel = RunningKernel(
            self,
            kernel_id=request.kernel_id,
            kernel_type=kt,
            request=request,
            started=started,
            starter=self._starter,
            emit=emit,
            on_end=self._forget,
            plugin=plugin,
            ready_timeout=ready_timeout,
            restart_policy=policy,
            monitor=monitor,
            launch_id=launch_id,
        )
        if created is not None:
            kernel.created = created
        if kernel.launch_id != kernel.id:
            self._aliases[kernel.launch_id] = kernel.id
        if listed:
            self._kernels[kernel.id] = kernel
            self._start_culler()
        if self._keeper is not None:
            self._keeper.record(kernel, pooled=not listed)
        kernel.start_watching()
        return kernel

    # ---- transport encryption ----

    @property
    def transport_encryption(self) -> TransportEncryption:
        """The hub-wide CurveZMQ policy: the host's, else the config's ``[transport]``, else
        ``"auto"`` (a type's own table may differ: :meth:`encryption_for`)."""
        if self._encryption is not None:
            return self._encryption
        return self._config_encryption()[0] or "auto"

    def encryption_for(self, type_id: str) -> TransportEncryption:
        """Return the CurveZMQ policy a launch of *type_id* gets when it names none.

        The first that speaks: the config's ``[transport."<type_id>"]``, the host's
        ``KernelHub(transport_encryption=...)``, the config's ``[transport]``, ``"auto"``.
        """
        per_type = self._config_encryption()[1]
        return per_type[type_id] if type_id in per_type else self.transport_encryption

    def configured_encryption(self, type_id: str) -> TransportEncryption | None:
        """The config file's policy for *type_id* (its own table, else ``[transport]``), or None."""
        everywhere, per_type = self._config_encryption()
        return per_type.get(type_id, everywhere)

    def _config_encryption(
        self,
    ) -> tuple[TransportEncryption | None, dict[str, TransportEncryption]]:
        if self._encryption_config is None:
            if "transport" in self.config:
                from .plugins.transport import config_encryption  # pay for it when used

                self._encryption_config = config_encryption(self)
            else:
                self._encryption_config = (None, {})
        return self._encryption_config

    # ---- culling ----

    def cull_policy(self, type_id: str) -> CullPolicy | None:
        """Return the :class:`~kernel_hub.CullPolicy` of kernels of *type_id*, or ``None``.

        The first that speaks: ``cull[type_id]`` given to the hub, the config's
        ``[culling."<type_id>"]`` (over its ``[culling]``), ``cull["*"]``, the
        config's ``[culling]``.
        """
        if type_id in self._cull:
            return self._cull[type_id]
        everywhere, per_type = self._config_cull()
        if type_id in per_type:
            return per_type[type_id]
        return self._cull["*"] if "*" in self._cull else everywhere

    @property
    def culler(self) -> Culler | None:
        """The hub's culler once a kernel runs under a :class:`~kernel_hub.CullPolicy`."""
        return self._culler

    def _config_cull(self) -> tuple[CullPolicy | None, dict[str, CullPolicy | None]]:
        """The config's ``[culling]`` policies: hub-wide, and per type id (read once)."""
        if self._cull_config is None:
            if "culling" in self.config:
                from .plugins.culling import config_policies  # pay for culling when used

                self._cull_config = config_policies(self)
            else:
                self._cull_config = (None, {})
        return self._cull_config

    def _start_culler(self) -> None:
        if self._culler is not None:
            self._culler.start()
            return
        everywhere, per_type = self._config_cull()
        policies = [p for p in (*self._cull.values(), everywhere, *per_type.values()) if p]
        if not policies:
            return
        from .lifecycle.culler import Culler

        self._culler = Culler(
            lambda: list(self._kernels.values()),
            lambda k: self.cull_policy(k.type_id),
            min(p.check_every for p in policies),
            self.emit,
        )
        self._culler.start()

    async def launch(
        self,
        type_id: str | None = None,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        kernel_id: str | None = None,
        ready_timeout: float = 60.0,
        restart: RestartPolicy | bool | None = None,
        nanny: bool = False,
        connection: Mapping[str, Any] | None = None,
        on_launched: Callable[[Started], object] | None = None,
        transport_encryption: str | None = None,
    ) -> RunningKernel:
        """Launch a kernel of *type_id* and return it once it answers (kernel_info and IOPub).

        Emits ``starting``, then ``ready`` (or ``failed`` when it cannot start).
        From then on a restarter watches the kernel: see *restart*.

        A ready kernel of a :meth:`pool` serves the launch when one fits (see
        :meth:`pool`): it takes the launch's *kernel_id*, request and restart
        policy, *on_launched* is called with it at once, and only ``ready`` is
        emitted, with ``pooled=True`` (``adapted=True`` when it was adapted to
        another cwd or env; ``spare=<its former id>`` when it took *kernel_id*).

        :param type_id: ``"<provider>/<name>"``; ``None`` for the default Python kernel.
        :param cwd: the kernel's working directory.
        :param env: extra environment variables for the kernel.
        :param params: provider-specific parameters.
        :param ready_timeout: seconds to wait for the kernel to answer (also on relaunch).
        :param restart: the restart policy: a :class:`RestartPolicy`, ``False``
            (never restart), or ``None`` / ``True`` for the ``restart_policy``
            hook's answer (``True`` turns it on even if the hook's is disabled).
        :param nanny: run the kernel under a local nanny instead of the plugin's
            own launch: for command-line (argv) types. The kernel can then be
            interrupted, killed and restarted by any process holding its
            connection info (what ``kernel-hub launch --nanny`` does).
        :param connection: the connection info of a kernel this one replaces, for
            hosts that relaunch kernels themselves (the Jupyter bridge on
            jupyter_client's ``restart_kernel``): its ports and key are reused where
            the provider can (see :attr:`LaunchRequest.connection`), so clients of
            the old kernel reach the new one. Compare ``kernel.connection_info``.
        :param on_launched: called on the hub's loop with the launched kernel's
            ``connection_info``, ``state`` and ``manager`` (a ``Started``) as soon
            as it is launched, before it answers; called again if it is launched
            once more with new ports (a port taken meanwhile). For a host whose
            own client waits for the kernel to answer, with its own timeout (the
            Jupyter bridge: jupyter_client's ``startup_timeout``).
        :param transport_encryption: CurveZMQ for this kernel (``"disabled"``,
            ``"auto"``, ``"required"``); ``None``: :meth:`encryption_for` the type
            (the config's, the hub's). Kept by its restarts, with its keys.
        :raises NoSuchKernelType: for an unknown id.
        :raises LaunchError: when the kernel cannot start; nothing is left running.
        :raises ValueError: when *env*, *cwd*, *params* or *kernel_id* cannot be
            used (the message names the entry); checked before anything starts.
        """
        self._bind_loop()
        if transport_encryption is not None:
            check_encryption(transport_encryption)  # a bad value is the caller's error, first
        kt = await (
            self.default_kernel_type() if type_id is None else self.get_kernel_type(type_id)
        )
        encryption = check_encryption(
            self.encryption_for(kt.id) if transport_encryption is None else transport_encryption
        )
        request = LaunchRequest(
            kernel_id=kernel_id or str(uuid.uuid4()),
            cwd=cwd,
            env=env if env is not None else {},
            params=params if params is not None else {},
            connection=connection,
            outlive=self._outlive(),
            transport_encryption=encryption,
        )
        if (
            self._pools
            and connection is None  # a host's relaunch: the old ports and key, never a spare
            and encryption == self.encryption_for(kt.id)  # what the pool's kernels started with
        ):
            spare = await self._from_pool(
                kt,
                request,
                named=kernel_id is not None,
                nanny=nanny,
                restart=restart,
                on_launched=on_launched,
            )
            if spare is not None:
                return spare
        return await self._launch(
            kt,
            request,
            ready_timeout=ready_timeout,
            restart=restart,
            nanny=nanny,
            on_launched=on_launched,
        )

    async def _launch(
        self,
        kt: KernelType,
        request: LaunchRequest,
        *,
        ready_timeout: float,
        restart: RestartPolicy | bool | None,
        nanny: bool,
        on_launched: Callable[[Started], object] | None = None,
        pool: bool = False,
    ) -> RunningKernel:
        """Start a kernel of *kt* (the one launch path of :meth:`launch` and of pools)."""
        plugin = self.owner_of(kt.id)
        policy = self._restart_policy(kt, restart, plugin=plugin)
        marks = {"pool": True} if pool else {}
        self.emit("starting", request.kernel_id, kt.id, **marks)
        monitor = ActivityMonitor()
        try:
            started = await self._starter.start(
                kt,
                request,
                plugin=plugin,
                ready_timeout=ready_timeout,
                monitor=monitor,
                nanny=nanny,
                on_launched=on_launched,
            )
        except Exception as exc:
            self.emit("failed", request.kernel_id, kt.id, reason=first_line(exc), **marks)
            raise
        kernel = self._register(
            kt,
            request,
            started,
            plugin=plugin,
            policy=policy,
            monitor=monitor,
            ready_timeout=ready_timeout,
            listed=not pool,
        )
        self.emit("ready", kernel.id, kt.id, **marks)
        return kernel

    # ---- pools ----

    async def _from_pool(
        self,
        kt: KernelType,
        request: LaunchRequest,
        *,
        named: bool,
        nanny: bool,
        restart: RestartPolicy | bool | None,
        on_launched: Callable[[Started], object] | None,
    ) -> RunningKernel | None:
        """Serve *request* with a pool's spare, adapted if need be; ``None``: start one.

        :param named: the launch gave its kernel id (the spare takes it).
        """
        if request.kernel_id in self._kernels:
            return None  # an id in use: what a fresh launch does with it, not a spare's business
        if named and any("{kernel_id}" in arg for arg in kt.argv):
            return None  # its command line names the id: a spare's names another
        taken = take_spare(self._pools, kt, request, nanny=nanny)
        if taken is None:
            return None
        pool, spare, adaptation = taken
        former = spare.id
        if not named:
            request = dataclasses.replace(request, kernel_id=former)
        self._handing.add(spare)
        try:
            if adaptation is not None:
                await run_adaptation(spare.connection_info, adaptation, timeout=ADAPT_TIMEOUT)
            spare.serve(
                request, restart_policy=self._restart_policy(kt, restart, plugin=spare.plugin)
            )
        except Exception as exc:  # noqa: BLE001 - whatever failed, a cold start follows
            # Half-adapted, or it died meanwhile: it serves nobody.
            pool.adapt_failures += 1
            log.warning(
                "kernel pool %s: a spare could not be handed out (%s); it is ended and a "
                "kernel is started for the launch",
                kt.id,
                first_line(exc),
            )
            await asyncio.shield(spare.shutdown(now=True))
            return None
        except BaseException:
            await asyncio.shield(spare.shutdown(now=True))
            raise
        finally:
            self._handing.discard(spare)
        if adaptation is not None:
            pool.adapted += 1
        marks: dict[str, Any] = {"pooled": True}
        if adaptation is not None:
            marks["adapted"] = True
        if spare.id != former:
            marks["spare"] = former
            self._aliases[former] = spare.id
        if on_launched is not None:
            try:  # as for a fresh launch: a host whose callback fails gets no kernel
                on_launched(
                    Started(spare.connection_info, spare.state, spare.manager, nanny=spare.nanny)
                )
            except BaseException:
                await asyncio.shield(spare.shutdown(now=True))
                raise
        self._kernels[spare.id] = spare
        self._start_culler()  # culled like any other from now on
        if self._keeper is not None:
            self._keeper.record(spare)  # under its id now; the spare's record goes
            if spare.id != former:
                self._keeper.forget(former)
        self.emit("ready", spare.id, kt.id, **marks)
        return spare

    async def pool(
        self,
        type_id: str | None = None,
        *,
        size: int = 1,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        ready_timeout: float = 60.0,
        restart: RestartPolicy | bool | None = None,
        nanny: bool = False,
        adapt: bool = True,
    ) -> KernelPool:
        """Keep *size* kernels of *type_id* started and ready for :meth:`launch` to hand out.

        Returns at once; the kernels start in the background (``await
        pool.wait_full(timeout)`` to wait for them). A :meth:`launch` of the
        same type with the same *cwd*, *env*, *params* and *nanny* (and no
        ``connection``) takes a ready kernel from the pool and returns at once;
        the pool starts another in the background. The spare takes the launch's
        ``kernel_id`` (if it gives one) and restart policy, ``on_launched`` is
        called with it, and ``ready`` is emitted with ``pooled=True``. With none
        ready, the launch starts a kernel as usual. Each kernel is handed out once.

        With *adapt* (the default), a Python kernel of this machine (an
        ``ipykernel/*`` type, or a ``spec/*`` type whose language is python)
        also serves a launch with another *cwd* or *env*: the hub first runs
        code in it, silently, that changes its working directory and sets the
        env entries (and ``__session__`` from ``JPY_SESSION_NAME``, as ipykernel
        does). A launch whose env sets a variable read only at start-up
        (``PYTHONPATH``, ``LD_*``, ``LANG``...) to another value, or lacks one the
        pool's *env* sets, gets a cold kernel instead; so does every launch when
        the adaptation fails (that spare is ended). The rules are in
        :mod:`kernel_hub.lifecycle.adapt`. ``adapt=False``: exact matching only.

        The kernels of a pool are watched and restarted under *restart* (the
        type's policy by default) until handed out; their events carry
        ``pool=True`` until then; they are not in :attr:`kernels` until then.
        Calling this again for the same type, *cwd*, *env*, *params* and *nanny*
        resizes its pool (the spares beyond the new size are shut down) and
        sets its *adapt*; size 0 removes it. :meth:`shutdown_all` closes every
        pool. :meth:`start_configured_pools` starts the config file's pools.

        :raises NoSuchKernelType: for an unknown id (checked now).
        :raises ValueError: for a negative size, or an *env*, *cwd* or *params* that
            cannot be used (as :meth:`launch` would raise).
        """
        self._bind_loop()
        if size < 0:
            raise ValueError(f"a pool's size must be 0 or more, not {size}")
        kt = await (
            self.default_kernel_type() if type_id is None else self.get_kernel_type(type_id)
        )
        # The request is checked now (a bad env entry is the caller's error, not a failed start).
        LaunchRequest(kernel_id="pool", cwd=cwd, env=dict(env or {}), params=dict(params or {}))
        key = PoolKey.of(kt.id, cwd=cwd, env=env, params=params, nanny=nanny)
        existing = self._pools.get(key)
        if existing is not None:
            existing.adapt = bool(adapt)
            extra = existing.resize(size)
            if size == 0:
                del self._pools[key]
                extra += await existing.close()
            await self._end_spares(extra)
            return existing

        def start() -> Awaitable[RunningKernel]:
            request = LaunchRequest(
                kernel_id=str(uuid.uuid4()),
                cwd=cwd,
                env=dict(env or {}),
                params=dict(params or {}),
                outlive=self._outlive(),
                transport_encryption=self.encryption_for(kt.id),
            )
            return self._launch(
                kt, request, ready_timeout=ready_timeout, restart=restart, nanny=nanny, pool=True
            )

        pool = KernelPool(key, size, start, ready_timeout=ready_timeout, adapt=bool(adapt))
        if size:
            self._pools[key] = pool
            pool.fill()
        return pool

    @property
    def pools(self) -> list[KernelPool]:
        """This hub's kernel pools."""
        return list(self._pools.values())

    async def start_configured_pools(
        self, *, type_ids: Iterable[str] | None = None
    ) -> list[KernelPool]:
        """Start the pools that the config file's ``[pool."<type id>"]`` tables name; return them.

        For a long-lived host (the Jupyter bridge, a pool daemon): a plain
        ``KernelHub()`` starts no pool by itself. Each table gives a pool's
        ``size`` and its other :meth:`pool` arguments (see
        :mod:`kernel_hub.plugins.pools`); returns at once, the kernels start in
        the background. A table that is wrong, or names a type no plugin offers
        here, is left out with one warning line. Calling it again applies the
        config again (a pool's size and *adapt* change; a new table's pool starts).

        :param type_ids: start only the pools of these types (a host that serves
            only some types); ``None``: every configured pool.
        :returns: the started (or resized) pools, in the file's order.
        """
        if "pool" not in self.config:
            return []
        from .plugins.pools import configured_pools  # pay for the table when it is there

        wanted = None if type_ids is None else set(type_ids)
        pools = []
        for type_id, table in configured_pools(self).items():
            if wanted is not None and type_id not in wanted:
                continue
            try:
                # The table's fields are pool()'s keywords, one for one.
                pool = await self.pool(type_id, **dataclasses.asdict(table))
            except (KernelHubError, ValueError) as exc:
                where = f"kernel_hub config {self.config_file or ''}".rstrip()
                log.warning('%s: [pool."%s"] is left out: %s', where, type_id, first_line(exc))
                continue
            pools.append(pool)
        return pools

    async def _end_spares(self, spares: list[RunningKernel]) -> None:
        if spares:
            await asyncio.gather(*(k.shutdown() for k in spares), return_exceptions=True)

    async def manager_for(
        self,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        type_id: str | None = None,
        plugin: str | None = None,
        nanny: bool | None = None,
    ) -> KernelManager | None:
        """Turn saved connection info and state into a manager: the one place that does.

        A kernel under a local nanny (``nanny``; by default when the state says
        ``launch_mode: "nanny"``, or when there is no type and the connection
        info has nanny ports)
        gets a :class:`~kernel_hub.NannyManager`; otherwise the plugin that owns
        *type_id* (or *plugin*) rebuilds its manager with ``make_manager``.
        Returns ``None`` for bare connection info with neither type nor nanny:
        such a kernel can be talked to but not managed.
        """
        from .managers.local_nanny import LOCAL_NANNY
        from .managers.remote import NannyManager, is_nanny_info

        if state.get("launch_mode") == LOCAL_NANNY:
            nanny = True  # also a plugin's kernel run under a nanny (``request.outlive``)
        elif nanny is None:
            nanny = type_id is None and is_nanny_info(connection_info)
        if nanny:
            return NannyManager.from_state(connection_info, state, type_id=type_id or "")
        if type_id is None:
            return None
        kt = await self.get_kernel_type(type_id)
        owner = plugin if plugin and self.pm.has_plugin(plugin) else None
        return await self.hooks.make_manager(
            plugin=owner or self.owner_of(kt.id),
            hub=self,
            kernel_type=kt,
            connection_info=connection_info,
            state=state,
        )

    async def attach(
        self,
        type_id: str,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        kernel_id: str | None = None,
        restart: RestartPolicy | bool | None = False,
        plugin: str | None = None,
        nanny: bool | None = None,
        launch_id: str | None = None,
        _request: LaunchRequest | None = None,
        _created: float | None = None,
    ) -> RunningKernel:
        """Re-attach to a running kernel from saved :meth:`RunningKernel.describe` data.

        The manager is rebuilt by :meth:`manager_for` (the owning plugin's
        ``make_manager``, or the core for a kernel under a local nanny), so this
        works in a process other than the one that launched the kernel. The hub
        watches it like a launched one (``died``, execution state); it is
        relaunched only if *restart* asks for it, with an otherwise empty
        request (no cwd, env or params: those of the original launch are not
        known here). ``hub.attach(**kernel.describe())`` works as it is.

        :param plugin: the owner recorded by ``describe()`` (else found by discovery).
        :param nanny: recorded by ``describe()``: the kernel runs under a local nanny.
        :param launch_id: recorded by ``describe()`` for a pool's spare handed out
            under another id: the id its provider knows it by.
        """
        from .managers.local_nanny import LOCAL_NANNY

        self._bind_loop()
        kt = await self.get_kernel_type(type_id)
        owner = self.owner_of(kt.id)
        policy = self._restart_policy(kt, restart, plugin=owner)
        under_nanny = bool(nanny) if nanny is not None else state.get("launch_mode") == LOCAL_NANNY
        manager = await self.manager_for(
            connection_info, state, type_id=kt.id, plugin=plugin or owner, nanny=nanny
        )
        assert manager is not None  # a type is given: the owner builds one or raises
        # A tunnelling provider may have had to pick new local ports in this process.
        connection_info = getattr(manager, "connection_info", None) or connection_info
        kernel_id = kernel_id or str(uuid.uuid4())
        if not await manager.is_alive():
            raise KernelHubError(f"cannot attach: kernel {type_id} ({kernel_id}) is not running")
        monitor = ActivityMonitor()
        monitor.open(connection_info)
        request = _request or LaunchRequest(
            kernel_id=kernel_id,
            outlive=self._outlive(),
            transport_encryption=self.encryption_for(kt.id),
        )
        return self._register(
            kt,
            request,
            Started(connection_info, state, manager, nanny=under_nanny),
            plugin=owner,
            policy=policy,
            monitor=monitor,
            ready_timeout=60.0,
            created=_created,
            launch_id=launch_id,
        )

    # ---- registry ----

    @property
    def kernels(self) -> Mapping[str, RunningKernel]:
        """The running kernels of this hub, by id (read-only view)."""
        return MappingProxyType(self._kernels)

    def get(self, kernel_id: str) -> RunningKernel:
        """Return the running kernel *kernel_id*.

        :raises KeyError: naming the id when this hub has no such kernel.
        """
        try:
            return self._kernels[kernel_id]
        except KeyError:
            raise KeyError(f"no running kernel {kernel_id!r} in this hub") from None

    def _forget(self, kernel: RunningKernel) -> None:
        if self._keeper is not None:
            self._keeper.forget(kernel.id)
        if self._aliases.get(kernel.launch_id) == kernel.id:
            del self._aliases[kernel.launch_id]
        if self._kernels.pop(kernel.id, None) is None:
            for pool in self._pools.values():  # a spare that ended for good
                pool.forget(kernel)

    async def shutdown_all(
        self, *, now: bool = False, timeout: float = 5.0, concurrency: int | None = None
    ) -> ShutdownReport:
        """Shut down every kernel of this hub, paced, and log one summary line.

        Every kernel stops being watched at once; then at most *concurrency*
        kernels are being ended at a time, so that the machine is not asked to
        tear down hundreds of processes in the same instant (and kernels that
        would exit politely are not killed for want of CPU). Each kernel gets its
        *timeout* from when its own ``shutdown_request`` goes out. Kills are not
        logged one by one: one line says how many kernels ended politely, how
        many were killed and how many failed (at WARNING if any was killed or
        failed, else at INFO; nothing for a hub without kernels).

        :param now: kill every kernel at once instead of asking politely.
        :param timeout: seconds each kernel has to exit after its ``shutdown_request``.
        :param concurrency: how many kernels are ended at once; by default
            :func:`shutdown_concurrency` (four per CPU, at least 8).
        :returns: the counts, as logged.
        """
        if self._culler is not None:
            await self._culler.stop()  # started again by the next launch
        pools, self._pools = list(self._pools.values()), {}
        spares = [k for p in pools for k in await p.close()]  # no refill from here on
        kernels = [*self._kernels.values(), *spares, *self._handing]
        if not kernels:
            return ShutdownReport()
        slot = asyncio.Semaphore(concurrency or shutdown_concurrency())
        start = time.monotonic()
        results = await asyncio.gather(
            *(k.shutdown(now=now, timeout=timeout, slot=slot, quiet=True) for k in kernels),
            return_exceptions=True,
        )
        pairs = zip(kernels, results, strict=True)
        failures = [(k, r) for k, r in pairs if not isinstance(r, bool)]
        report = ShutdownReport(
            politely=sum(1 for r in results if r is True),
            killed=sum(1 for r in results if r is False),
            failed=len(failures),
            seconds=time.monotonic() - start,
            now=now,
            timeout=timeout,
        )
        for kernel, result in failures:  # details at DEBUG; the summary names the first
            log.debug("shutting down %r failed: %r", kernel, result)
        first = f" (the first: {failures[0][0]!r}: {failures[0][1]!r})" if failures else ""
        level = logging.WARNING if (report.killed and not now) or failures else logging.INFO
        log.log(level, "%s%s", report, first)
        return report

    async def aclose(self) -> None:
        """Shut down every kernel (:meth:`shutdown_all`); the hub stays usable.

        With a state dir, its lock is released too (taken again on the next launch).
        """
        await self.shutdown_all()
        if self._keeper is not None:
            self._keeper.release()

    # ---- kernels that outlive their host (state_dir; lifecycle/keeper.py) ----

    def _outlive(self) -> float:
        """Return ``LaunchRequest.outlive`` for a launch now (taking the state dir's lock)."""
        return 0.0 if self._keeper is None else self._keeper.outlive()

    async def adopt(self, *, timeout: float = 30.0) -> list[RunningKernel]:
        """Adopt the kernels recorded in the state dir by an earlier host; clean up the dead.

        Called by ``async with KernelHub(state_dir=...)``; call it yourself when
        the hub is not used as a context manager. Takes the state dir's lock (for
        as long as the hub lives, or until :meth:`aclose`). Every recorded kernel
        that still runs is attached (with its recorded restart policy and launch
        request), watched, recorded again under this process, and ``adopted`` is
        emitted; every one that does not (or cannot be reached within *timeout*)
        is ended, what is left of it (process, container, remote nanny, files)
        removed with its record, and ``cleaned_up`` is emitted. A pool's spare
        that was never handed out is cleaned up, not adopted. All at once;
        calling it again adopts nothing new unless the lock was released.

        :returns: the adopted kernels.
        :raises StateInUse: when another live hub holds the state dir.
        """
        if self._keeper is None:
            raise KernelHubError("adopt() needs a hub made with state_dir=...")
        self._bind_loop()
        return await self._keeper.adopt(timeout)

    async def end_record(self, record: Record, *, timeout: float = 10.0) -> bool:
        """End the kernel of a state record (if it still runs) and remove what is left of it.

        Asks politely (``shutdown_request``) when the kernel answers, else kills it
        through its manager; the manager's cleanup removes its container, remote
        nanny and files; the record goes last. Failures are logged, not raised.
        This hub does not adopt it (``kernel-hub stop`` uses it).

        :returns: whether the kernel was still running.
        """
        return await end_record(self, self._starter, record, timeout=timeout)

    async def detach(self) -> list[str]:
        """Leave every kernel running for the next host: stop watching, keep the records.

        For a planned restart of the host (an upgrade): the kernels go on for the
        grace, and a new hub on the same state dir adopts them. This hub forgets
        them, closes its links to them (a nanny's lease starts counting) and
        releases the state dir's lock; it stays usable.

        :returns: the ids of the kernels left running.
        :raises KernelHubError: without a state dir (the kernels would be lost).
        """
        if self._keeper is None:
            raise KernelHubError(
                "detach() needs a hub made with state_dir=...; without one, use shutdown_all()"
            )
        kernels, self._kernels = list(self._kernels.values()), {}
        for kernel in kernels:
            await kernel.detach()
        pools, self._pools = list(self._pools.values()), {}
        spares = [k for p in pools for k in await p.close()]
        await self._end_spares([*spares, *self._handing])
        self._keeper.release()
        return [k.id for k in kernels]

    async def hand_off(self, kernel: RunningKernel) -> dict[str, Any]:
        """Give *kernel* to another process: forget it here and leave it running.

        For a kernel launched to outlive this process (the hub has a ``state_dir``, so
        its launches carry ``LaunchRequest.outlive``): a kernel of :attr:`kernels`, or a
        pool's spare from ``pool.take()``. This hub stops watching it, ends its clients,
        closes its links to it (a nanny's lease starts counting: the other process has
        the grace to attach) and drops it from :attr:`kernels`, its pool and the state
        dir; no event is emitted and the kernel is not shut down. The other process
        calls ``hub.attach(**described)`` and owns it from then on. ``kernel-hub pool``
        hands its spares to ``kernel-hub run`` this way.

        :returns: the kernel's :meth:`~RunningKernel.describe`; it holds the key: send it
            over a private channel only (never argv, environment or logs).
        :raises KernelHubError: when the kernel is not running, or was launched to end
            with this process (a hub without a state dir).
        """
        if kernel.status != "RUNNING":
            raise KernelHubError(f"cannot hand off {kernel!r}: only a RUNNING kernel can be")
        if not kernel.request.outlive:
            raise KernelHubError(
                f"cannot hand off {kernel!r}: it was launched to end with this process; make "
                "the hub with state_dir=... so that its kernels can outlive it"
            )
        described = kernel.describe()
        # Out of the registry (a spare not taken yet: out of its pool, which refills), its
        # alias and the state dir: not this hub's to adopt or expire any more.
        self._forget(kernel)
        await kernel.detach()
        return described
