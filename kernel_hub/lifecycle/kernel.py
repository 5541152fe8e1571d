"""RunningKernel: one launched kernel, the single owner of its status and of its life.

The flow of a kernel's life reads top-down in this module: the hub creates a
:class:`RunningKernel` once the kernel answers and calls :meth:`~RunningKernel.start_watching`;
from then on one task per kernel awaits its process's end (``manager.wait()``).
An unexpected death is told to the kernel's clients, emitted as ``died``, and
then the kernel asks its :class:`~kernel_hub.lifecycle.restarter.KernelRestarter`
(pure policy) whether and when to launch again, and launches through the
:class:`~kernel_hub.lifecycle.starter.Starter` itself, with the old process's
connection info so that ports and key stay. Its clients
(:class:`~kernel_hub.KernelClient`) are told when it is back or has ended, and
its :class:`~kernel_hub.lifecycle.monitor.ActivityMonitor` follows the kernel's
execution state. Nobody else writes its fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..aio import being_cancelled, cancel_and_wait
from ..client import AsyncKernelClient, BlockingKernelClient
from ..contract.errors import KernelDied, KernelHubError
from ..contract.types import RestartPolicy
from ..wire.connection import CHANNELS, endpoint
from ..wire.transport import ZMQTransport
from .held import send_signal, signal_name
from .kernel_client import KernelClient
from .monitor import ActivityMonitor, ExecutionState
from .restarter import KernelRestarter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..contract.manager import KernelManager
    from ..contract.types import KernelType, LaunchRequest
    from .starter import Started, Starter

__all__ = ["KernelStatus", "RunningKernel"]

log = logging.getLogger("kernel_hub.restarter")

#: The values of :attr:`RunningKernel.status`.
KernelStatus = str

#: Emit a hub event for this kernel: ``(kind, **data)``.
Emitter = Callable[..., None]


def first_line(exc: BaseException) -> str:
    """Return the first line of *exc*'s message (event data stays one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


class RunningKernel:
    """One launched kernel: its type, connection info, state and manager.

    Returned by :meth:`KernelHub.launch` and :meth:`KernelHub.attach`; kept in
    ``hub.kernels`` until it is shut down or dies for good. It watches its
    process and relaunches it per its :attr:`restart_policy`; after a relaunch
    ``connection_info``, ``state`` and ``manager`` describe the new process. A
    relaunch keeps the connection info (ports, key) wherever the provider can,
    so every client keeps working; when it cannot, ``connection_changed`` is
    emitted and the clients from :meth:`client` move to the new endpoint.

    Hosts do not construct it; the hub does.

    :param hub: the hub that launched or attached it (for :meth:`describe` and hosts).
    :param starter: the hub's launch path, which every relaunch goes through.
    :param ready_timeout: how long a relaunch may take to answer.
    :param plugin: the name of the plugin that owns the kernel's type.
    :param emit: emits a hub event about this kernel.
    :param on_end: called once when the kernel has ended for good.
    :param launch_id: the id its provider launched it under, when not *kernel_id*.
    """

    def __init__(
        self,
        hub: Any,
        *,
        kernel_id: str,
        kernel_type: KernelType,
        request: LaunchRequest,
        started: Started,
        starter: Starter,
        emit: Emitter,
        on_end: Callable[[RunningKernel], None],
        plugin: str = "",
        ready_timeout: float = 60.0,
        restart_policy: RestartPolicy | None = None,
        monitor: ActivityMonitor | None = None,
        launch_id: str | None = None,
    ) -> None:
        self.hub = hub
        self.id = kernel_id
        #: The id its provider launched it under: :attr:`id`, unless it was a pool's
        #: spare handed out under the id its launch asked for (:meth:`serve`);
        #: its files, container or job may be named after this one.
        self.launch_id = launch_id or kernel_id
        self.kernel_type = kernel_type
        self.request = request
        #: The name of the plugin that owns this kernel's type (recorded by :meth:`describe`).
        self.plugin = plugin
        self.connection_info: dict[str, Any] = dict(started.connection_info)
        self.state: dict[str, Any] = dict(started.state)
        self.manager: KernelManager = started.manager
        #: Whether the kernel runs under a local nanny (``hub.launch(..., nanny=True)``).
        self.nanny = started.nanny
        #: The policy its restarter applies (``enabled=False``: never restarted).
        self.restart_policy = restart_policy or RestartPolicy(enabled=False)
        self._starter = starter
        self._ready_timeout = ready_timeout
        self._emit = emit
        self._on_end = on_end
        self._monitor = monitor or ActivityMonitor()
        self._restarter = KernelRestarter(
            self.restart_policy, label=f"{kernel_type.id} {kernel_id[:8]}"
        )
        # Clients from client(): told of deaths, comebacks and the end. Weak, so that a
        # client dropped without close() does not live on here.
        self._clients: weakref.WeakSet[KernelClient] = weakref.WeakSet()
        self._ended = asyncio.Event()
        # Set while RUNNING or ended for good; cleared while a new process starts.
        self._settled = asyncio.Event()
        self._end_reason = ""
        self._watch_task: asyncio.Task[None] | None = None
        self._restart_task: asyncio.Future[None] | None = None
        self._status = "STARTING"
        #: ``time.time()`` of the launch (of the first launch, for an adopted kernel).
        self.created = time.time()
        #: Whether the last shutdown ended the process without a kill (shutdown's result).
        self._ended_politely = True

    def __repr__(self) -> str:
        return f"<RunningKernel {self.kernel_type.id} {self.id[:8]} [{self._status}]>"

    @property
    def type_id(self) -> str:
        return self.kernel_type.id

    @property
    def status(self) -> KernelStatus:
        """``STARTING``, ``RUNNING``, ``RESTARTING``, ``SHUTTING_DOWN``, ``DEAD`` or ``DETACHED``.

        ``DETACHED``: left running for another host (:meth:`KernelHub.detach`).
        """
        return self._status

    @property
    def execution_state(self) -> str:
        """``starting``, ``idle``, ``busy`` (from the kernel's IOPub status) or ``dead``."""
        return "dead" if self._status == "DEAD" else self._monitor.execution_state

    @property
    def last_activity(self) -> float:
        """``time.time()`` of the kernel's last IOPub status message (or of its launch)."""
        return self._monitor.last_activity

    def link_restored(self) -> None:
        """Tell the clients that the provider's link came back (``connection_restored``)."""
        for client in list(self._clients):
            client.link_restored()

    @property
    def client_count(self) -> int:
        """How many clients from :meth:`client` are open (a culler may count them as activity)."""
        return len(self._clients)

    @property
    def restarts(self) -> int:
        """How many times the kernel was relaunched after an unexpected death."""
        return self._restarter.restarts

    @property
    def monitor(self) -> ActivityMonitor:
        """The activity monitor that follows this kernel's execution state (read it only)."""
        return self._monitor

    @property
    def restarter(self) -> KernelRestarter:
        """The restart policy this kernel applies, with its budget (read it only)."""
        return self._restarter

    @property
    def interrupt_mode(self) -> str:
        """``"signal"`` or ``"message"``: how the kernel's type is interrupted."""
        return self.kernel_type.interrupt_mode

    def client(self) -> KernelClient:
        """Return a new client; ``async with kernel.client() as c:`` connects it.

        The client follows this kernel: after an automatic or manual restart it
        talks to the new process by itself (on the same sockets when the restart
        kept ports and key). Requests that were waiting when the kernel died fail
        with :class:`~kernel_hub.KernelDied`; requests made while it is being
        restarted wait for the new process, within their own timeout, and fail
        with ``KernelDied`` if it ends for good instead.
        """
        client = KernelClient(self, on_close=self._clients.discard)
        self._clients.add(client)
        return client

    def blocking_client(self) -> BlockingKernelClient:
        """Return a new, connected blocking client (close it when done)."""
        return BlockingKernelClient(async_client=self.client())

    def describe(self) -> dict[str, Any]:
        """Return JSON-able data from which :meth:`KernelHub.attach` rebuilds this kernel.

        ``plugin`` names the plugin that owns the kernel, and ``nanny`` says the
        kernel runs under a local nanny (then the core rebuilds its manager).
        ``launch_id`` is there only for a pool's spare handed out under another id
        (the id its provider knows it by, see :attr:`launch_id`).
        """
        described = {
            "kernel_id": self.id,
            "type_id": self.kernel_type.id,
            "plugin": self.plugin,
            "nanny": self.nanny,
            "connection_info": self.connection_info,
            "state": self.manager.describe(),
        }
        if self.launch_id != self.id:
            described["launch_id"] = self.launch_id
        return described

    def serve(self, request: LaunchRequest, *, restart_policy: RestartPolicy) -> None:
        """Become the kernel of *request*: a pool's spare handed out by the hub.

        Called by the hub, once, while the spare is RUNNING and has no client:
        from now on the kernel has the request's id (events, ``describe()``, the
        hub's registry and state dir), its request (a relaunch starts with its
        cwd and env) and *restart_policy*, with a fresh restart budget. Its
        provider still knows it by :attr:`launch_id`.

        :raises KernelHubError: when it is not a running spare.
        """
        if self._status != "RUNNING" or self._clients:
            raise KernelHubError(f"{self!r} cannot be handed out: not a running, unused spare")
        self.id = request.kernel_id
        self.request = request
        self.restart_policy = restart_policy
        restarter = KernelRestarter(restart_policy, label=f"{self.kernel_type.id} {self.id[:8]}")
        restarter.watching = self._restarter.watching
        self._restarter = restarter

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

    # ---- the kernel's life ----

    def start_watching(self) -> None:
        """Mark the kernel RUNNING and watch its process; called by the hub once it answers."""
        if self._status not in ("STARTING", "RESTARTING"):
            raise KernelHubError(f"{self!r} is already watched")
        self._running()
        self._start_watch()

    def _start_watch(self) -> None:
        """Watch the current process: one task, until its kernel ends or the watch is stopped."""
        self._watch_task = asyncio.ensure_future(self._watch())
        self._restarter.watching = True

    def _running(self) -> None:
        self._status = "RUNNING"
        self._settled.set()
        if self._monitor.execution_state == "starting":
            self._monitor.set_state("idle")  # it answered kernel_info: it is idle

    async def _stop_watching(self) -> None:
        """Stop watching (before a purposeful end or restart): that death is no surprise."""
        self._restarter.watching = False
        task, self._watch_task = self._watch_task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            await cancel_and_wait(task)

    async def _watch(self) -> None:
        """Await the process's end, again and again; recover from each unexpected death.

        One task for the kernel's whole life: a local kernel costs one pidfd
        registered with the loop and no polling.
        """
        try:
            while True:
                manager = self.manager
                up_since = time.monotonic()
                try:
                    status = await manager.wait()
                except Exception:
                    log.exception("waiting for %r failed; treating the kernel as dead", manager)
                    status = None
                if not await self._recover(manager, status, time.monotonic() - up_since):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the watch of %r failed", self)
            self._end(failed=f"the restarter failed: {exc!r}")
        finally:
            self._restarter.watching = False

    async def _recover(self, manager: KernelManager, status: int | None, ran_for: float) -> bool:
        """Handle one unexpected death; return whether the kernel runs again."""
        self._status = "RESTARTING" if self.restart_policy.enabled else "DEAD"
        self._settled.clear()  # until it runs again, or has ended (_end)
        self._monitor.close()
        self._monitor.set_state("dead")
        # Before ``died`` is emitted: from then on, every client knows (a request made in
        # between waits for the restart, or for the end, instead of going to a dead process).
        died = KernelDied(
            f"the kernel {self.type_id} died (exit status {status})", exit_status=status
        )
        for client in list(self._clients):
            client.kernel_died(died)
        # A manager that knows why its kernel ended (a batch job's time limit) says so.
        reason = manager.exit_reason
        self._emit("died", exit_status=status, **({"reason": reason} if reason else {}))
        # Gone for the kernel means gone: a manager that only lost its link is killed.
        with contextlib.suppress(Exception):
            if await manager.is_alive():
                await manager.kill()
        await manager.cleanup()  # before the relaunch, which reuses the connection file name
        error = ""
        elapsed: float | None = ran_for
        while (restart := self._restarter.decide(elapsed)) is not None:
            elapsed = None
            self._emit("restarting", attempt=restart.attempt, delay=round(restart.delay, 3))
            await asyncio.sleep(restart.delay)  # the backoff itself, not a synchronisation
            try:
                await self._relaunch()
            except KernelHubError as exc:
                error = first_line(exc)
                log.warning("restart %d of %r failed: %s", restart.attempt, self, error)
                continue
            self._restarter.restarts += 1
            self._emit("restarted", attempt=restart.attempt)
            return True
        if not self.restart_policy.enabled:
            self._end()
        else:
            why = self._restarter.why_not()
            self._end(failed=why + (f"; the last one failed: {error}" if error else ""))
        return False

    async def _relaunch(self) -> None:
        """Launch the same type with the same request and switch to the new process.

        The request carries the old process's connection info: the new process
        has the same ports and key wherever the provider chooses the endpoint, so
        clients holding the old connection info (jupyter_client's, a connection
        file) reach it without noticing. When it has another endpoint (a port was
        taken, or the provider's endpoint moves), ``connection_changed`` is
        emitted before the clients from :meth:`client` move to it.

        :raises LaunchError: when the new process does not become ready; it is
            killed and cleaned up, and this kernel still describes the old one.
        """
        self._status = "RESTARTING"
        self._settled.clear()
        old = self.connection_info
        started = await self._starter.start(
            self.kernel_type,
            dataclasses.replace(self.request, connection=old),
            plugin=self.plugin,
            ready_timeout=self._ready_timeout,
            monitor=self._monitor,
            nanny=self.nanny,
        )
        self.connection_info = dict(started.connection_info)
        self.state = dict(started.state)
        self.manager = started.manager
        if endpoint(old) != endpoint(self.connection_info):
            self._emit("connection_changed", **self._changed(old))
        self._running()
        for client in list(self._clients):
            client.kernel_back()

    def _changed(self, old: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``connection_changed``'s data: the new endpoint, without the key."""
        info = self.connection_info
        data: dict[str, Any] = {"transport": info.get("transport"), "ip": info.get("ip")}
        data.update({f"{c}_port": info.get(f"{c}_port") for c in CHANNELS})
        data["key_changed"] = info.get("key") != old.get("key")
        if self.state.get("connection_file"):
            data["connection_file"] = self.state["connection_file"]
        return data

    def _end(self, *, failed: str | None = None) -> None:
        """Mark the kernel ended for good and drop it from the hub; emit ``failed`` if given."""
        if failed:
            reason = f"the kernel {self.type_id} failed: {failed}"
        elif self._status == "SHUTTING_DOWN":
            reason = f"the kernel {self.type_id} was shut down"
        else:
            reason = (
                f"the kernel {self.type_id} died (exit status {self.manager.exit_status}) "
                "and is not restarted: its restart policy is off"
            )
        self._status = "DEAD"
        self._end_reason = reason
        self._settled.set()
        self._monitor.close()
        self._monitor.set_state("dead")
        for client in list(self._clients):
            client.kernel_ended(reason)
        self._on_end(self)
        if failed is not None:
            self._emit("failed", reason=failed)
        self._ended.set()

    async def _stop_process(self, *, now: bool, timeout: float, restart: bool = False) -> bool:
        """End the current process: ``shutdown_request`` (unless *now*), then kill if needed.

        *timeout* counts from here: the request and the process's exit share it.

        :returns: whether the process ended without being killed.
        """
        polite = True
        try:
            if now or not await self.manager.is_alive():
                polite = not now
                await self.manager.kill()
            else:
                polite = await self._ask_to_end(timeout=timeout, restart=restart)
        finally:
            with contextlib.suppress(Exception):
                if await self.manager.is_alive():
                    polite = False
                    await self.manager.kill()
            self._monitor.close()
            await self.manager.cleanup()
        return polite

    async def _ask_to_end(self, *, timeout: float, restart: bool) -> bool:
        """Send ``shutdown_request`` and wait for the process to end; return whether it did.

        What counts is the process's end, not the reply, so the request is not awaited
        (a kernel may exit before its reply is read) and the client has no manager.
        Only the control channel is opened: a busy kernel does not answer on shell, and
        with hundreds of kernels ending, three sockets and handshakes less on each side
        is CPU saved for the kernels' own exits.
        """
        transport = ZMQTransport(self.connection_info, identity=b"", channels=("control",))
        client = AsyncKernelClient(self.connection_info, transport=transport)
        await client.connect()
        request = asyncio.ensure_future(
            client.request("shutdown_request", {"restart": restart}, channel="control")
        )
        try:
            async with asyncio.timeout(timeout):
                await self.manager.wait()
        except TimeoutError:
            return False
        finally:
            await client.close()  # fails the request if it is still waiting for its reply
            await asyncio.gather(request, return_exceptions=True)
        return True

    # ---- host API ----

    async def detach(self) -> None:
        """Stop watching and managing the kernel, and leave it running (``DETACHED``).

        Called by :meth:`KernelHub.detach` and :meth:`KernelHub.hand_off`: the kernel
        goes on for its grace, for another host to adopt or attach. Its clients from
        :meth:`client` are ended; the manager's links (a nanny's sockets) are closed, its
        process left alone.
        """
        if self._status in ("DEAD", "DETACHED"):
            return
        await self._stop_watching()
        if self._restart_task is not None and not self._restart_task.done():
            with contextlib.suppress(BaseException):
                await cancel_and_wait(self._restart_task)
        self._status = "DETACHED"
        self._settled.set()  # a held interrupt fails now instead of waiting out its timeout
        self._monitor.close()
        for client in list(self._clients):
            client.kernel_ended(f"the kernel {self.type_id} was detached from this host")
        close = getattr(self.manager, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result
        self._ended.set()

    async def interrupt(self, *, timeout: float | None = 60.0) -> None:
        """Interrupt the kernel's running execution; held while the kernel (re)starts.

        Sends ``interrupt_request`` on the control channel when the kernel type's
        ``interrupt_mode`` is ``"message"``, else has the manager send SIGINT. While
        the kernel is being restarted the interrupt waits until the new process
        has answered (a signal during its start-up would end it) and then goes to
        that process. Await it on the hub's loop.

        :raises KernelDied: when the kernel has ended, or ends instead of coming back
            (the interrupt is dropped; the message says why).
        :raises TimeoutError: when it is not back, or (message mode) does not
            answer, within *timeout* seconds.
        """
        left = await self._until_running("interrupt", timeout)
        if self.interrupt_mode == "message":
            client = AsyncKernelClient(
                self.connection_info,
                transport=ZMQTransport(self.connection_info, identity=b"", channels=("control",)),
            )
            await client.connect()
            try:
                await client.request("interrupt_request", channel="control", timeout=left)
            finally:
                await client.close()
        else:
            await self.manager.interrupt()

    async def signal(self, signum: int, *, timeout: float | None = 60.0) -> None:
        """Send signal *signum* to the kernel's process; held while the kernel (re)starts.

        SIGINT goes through the manager's ``interrupt`` (as :meth:`interrupt` in
        signal mode). To end the kernel, call :meth:`shutdown`. Await it on the
        hub's loop.

        :raises KernelDied: when the kernel has ended, or ends instead of coming back.
        :raises TimeoutError: when it is not back within *timeout* seconds.
        """
        await self._until_running(signal_name(signum), timeout)
        await send_signal(self.manager, signum)

    async def _until_running(self, what: str, timeout: float | None) -> float | None:
        """Wait while a process of this kernel starts; return what is left of *timeout*."""
        if self._status == "RUNNING":
            return timeout  # the common case: no wait, no timer
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._status in ("STARTING", "RESTARTING"):
            log.info("%s for %r held until the kernel answers", what, self)
        try:
            async with asyncio.timeout_at(deadline):
                while self._status in ("STARTING", "RESTARTING"):
                    await self._settled.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{what} not delivered: {self!r} was not back within {timeout} s"
            ) from None
        if self._status != "RUNNING":
            why = self._end_reason or {
                "SHUTTING_DOWN": f"the kernel {self.type_id} is being shut down",
                "DETACHED": f"the kernel {self.type_id} was detached from this host",
            }.get(self._status, f"the kernel {self.type_id} died")
            raise KernelDied(f"{what} not delivered: {why}")
        return None if deadline is None else max(0.0, deadline - loop.time())

    async def restart(self, *, now: bool = False, timeout: float = 5.0) -> None:
        """Restart the kernel: end the process, then launch the same type with the same request.

        The process is asked to end with ``shutdown_request`` (``restart: true``)
        on the control channel, and killed with its process group if it has not
        ended after *timeout* seconds (at once with *now*). Emits ``restarting``
        and ``restarted`` with ``requested=True``; it does not count against the
        restart policy. Clients from :meth:`client` follow by themselves.

        :raises KernelHubError: when the kernel is not running.
        :raises LaunchError: when the relaunch fails; the kernel is then dead
            (``failed`` is emitted) and dropped from the hub.
        """
        if self._status != "RUNNING":
            raise KernelHubError(f"cannot restart {self!r}: only a RUNNING kernel can be restarted")
        await self._stop_watching()  # before acting: this death is on purpose
        self._status = "RESTARTING"
        self._settled.clear()
        stopped = KernelDied(f"the kernel {self.type_id} was restarted while a request was waiting")
        for client in list(self._clients):
            client.kernel_died(stopped)
        self._emit("restarting", requested=True)
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
        self._emit("restarted", requested=True)

    async def _restart_process(self, now: bool, timeout: float) -> None:
        try:
            if not await self._stop_process(now=now, timeout=timeout, restart=True) and not now:
                log.warning(
                    "%r did not exit within %s s of shutdown_request (restart); killed it",
                    self,
                    timeout,
                )
            self._monitor.set_state("dead")
            await self._relaunch()
        except BaseException as exc:
            if self._status != "SHUTTING_DOWN":  # a shutdown ends the kernel itself
                self._end(failed=f"manual restart failed: {first_line(exc)}")
            raise
        self._start_watch()

    async def shutdown(
        self,
        *,
        now: bool = False,
        timeout: float = 5.0,
        slot: contextlib.AbstractAsyncContextManager[Any] | None = None,
        quiet: bool = False,
    ) -> bool:
        """Shut the kernel down and release what its launch created; it is not restarted.

        :param now: kill at once instead of asking politely with ``shutdown_request``.
        :param timeout: how long to wait, from when the request is sent, for the
            process to end before killing it (with its process group).
        :param slot: for a host that paces many shutdowns (:meth:`KernelHub.shutdown_all`):
            held (``async with slot:``) while the process is being ended. The kernel
            stops being watched at once; its *timeout* starts once it holds the slot.
        :param quiet: do not log a kill; the caller counts them (``shutdown_all``).
        :returns: True when the process ended by itself (or had already ended),
            False when it was killed (always with *now*).
        """
        if self._status in ("DEAD", "SHUTTING_DOWN"):
            # Dead on its own, it may still be being cleaned up by its watch (DEAD from the
            # death on), or another shutdown is under way: after shutdown() returns, nothing
            # of the kernel may be left.
            await self._ended.wait()
            return self._ended_politely
        self._status = "SHUTTING_DOWN"
        try:
            await self._stop_watching()  # before acting: this death is on purpose
            if self._restart_task is not None and not self._restart_task.done():
                with contextlib.suppress(BaseException):
                    await cancel_and_wait(self._restart_task)
            async with slot or contextlib.nullcontext():
                self._ended_politely = await self._stop_process(now=now, timeout=timeout)
            if not self._ended_politely and not now and not quiet:
                log.warning(
                    "%r did not exit within %s s of shutdown_request; killed it", self, timeout
                )
        finally:
            self._end()
            self._emit("shutdown")
        return self._ended_politely
