"""KernelHub: the host's entry point. It loads plugins, lists and launches kernels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .client import AsyncKernelClient, BlockingKernelClient
from .config import load_config
from .errors import KernelDied, KernelHubError, LaunchError, NoSuchKernelType, PluginError
from .events import EventBus, KernelEvent
from .plugins import HookRelay, PluginInfo, make_plugin_manager
from .types import KernelType, LaunchRequest

if TYPE_CHECKING:
    from .manager import KernelManager
    from .plugins import KernelHubPluginManager

__all__ = ["DEFAULT_KERNEL_TYPES", "KernelHub", "RunningKernel"]

log = logging.getLogger("kernel_hub")

#: Tried in order when no kernel type is named: this Python's ipykernel, then the python3 spec.
DEFAULT_KERNEL_TYPES = ("ipykernel/python3", "spec/python3")


class RunningKernel:
    """One launched kernel: its type, connection info, state and manager.

    Returned by :meth:`KernelHub.launch` and :meth:`KernelHub.attach`; kept in
    ``hub.kernels`` until it is shut down.
    """

    def __init__(
        self,
        hub: KernelHub,
        *,
        kernel_id: str,
        kernel_type: KernelType,
        request: LaunchRequest,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        manager: KernelManager,
    ) -> None:
        self.hub = hub
        self.id = kernel_id
        self.kernel_type = kernel_type
        self.request = request
        self.connection_info = dict(connection_info)
        self.state = dict(state)
        self.manager = manager
        self._status = "STARTING"

    def __repr__(self) -> str:
        return f"<RunningKernel {self.kernel_type.id} {self.id[:8]} [{self._status}]>"

    @property
    def type_id(self) -> str:
        return self.kernel_type.id

    @property
    def status(self) -> str:
        """``STARTING``, ``RUNNING``, ``SHUTTING_DOWN`` or ``DEAD``."""
        return self._status

    def client(self) -> AsyncKernelClient:
        """Return a new async client; ``async with kernel.client() as c:`` connects it."""
        return AsyncKernelClient(
            self.connection_info,
            manager=self.manager,
            interrupt_mode=self.kernel_type.interrupt_mode,
        )

    def blocking_client(self) -> BlockingKernelClient:
        """Return a new, connected blocking client (close it when done)."""
        return BlockingKernelClient(async_client=self.client())

    def describe(self) -> dict[str, Any]:
        """Return JSON-able data from which :meth:`KernelHub.attach` rebuilds this kernel."""
        return {
            "kernel_id": self.id,
            "type_id": self.kernel_type.id,
            "connection_info": self.connection_info,
            "state": self.manager.describe(),
        }

    async def _wait_ready(self, timeout: float) -> None:
        """Wait for kernel_info + IOPub, or fail fast with the kernel's last output if it dies."""
        client = await self.client().connect()
        try:
            await client.wait_for_ready(timeout)
        except KernelDied as exc:
            tail = await self.manager.last_output()
            raise LaunchError(
                f"kernel {self.kernel_type.id} exited during start-up "
                f"(exit status {exc.exit_status})."
                + (f" Its last output:\n{tail}" if tail else "")
                + "\nCheck the kernel type's command and that its packages are installed."
            ) from None
        except TimeoutError as exc:
            tail = await self.manager.last_output()
            raise LaunchError(
                f"kernel {self.kernel_type.id} did not become ready within {timeout} s."
                + (f" Its last output:\n{tail}" if tail else "")
                + "\nRaise ready_timeout= if it is just slow to start."
            ) from exc
        finally:
            await client.close()
        self._status = "RUNNING"

    async def shutdown(self, *, now: bool = False, timeout: float = 5.0) -> None:
        """Shut the kernel down and release what its launch created.

        :param now: kill at once instead of asking politely with ``shutdown_request``.
        :param timeout: how long to wait for a polite shutdown before killing.
        """
        if self._status == "DEAD":
            return
        self._status = "SHUTTING_DOWN"
        try:
            if now or not await self.manager.is_alive():
                await self.manager.kill()
            else:
                # Only the control channel is used: a busy kernel does not answer on shell.
                client = await self.client().connect()
                try:
                    await client.shutdown(timeout=timeout)
                finally:
                    await client.close()
        finally:
            with contextlib.suppress(Exception):
                if await self.manager.is_alive():
                    await self.manager.kill()
            await self.manager.cleanup()
            self._status = "DEAD"
            self.hub._forget(self)
            self.hub.emit("shutdown", self.id, self.kernel_type.id)


class KernelHub:
    """Find, launch and keep track of kernels through the installed plugins.

    :param plugins: plugin objects to register besides the entry points (tests, embedding).
    :param load_entrypoints: load the ``kernel_hub`` entry-point group.
    :param blocked: plugin names not to load (also ``KERNEL_HUB_DISABLE_PLUGINS``).
    :param config: the parsed config; read from :func:`kernel_hub.config.config_path` if ``None``.
    :param plugin_manager: a ready plugin manager (overrides the three previous arguments).

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
    ) -> None:
        self.pm = plugin_manager or make_plugin_manager(
            load_entrypoints=load_entrypoints, blocked=blocked, plugins=plugins
        )
        self.hooks = HookRelay(self.pm)
        self.config: Mapping[str, Any] = load_config() if config is None else config
        self._types: dict[str, KernelType] = {}
        self._kernels: dict[str, RunningKernel] = {}
        #: Lifecycle events of this hub's kernels; ``hub.events.subscribe(callback)``.
        self.events = EventBus()

    def emit(self, kind: str, kernel_id: str, type_id: str, **data: Any) -> None:
        """Emit a :class:`~kernel_hub.events.KernelEvent` (plugins use it for ``progress``)."""
        self.events.emit(KernelEvent(kind, kernel_id, type_id, data))

    def __repr__(self) -> str:
        return f"<KernelHub plugins={len(self.pm.get_plugins())} kernels={len(self._kernels)}>"

    async def __aenter__(self) -> KernelHub:
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
        found: dict[str, tuple[str, KernelType]] = {}
        for plugin, kt in await self.hooks.find_kernel_types(hub=self):
            if kt.id in found and found[kt.id][0] != plugin:
                first = found[kt.id][0]
                raise PluginError(
                    f"kernel type {kt.id!r} is offered by two plugins: "
                    f"{self.pm.distribution_of(first)} and {self.pm.distribution_of(plugin)}. "
                    "Uninstall or disable one of them (KERNEL_HUB_DISABLE_PLUGINS=name)."
                )
            found.setdefault(kt.id, (plugin, kt))
        self._types = {tid: kt for tid, (_, kt) in sorted(found.items())}
        return list(self._types.values())

    async def get_kernel_type(self, type_id: str) -> KernelType:
        """Return the kernel type *type_id*, discovering types if it is not known yet.

        :raises NoSuchKernelType: listing the known ids and close matches.
        """
        if type_id not in self._types:
            await self.find_kernel_types()
        try:
            return self._types[type_id]
        except KeyError:
            raise NoSuchKernelType(type_id, self._types) from None

    async def default_kernel_type(self) -> KernelType:
        """Return the first available of :data:`DEFAULT_KERNEL_TYPES`."""
        if not self._types:
            await self.find_kernel_types()
        for tid in DEFAULT_KERNEL_TYPES:
            if tid in self._types:
                return self._types[tid]
        raise NoSuchKernelType(DEFAULT_KERNEL_TYPES[0], self._types)

    # ---- launch ----

    async def launch(
        self,
        type_id: str | None = None,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        kernel_id: str | None = None,
        ready_timeout: float = 60.0,
    ) -> RunningKernel:
        """Launch a kernel of *type_id* and return it once it answers (kernel_info and IOPub).

        :param type_id: ``"<provider>/<name>"``; ``None`` for the default Python kernel.
        :param cwd: the kernel's working directory.
        :param env: extra environment variables for the kernel.
        :param params: provider-specific parameters.
        :param ready_timeout: seconds to wait for the kernel to answer.
        :raises NoSuchKernelType: for an unknown id.
        :raises LaunchError: when the kernel cannot start; nothing is left running.
        """
        kt = await (
            self.default_kernel_type() if type_id is None else self.get_kernel_type(type_id)
        )
        request = LaunchRequest(
            kernel_id=kernel_id or str(uuid.uuid4()),
            cwd=cwd,
            env=dict(env or {}),
            params=dict(params or {}),
        )
        self.emit("starting", request.kernel_id, kt.id)
        result = await self.hooks.launch(hub=self, kernel_type=kt, request=request)
        manager = await self.hooks.make_manager(
            hub=self, kernel_type=kt, connection_info=result.connection_info, state=result.state
        )
        kernel = RunningKernel(
            self,
            kernel_id=request.kernel_id,
            kernel_type=kt,
            request=request,
            connection_info=result.connection_info,
            state=result.state,
            manager=manager,
        )
        try:
            await kernel._wait_ready(ready_timeout)
        except BaseException:
            await kernel.shutdown(now=True)
            raise
        self._kernels[kernel.id] = kernel
        self.emit("ready", kernel.id, kt.id)
        return kernel

    async def attach(
        self,
        type_id: str,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        kernel_id: str | None = None,
    ) -> RunningKernel:
        """Re-attach to a running kernel from saved :meth:`RunningKernel.describe` data.

        The manager is rebuilt by the ``make_manager`` hook, so this works in a
        process other than the one that launched the kernel.
        """
        kt = await self.get_kernel_type(type_id)
        manager = await self.hooks.make_manager(
            hub=self, kernel_type=kt, connection_info=connection_info, state=state
        )
        # A tunnelling provider may have had to pick new local ports in this process.
        connection_info = getattr(manager, "connection_info", None) or connection_info
        kernel = RunningKernel(
            self,
            kernel_id=kernel_id or str(uuid.uuid4()),
            kernel_type=kt,
            request=LaunchRequest(kernel_id=kernel_id or ""),
            connection_info=connection_info,
            state=state,
            manager=manager,
        )
        if not await manager.is_alive():
            raise KernelHubError(f"cannot attach: kernel {type_id} ({kernel.id}) is not running")
        kernel._status = "RUNNING"
        self._kernels[kernel.id] = kernel
        return kernel

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
        self._kernels.pop(kernel.id, None)

    async def shutdown_all(self, *, now: bool = False) -> None:
        """Shut down every kernel of this hub, concurrently."""
        kernels = list(self._kernels.values())
        results = await asyncio.gather(
            *(k.shutdown(now=now) for k in kernels), return_exceptions=True
        )
        for kernel, result in zip(kernels, results, strict=True):
            if isinstance(result, BaseException):
                log.error("shutting down %r failed: %r", kernel, result)

    async def aclose(self) -> None:
        """Shut down every kernel; the hub stays usable."""
        await self.shutdown_all()
