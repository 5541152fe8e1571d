"""KernelHub: the host's entry point. It loads plugins, lists and launches kernels."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
import weakref
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .aio import being_cancelled
from .client import AsyncKernelClient, BlockingKernelClient
from .config import load_config, warn_unknown_tables
from .errors import KernelDied, KernelHubError, LaunchError, NoSuchKernelType, PluginError
from .events import EventBus, KernelEvent
from .monitor import ActivityMonitor, ExecutionState
from .plugins import HookRelay, PluginInfo, make_plugin_manager
from .restarter import KernelRestarter
from .types import KernelType, LaunchRequest, RestartPolicy

if TYPE_CHECKING:
    from .manager import KernelManager
    from .plugins import KernelHubPluginManager

__all__ = ["DEFAULT_KERNEL_TYPES", "KernelHub", "RunningKernel"]

log = logging.getLogger("kernel_hub")

#: Tried in order when no kernel type is named: this Python's ipykernel, then the python3 spec.
DEFAULT_KERNEL_TYPES = ("ipykernel/python3", "spec/python3")


def _first_line(exc: BaseException) -> str:
    """Return the first line of *exc*'s message (event data stays one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


#: Launches tried when a kernel finds a port it was given already taken.
_PORT_ATTEMPTS = 3


class _PortTaken(LaunchError):
    """The kernel could not bind a port it was given: another process took it first."""


async def _wait_ready(
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    manager: KernelManager,
    timeout: float,
) -> None:
    """Wait for kernel_info + IOPub, or fail fast with the kernel's last output if it dies."""
    client = await AsyncKernelClient(connection_info, manager=manager).connect()
    try:
        await client.wait_for_ready(timeout)
    except KernelDied as exc:
        tail = await manager.last_output()
        # Ports are free when chosen, but another process (another host's kernel) may
        # bind one before this kernel does; a launch with new ports gets past that.
        error = _PortTaken if "Address already in use" in tail else LaunchError
        raise error(
            f"kernel {kernel_type.id} exited during start-up "
            f"(exit status {exc.exit_status})."
            + (f" Its last output:\n{tail}" if tail else "")
            + "\nCheck the kernel type's command and that its packages are installed."
        ) from None
    except TimeoutError as exc:
        tail = await manager.last_output()
        raise LaunchError(
            f"kernel {kernel_type.id} did not become ready within {timeout} s."
            + (f" Its last output:\n{tail}" if tail else "")
            + "\nRaise ready_timeout= if it is just slow to start."
        ) from exc
    finally:
        await client.close()


class RunningKernel:
    """One launched kernel: its type, connection info, state and manager.

    Returned by :meth:`KernelHub.launch` and :meth:`KernelHub.attach`; kept in
    ``hub.kernels`` until it is shut down or dies for good. A
    :class:`~kernel_hub.restarter.KernelRestarter` watches it and relaunches it
    per its :attr:`restart_policy`; after a relaunch ``connection_info``,
    ``state`` and ``manager`` describe the new process, and clients from
    :meth:`client` reconnect to it by themselves.
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
        restart_policy: RestartPolicy | None = None,
        monitor: ActivityMonitor | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.hub = hub
        self.id = kernel_id
        self.kernel_type = kernel_type
        self.request = request
        self.connection_info = dict(connection_info)
        self.state = dict(state)
        self.manager = manager
        #: The policy the restarter applies (``enabled=False``: never restarted).
        self.restart_policy = restart_policy or RestartPolicy(enabled=False)
        self.ready_timeout = ready_timeout
        self._monitor = monitor or ActivityMonitor()
        self._restarter = KernelRestarter(self, self.restart_policy)
        # Clients from client(): told to reconnect after a relaunch. Weak, so that a
        # client dropped without close() does not live on here.
        self._clients: weakref.WeakSet[AsyncKernelClient] = weakref.WeakSet()
        self._ended = asyncio.Event()
        self._restart_task: asyncio.Future[None] | None = None
        self._status = "STARTING"

    def __repr__(self) -> str:
        return f"<RunningKernel {self.kernel_type.id} {self.id[:8]} [{self._status}]>"

    @property
    def type_id(self) -> str:
        return self.kernel_type.id

    @property
    def status(self) -> str:
        """``STARTING``, ``RUNNING``, ``RESTARTING``, ``SHUTTING_DOWN`` or ``DEAD``."""
        return self._status

    @property
    def execution_state(self) -> str:
        """``starting``, ``idle``, ``busy`` (from the kernel's IOPub status) or ``dead``."""
        return "dead" if self._status == "DEAD" else self._monitor.execution_state

    @property
    def last_activity(self) -> float:
        """``time.time()`` of the kernel's last IOPub status message (or of its launch)."""
        return self._monitor.last_activity

    @property
    def restarts(self) -> int:
        """How many times the restarter relaunched this kernel after a death."""
        return self._restarter.restarts

    def client(self) -> AsyncKernelClient:
        """Return a new async client; ``async with kernel.client() as c:`` connects it.

        The client follows this kernel: after an automatic or manual restart it
        reconnects to the new process by itself (requests that were waiting
        when the kernel died fail with :class:`~kernel_hub.KernelDied`).
        """
        return AsyncKernelClient(
            self.connection_info,
            manager=self.manager,
            interrupt_mode=self.kernel_type.interrupt_mode,
            kernel=self,
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

    async def wait(self) -> None:
        """Wait until the kernel has ended for good: shut down, or dead and not restarted."""
        await self._ended.wait()

    async def wait_for_execution_state(
        self, *states: ExecutionState, timeout: float | None = None
    ) -> str:
        """Return once :attr:`execution_state` is one of *states* (at once if it already is).

        :raises TimeoutError: after *timeout* seconds.
        """
        return await self._monitor.wait_for(*states, timeout=timeout)

    # ---- lifecycle, called by the hub and the restarter ----

    def _start_watching(self) -> None:
        self._status = "RUNNING"
        if self._monitor.execution_state == "starting":
            self._monitor.set_state("idle")  # it answered kernel_info: it is idle
        self._restarter.start()

    def _died(self) -> None:
        """Note an unexpected death (the restarter's first step)."""
        self._status = "RESTARTING" if self.restart_policy.enabled else "DEAD"
        self._monitor.close()
        self._monitor.set_state("dead")

    def _end(self, *, failed: str | None = None) -> None:
        """Mark the kernel ended for good and drop it from the hub; emit ``failed`` if given."""
        self._status = "DEAD"
        self._monitor.close()
        self._monitor.set_state("dead")
        self.hub._forget(self)
        if failed is not None:
            self.hub.emit("failed", self.id, self.kernel_type.id, reason=failed)
        self._ended.set()

    async def _relaunch(self) -> None:
        """Launch the same type with the same request and switch to the new process.

        :raises LaunchError: when the new process does not become ready; it is
            killed and cleaned up, and this kernel still describes the old one.
        """
        self._status = "RESTARTING"
        info, state, manager = await self.hub._start(
            self.kernel_type, self.request, ready_timeout=self.ready_timeout, monitor=self._monitor
        )
        self.connection_info = dict(info)
        self.state = dict(state)
        self.manager = manager
        for client in list(self._clients):
            client._kernel_restarted(self.connection_info, manager)
        self._start_watching()

    async def _stop_process(self, *, now: bool, timeout: float, restart: bool = False) -> None:
        """End the current process: ``shutdown_request`` (unless *now*), then kill if needed."""
        try:
            if now or not await self.manager.is_alive():
                await self.manager.kill()
            else:
                # Only the control channel is used: a busy kernel does not answer on shell.
                client = AsyncKernelClient(self.connection_info, manager=self.manager)
                await client.connect()
                try:
                    await client.shutdown(timeout=timeout, restart=restart)
                finally:
                    await client.close()
        finally:
            with contextlib.suppress(Exception):
                if await self.manager.is_alive():
                    await self.manager.kill()
            self._monitor.close()
            await self.manager.cleanup()

    # ---- host API ----

    async def restart(self, *, now: bool = False, timeout: float = 5.0) -> None:
        """Restart the kernel: end the process, then launch the same type with the same request.

        The process is asked to end with ``shutdown_request`` (``restart: true``)
        on the control channel, and killed with its process group if it has not
        ended after *timeout* seconds (at once with *now*). Emits ``restarting``
        and ``restarted`` with ``requested=True``; it does not count against the
        restart policy. Clients from :meth:`client` reconnect by themselves.

        :raises KernelHubError: when the kernel is not running.
        :raises LaunchError: when the relaunch fails; the kernel is then dead
            (``failed`` is emitted) and dropped from the hub.
        """
        if self._status != "RUNNING":
            raise KernelHubError(f"cannot restart {self!r}: only a RUNNING kernel can be restarted")
        await self._restarter.stop()  # before acting: this death is on purpose
        self._status = "RESTARTING"
        self.hub.emit("restarting", self.id, self.kernel_type.id, requested=True)
        # A task of its own, so that a shutdown() meanwhile can cancel it (and kill what it
        # started).
        task = self._restart_task = asyncio.ensure_future(self._restart_process(now, timeout))
        try:
            await task
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            raise KernelHubError(
                f"{self!r} was shut down while it was restarting; launch a new kernel"
            ) from None
        finally:
            self._restart_task = None
        self.hub.emit("restarted", self.id, self.kernel_type.id, requested=True)

    async def _restart_process(self, now: bool, timeout: float) -> None:
        try:
            await self._stop_process(now=now, timeout=timeout, restart=True)
            self._monitor.set_state("dead")
            await self._relaunch()
        except BaseException as exc:
            if self._status != "SHUTTING_DOWN":  # a shutdown ends the kernel itself
                self._end(failed=f"manual restart failed: {_first_line(exc)}")
            raise

    async def shutdown(self, *, now: bool = False, timeout: float = 5.0) -> None:
        """Shut the kernel down and release what its launch created; it is not restarted.

        :param now: kill at once instead of asking politely with ``shutdown_request``.
        :param timeout: how long to wait for a polite shutdown before killing.
        """
        if self._status == "DEAD":
            # Dead on its own, it may still be being cleaned up by its restarter (DEAD from the
            # death on): after shutdown() returns, nothing of the kernel may be left.
            await self._ended.wait()
            return
        if self._status == "SHUTTING_DOWN":
            await self._ended.wait()  # another shutdown is under way
            return
        self._status = "SHUTTING_DOWN"
        try:
            await self._restarter.stop()  # before acting: this death is on purpose
            if self._restart_task is not None and not self._restart_task.done():
                self._restart_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._restart_task
            await self._stop_process(now=now, timeout=timeout)
        finally:
            self._end()
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
        if config is None:  # the user's file: say which tables no plugin reads
            warn_unknown_tables(self.config, (name for name, _ in self.pm.list_name_plugin()))
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

    def _restart_policy(
        self, kernel_type: KernelType, restart: RestartPolicy | bool | None
    ) -> RestartPolicy:
        """Resolve ``launch(restart=...)``: a policy wins, False is off, None/True ask the hook."""
        if isinstance(restart, RestartPolicy):
            return restart
        if restart is False:
            return RestartPolicy(enabled=False)
        policy = self.hooks.restart_policy(hub=self, kernel_type=kernel_type)
        return dataclasses.replace(policy, enabled=True) if restart is True else policy

    async def _start(
        self,
        kernel_type: KernelType,
        request: LaunchRequest,
        *,
        ready_timeout: float,
        monitor: ActivityMonitor | None = None,
    ) -> tuple[Mapping[str, Any], Mapping[str, Any], KernelManager]:
        """Run the launch and make_manager hooks, then wait until the kernel answers.

        Used for the first launch and for every relaunch (with the same request).
        On any failure, or cancellation, the new process is killed and cleaned up.
        A kernel that dies because a port it was given got taken meanwhile is
        launched again, with new ports (up to three attempts).

        :param monitor: opened on the new kernel's IOPub before waiting, so that
            no status message after the kernel is ready is missed.
        """
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                return await self._start_once(
                    kernel_type, request, ready_timeout=ready_timeout, monitor=monitor
                )
            except _PortTaken as exc:
                if attempt == _PORT_ATTEMPTS:
                    raise LaunchError(str(exc)) from None
                log.info(
                    "kernel %s lost a port to another process; launching it again",
                    request.kernel_id,
                )
        raise AssertionError("unreachable")

    async def _start_once(
        self,
        kernel_type: KernelType,
        request: LaunchRequest,
        *,
        ready_timeout: float,
        monitor: ActivityMonitor | None,
    ) -> tuple[Mapping[str, Any], Mapping[str, Any], KernelManager]:
        result = await self.hooks.launch(hub=self, kernel_type=kernel_type, request=request)
        manager = result.manager or await self.hooks.make_manager(
            hub=self,
            kernel_type=kernel_type,
            connection_info=result.connection_info,
            state=result.state,
        )
        try:
            if monitor is not None:
                monitor.open(result.connection_info)
            await _wait_ready(kernel_type, result.connection_info, manager, ready_timeout)
        except BaseException:
            if monitor is not None:
                monitor.close()
            with contextlib.suppress(Exception):
                await manager.kill()
            await manager.cleanup()
            raise
        return result.connection_info, result.state, manager

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
    ) -> RunningKernel:
        """Launch a kernel of *type_id* and return it once it answers (kernel_info and IOPub).

        Emits ``starting``, then ``ready`` (or ``failed`` when it cannot start).
        From then on a restarter watches the kernel: see *restart*.

        :param type_id: ``"<provider>/<name>"``; ``None`` for the default Python kernel.
        :param cwd: the kernel's working directory.
        :param env: extra environment variables for the kernel.
        :param params: provider-specific parameters.
        :param ready_timeout: seconds to wait for the kernel to answer (also on relaunch).
        :param restart: the restart policy: a :class:`RestartPolicy`, ``False``
            (never restart), or ``None`` / ``True`` for the ``restart_policy``
            hook's answer (``True`` turns it on even if the hook's is disabled).
        :raises NoSuchKernelType: for an unknown id.
        :raises LaunchError: when the kernel cannot start; nothing is left running.
        """
        kt = await (
            self.default_kernel_type() if type_id is None else self.get_kernel_type(type_id)
        )
        policy = self._restart_policy(kt, restart)
        request = LaunchRequest(
            kernel_id=kernel_id or str(uuid.uuid4()),
            cwd=cwd,
            env=dict(env or {}),
            params=dict(params or {}),
        )
        self.emit("starting", request.kernel_id, kt.id)
        monitor = ActivityMonitor()
        try:
            info, state, manager = await self._start(
                kt, request, ready_timeout=ready_timeout, monitor=monitor
            )
        except Exception as exc:
            self.emit("failed", request.kernel_id, kt.id, reason=_first_line(exc))
            raise
        kernel = RunningKernel(
            self,
            kernel_id=request.kernel_id,
            kernel_type=kt,
            request=request,
            connection_info=info,
            state=state,
            manager=manager,
            restart_policy=policy,
            monitor=monitor,
            ready_timeout=ready_timeout,
        )
        self._kernels[kernel.id] = kernel
        kernel._start_watching()
        self.emit("ready", kernel.id, kt.id)
        return kernel

    async def attach(
        self,
        type_id: str,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        kernel_id: str | None = None,
        restart: RestartPolicy | bool | None = False,
    ) -> RunningKernel:
        """Re-attach to a running kernel from saved :meth:`RunningKernel.describe` data.

        The manager is rebuilt by the ``make_manager`` hook, so this works in a
        process other than the one that launched the kernel. The hub watches it
        like a launched one (``died``, execution state); it is relaunched only if
        *restart* asks for it, with an otherwise empty request (no cwd, env or
        params: those of the original launch are not known here).
        """
        kt = await self.get_kernel_type(type_id)
        policy = self._restart_policy(kt, restart)
        manager = await self.hooks.make_manager(
            hub=self, kernel_type=kt, connection_info=connection_info, state=state
        )
        # A tunnelling provider may have had to pick new local ports in this process.
        connection_info = getattr(manager, "connection_info", None) or connection_info
        kernel_id = kernel_id or str(uuid.uuid4())
        kernel = RunningKernel(
            self,
            kernel_id=kernel_id,
            kernel_type=kt,
            request=LaunchRequest(kernel_id=kernel_id),
            connection_info=connection_info,
            state=state,
            manager=manager,
            restart_policy=policy,
        )
        if not await manager.is_alive():
            raise KernelHubError(f"cannot attach: kernel {type_id} ({kernel.id}) is not running")
        kernel._monitor.open(connection_info)
        self._kernels[kernel.id] = kernel
        kernel._start_watching()
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
