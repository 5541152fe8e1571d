"""The one launch path: hook (or local nanny) → manager → wait until the kernel answers.

Used by :meth:`KernelHub.launch` for a first launch and by
:class:`~kernel_hub.RunningKernel` for every relaunch (through the callback the
hub gives it), so a kernel starts the same way each time. On any failure, or
cancellation, what was started is killed and cleaned up. Signals sent through
the launched kernel (:meth:`Started.interrupt`, :meth:`Started.signal`) before
it answers are held and delivered once it has (:mod:`.held`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..client import AsyncKernelClient
from ..contract.errors import KernelDied, LaunchError, PluginError
from ..wire.connection import channel_url, without_ports
from ..wire.curve import curve_for, is_encrypted
from ..wire.handshake import refuses_curve
from ..wire.transport import ZMQTransport
from .held import SignalHold, send_signal

if TYPE_CHECKING:
    from collections.abc import Mapping

    import zmq

    from ..contract.hookspecs import HubContext
    from ..contract.manager import KernelManager
    from ..contract.types import KernelType, LaunchRequest, LaunchResult
    from ..plugins import HookRelay
    from .monitor import ActivityMonitor

__all__ = ["ManagerFor", "Started", "Starter"]

log = logging.getLogger("kernel_hub")

#: ``KernelHub.manager_for``: ``(connection_info, state, *, type_id, plugin) -> manager``.
ManagerFor = Callable[..., Awaitable["KernelManager | None"]]

#: Launches tried when a kernel finds a port it was given already taken.
PORT_ATTEMPTS = 3


class PortTaken(LaunchError):
    """The kernel could not bind a port it was given: another process took it first."""


@dataclass(frozen=True)
class Started:
    """A launched kernel: its connection info, launch state and live manager.

    What :meth:`Starter.start` returns (the kernel has answered) and what its
    ``on_launched`` callback gets (it has not yet). Signal it through
    :meth:`interrupt` and :meth:`signal`, not its manager: until the kernel has
    answered they are held, since a signal during start-up would end it.
    """

    #: Not in the repr: it holds the key (and the CurveZMQ secret key).
    connection_info: Mapping[str, Any] = field(repr=False)
    state: Mapping[str, Any]
    manager: KernelManager
    #: Whether it runs under a local nanny.
    nanny: bool = False
    #: The signals held until it answers (``None``: nothing holds them, sent at once).
    hold: SignalHold | None = field(default=None, repr=False, compare=False)

    async def signal(self, signum: int) -> bool:
        """Send *signum*, held until the kernel has answered; return whether it was sent now.

        Returns at once either way. A held signal is delivered once the kernel
        answers, or dropped, with a log line saying why, when its start fails.
        SIGTERM, SIGKILL, SIGQUIT and SIGHUP are never held.

        :raises KernelDied: when the start has already failed.
        """
        if self.hold is None:
            await send_signal(self.manager, signum)
            return True
        return await self.hold.signal(signum)

    async def interrupt(self) -> bool:
        """Interrupt the kernel (its manager's ``interrupt``), held until it has answered."""
        return await self.signal(signal.SIGINT)


async def wait_ready(
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    manager: KernelManager,
    timeout: float,
    *,
    hold: SignalHold | None = None,
) -> None:
    """Wait for kernel_info + IOPub, or fail fast with the kernel's last output if it dies.

    :param hold: released at the kernel's first answer, not after IOPub's check: a
        host's client (the Jupyter bridge's) may have the kernel busy by then, with
        our IOPub nudges queued behind its code, and an interrupt must reach it.
    """
    transport = ZMQTransport(connection_info, identity=os.urandom(8).hex().encode())
    client = await AsyncKernelClient(
        connection_info, manager=manager, transport=transport
    ).connect()
    ready = client.wait_for_ready(
        timeout, on_answer=None if hold is None else (lambda reply: hold.ready())
    )
    try:
        shell = transport.socket("shell") if is_encrypted(connection_info) else None
        if shell is None:
            await ready
        elif await _ready_unless_curve_refused(ready, shell, channel_url(connection_info, "shell")):
            raise LaunchError(
                f"kernel {kernel_type.id} does not speak CurveZMQ, although its type declares "
                'it (supported_encryption: ["curve"]) and it was given keys: an ipykernel '
                "older than 7.4? Correct the type's declaration, or launch it with "
                "transport_encryption='disabled'",
                output=await manager.last_output(),
            )
    except KernelDied as exc:
        tail = await manager.last_output()
        # Ports are free when chosen, but another process (another host's kernel) may
        # bind one before this kernel does; a launch with new ports gets past that.
        error = PortTaken if "Address already in use" in tail else LaunchError
        raise error(
            f"kernel {kernel_type.id} exited during start-up (exit status {exc.exit_status}); "
            "check the kernel type's command and that its packages are installed",
            output=tail,
        ) from None
    except TimeoutError as exc:
        tail = await manager.last_output()
        raise LaunchError(
            f"kernel {kernel_type.id} did not become ready within {timeout} s; "
            "raise ready_timeout= (or the CLI's --start-timeout) if it is just slow to start",
            output=tail,
        ) from exc
    finally:
        await client.close()


async def _ready_unless_curve_refused(
    ready: Awaitable[object], shell: zmq.Socket[Any], url: str
) -> bool:
    """Await *ready*; return True instead, at once, when the kernel turns out to be plain.

    A kernel given CurveZMQ keys that does not use them never answers: its
    readiness would wait the whole timeout. :func:`~kernel_hub.wire.handshake.refuses_curve`
    watches the client's shell socket meanwhile.
    """
    waiting = asyncio.ensure_future(ready)
    watch = asyncio.ensure_future(refuses_curve(shell, url))
    try:
        done, _ = await asyncio.wait({waiting, watch}, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done and not watch.exception() and watch.result():
            return True
        await waiting
        return False
    finally:
        for task in (waiting, watch):
            task.cancel()
        await asyncio.gather(waiting, watch, return_exceptions=True)


class Starter:
    """Start kernels of one hub: routed to the plugin that owns each type.

    :param hooks: the hub's hook façade.
    :param hub: what plugins see of the hub (their hooks' ``hub`` argument).
    :param manager_for: the hub's one place that turns a launch's connection info
        and state into a manager, for launches that return no live manager.
    """

    def __init__(self, hooks: HookRelay, hub: HubContext, manager_for: ManagerFor) -> None:
        self.hooks = hooks
        self.hub = hub
        self._manager_for = manager_for

    async def start(
        self,
        kernel_type: KernelType,
        request: LaunchRequest,
        *,
        plugin: str,
        ready_timeout: float,
        monitor: ActivityMonitor | None = None,
        nanny: bool = False,
        on_launched: Callable[[Started], object] | None = None,
    ) -> Started:
        """Launch (plugin hook, or a local nanny), build the manager, wait until it answers.

        A kernel that dies because a port it was given got taken meanwhile is
        launched again, with new ports (up to :data:`PORT_ATTEMPTS` attempts).
        On a relaunch (``request.connection`` set) the next attempt passes that
        connection info without its ports: the provider takes new ones and keeps
        the key.

        :param monitor: opened on the new kernel's IOPub before waiting, so that
            no status message after the kernel is ready is missed.
        :param on_launched: called with the launched kernel (connection info,
            state, manager) before waiting for it to answer; again for each
            launch with new ports.
        :raises LaunchError: also for ``transport_encryption="required"`` when the
            launch came back without CurveZMQ keys (the kernel is ended): providers
            refuse such a launch before starting anything where they can
            (:func:`~kernel_hub.provider.curve_for`), this catches the others.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return await self._start_once(
                    kernel_type, request, plugin, ready_timeout, monitor, nanny, on_launched
                )
            except PortTaken as exc:
                if attempt == PORT_ATTEMPTS:
                    raise LaunchError(exc.summary, output=exc.output) from None
                log.info(
                    "kernel %s lost a port to another process; launching it again",
                    request.kernel_id,
                )
                if request.connection is not None:
                    request = dataclasses.replace(
                        request, connection=without_ports(request.connection)
                    )
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _launch(
        self, kernel_type: KernelType, request: LaunchRequest, *, plugin: str, nanny: bool
    ) -> LaunchResult:
        if nanny:
            from ..managers.local_nanny import launch_under_nanny

            def progress(step: str, message: str) -> None:
                self.hub.emit(
                    "progress", request.kernel_id, kernel_type.id, step=step, message=message
                )

            return await launch_under_nanny(kernel_type, request, progress=progress)
        return await self.hooks.launch(
            plugin=plugin, hub=self.hub, kernel_type=kernel_type, request=request
        )

    async def _start_once(
        self,
        kernel_type: KernelType,
        request: LaunchRequest,
        plugin: str,
        ready_timeout: float,
        monitor: ActivityMonitor | None,
        nanny: bool,
        on_launched: Callable[[Started], object] | None,
        /,
    ) -> Started:
        """One attempt of :meth:`start` (its arguments, in order)."""
        result = await self._launch(kernel_type, request, plugin=plugin, nanny=nanny)
        manager = result.manager or await self._manager_for(
            result.connection_info, result.state, type_id=kernel_type.id, plugin=plugin
        )
        if manager is None:  # not reached: with a type, the owner builds one or raises
            raise PluginError(f"plugin {plugin!r} gave no manager for {kernel_type.id!r}")
        hold = SignalHold(manager, label=f"kernel {kernel_type.id} {request.kernel_id[:8]}")
        started = Started(result.connection_info, result.state, manager, nanny=nanny, hold=hold)
        try:
            if request.transport_encryption == "required" and not is_encrypted(
                result.connection_info
            ):
                curve_for(kernel_type, request)  # the type declares no support: say so
                raise LaunchError(
                    f"plugin {plugin!r} launched {kernel_type.id} without CurveZMQ keys, but "
                    "transport_encryption is 'required'; the plugin must pass "
                    "curve=curve_for(kernel_type, request) to new_connection_info"
                )
            if on_launched is not None:
                on_launched(started)
            if monitor is not None:
                monitor.open(result.connection_info)
            await wait_ready(kernel_type, result.connection_info, manager, ready_timeout, hold=hold)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                hold.ended("its start was stopped before it answered")
            else:
                text = str(exc).strip()
                hold.ended(f"its start failed: {text.splitlines()[0] if text else repr(exc)}")
            if monitor is not None:
                monitor.close()
            with contextlib.suppress(Exception):
                await manager.kill()
            await manager.cleanup()
            raise
        await hold.ready()
        return started
