"""Launch a remote kernel over SSH, and manage it through its nanny over the tunnels.

:func:`launch_remote` is what the ``launch`` hook returns: connect (or reuse
the host's connection), start the nanny, forward its ports. :func:`make_remote_manager`
is what ``make_manager`` returns: it finds this process's tunnels of that kernel,
or, when re-attaching from saved state in a fresh process, reconnects and opens
them again, and wraps a :class:`kernel_hub.managers.remote.NannyManager` on the local ports
in an :class:`SSHKernelManager` that also knows about the SSH link.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from kernel_hub.provider import (
    CHANNELS,
    KernelHubError,
    KernelManager,
    LaunchError,
    LaunchResult,
    NannyManager,
    curve_keys,
    has_curve,
    registration_timeout,
    registration_wanted,
)

from .config import SSHHostConfig
from .connection import HostConnection, SSHLoop, acquire
from .remote_launch import kill_remote, start_nanny
from .tunnel import TunnelSet, get_tunnels, open_tunnels

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest

    from .config import SSHKernelConfig

__all__ = ["SSHKernelManager", "launch_remote", "make_remote_manager"]

log = logging.getLogger("kernel_hub.ssh")

R = TypeVar("R")

#: Seconds an abandoned start may take to stop what it started on the remote host.
CLEANUP_TIMEOUT = 60.0


def _emitter(hub: HubContext | None, kernel_id: str, type_id: str) -> Any:
    """Return ``emit(kind, **data)`` for one kernel's events (``hub.emit`` is thread-safe)."""
    if hub is None:
        return lambda kind, **data: None
    return functools.partial(hub.emit, kernel_id=kernel_id, type_id=type_id)


def _tunnel_key(host: HostConnection | SSHHostConfig, workdir: str) -> tuple[Any, ...]:
    target = host.target if isinstance(host, HostConnection) else host
    return (target.host, target.port, target.user, target.jump_host, workdir)


def _remote_ports(info: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in info.items() if k.endswith("_port")}


def _previous_endpoint(
    previous: Mapping[str, Any] | None,
) -> tuple[str | None, dict[str, int] | None]:
    """Return the key and local kernel ports a relaunch keeps (``None``: make new ones).

    The local ends of the tunnels are what clients connect to: the new tunnels
    listen on the old local ports where they are free (else on new ones, and the
    hub emits ``connection_changed``). The remote ports may be anything.
    """
    if not previous:
        return None, None
    old_key = previous.get("key")
    if isinstance(old_key, bytes):
        old_key = old_key.decode("ascii")
    key = str(old_key) if old_key else None
    if previous.get("ip") != "127.0.0.1" or previous.get("transport", "tcp") != "tcp":
        return key, None
    try:
        ports = {f"{c}_port": int(previous[f"{c}_port"]) for c in CHANNELS}
    except (KeyError, TypeError, ValueError):
        return key, None  # a retry after a taken port passes no ports
    return key, ports


def _curve_options(request: LaunchRequest) -> dict[str, Any]:
    """Return the nanny's CurveZMQ options for *request*: it judges its own kernel.

    ``auto`` and ``required`` go to the remote nanny as they are (it knows the
    remote ipykernel's version). The keypair is chosen here (a relaunch keeps its
    own) and sent on stdin, so that the nanny starts the kernel before it imports
    pyzmq; without CurveZMQ here, the nanny makes one.
    """
    if request.transport_encryption == "disabled":
        return {}
    old = request.connection or {}
    relaunch = all(old.get(k) for k in ("curve_publickey", "curve_secretkey"))
    keys = curve_keys(old) if relaunch or has_curve() else None
    return {"curve": request.transport_encryption, "curve_keys": keys}


def _registration(
    kernel_type: KernelType, request: LaunchRequest, kc: SSHKernelConfig
) -> float | None:
    """Return the seconds the kernel has to report its ports, or ``None`` for no handshake.

    The same rule as local kernels (``registration_wanted``): the launch param
    ``registration`` decides, else the type's ``kernel_protocol_version``.
    """
    try:
        if not registration_wanted(kernel_type.metadata, request.params):
            return None
        return registration_timeout(request.params)
    except LaunchError as exc:
        raise LaunchError(f"cannot launch ssh/{kc.name}: {exc}") from None


def _registration_hint(kc: SSHKernelConfig, request: LaunchRequest) -> str:
    """Return how to launch this type without the handshake, for the nanny's error."""
    if "registration" in request.params:
        return ""  # the launch asked for it: the nanny's own message says how not to
    return (
        f'ssh/{kc.name} asks for it with kernel_protocol_version = "{kc.kernel_protocol_version}" '
        f"in [ssh.{kc.name}]: remove that line if the kernel does not implement the "
        "registration handshake"
    )


async def launch_remote(
    hub: HubContext | None, kernel_type: KernelType, request: LaunchRequest, kc: SSHKernelConfig
) -> LaunchResult:
    """Start kernel *kc* on its host and return local connection info and a re-attach state.

    Emits ``progress`` events (``connecting``, ``starting nanny``, ``forwarding``,
    ``waiting for kernel``) through the hub.

    A type whose ``kernel_protocol_version`` is 5.6 or later (or a launch with
    ``params={"registration": True}``) starts its kernel with the registration
    handshake: the remote nanny gets ``--registration``, the kernel binds its own
    ports there and reports them, and the tunnels lead to the reported ports.

    :raises LaunchError: naming the host and what to fix; nothing is left running.
    """
    registration = _registration(kernel_type, request, kc)  # a bad param fails at once
    ssh = SSHLoop.get()
    emit = _emitter(hub, request.kernel_id, kernel_type.id)
    target = kc.target
    previous_key, preferred = _previous_endpoint(request.connection)
    emit("progress", step="connecting", message=f"connecting to {target.label}")
    host = await ssh.submit(acquire(target))
    try:
        how = " (the kernel reports its ports)" if registration is not None else ""
        emit(
            "progress",
            step="starting nanny",
            message=f"starting the nanny and kernel with {kc.python} on {target.label}{how}",
        )
        handshake = await _to_the_end(
            ssh,
            start_nanny(
                host,
                kc,
                cwd=request.cwd,
                env=request.env,
                key=previous_key,
                registration=registration,
                registration_hint=_registration_hint(kc, request),
                **_curve_options(request),
            ),
        )
    except BaseException:
        await ssh.submit(host.release())
        raise
    remote_info = dict(handshake["connection_info"])
    remote_ports = _remote_ports(remote_info)
    emit(
        "progress",
        step="forwarding",
        message=f"forwarding {len(remote_ports)} ports from {target.label} to 127.0.0.1",
    )
    key = _tunnel_key(host, handshake["workdir"])
    try:
        tunnels = await ssh.submit(open_tunnels(host, remote_ports, key=key, preferred=preferred))
    except BaseException as exc:
        await ssh.submit(kill_remote(host, int(handshake["nanny_pid"])))
        await ssh.submit(host.release())
        if isinstance(exc, OSError):
            raise LaunchError(
                f"cannot forward the ports of ssh/{kc.name} from {target.label} to 127.0.0.1 "
                f"here: {exc}"
            ) from exc
        raise
    state = {
        "kernel_id": request.kernel_id,
        "config_name": kc.name,
        "ssh": target.to_state(),
        "remote_ports": remote_ports,
        "nanny_pid": handshake["nanny_pid"],
        "kernel_pid": handshake["kernel_pid"],
        "workdir": handshake["workdir"],
    }
    emit(
        "progress",
        step="waiting for kernel",
        message=f"waiting for the kernel on {target.label} to answer",
    )
    info = tunnels.connection_info(remote_info)
    try:
        nanny = NannyManager(info, state, type_id=kernel_type.id)
    except BaseException:
        await ssh.submit(tunnels.release())
        raise
    # The live manager (it holds the tunnels) goes to the hub with the result;
    # make_remote_manager rebuilds one from the state on re-attach.
    manager = SSHKernelManager(nanny, tunnels, info, state, type_id=kernel_type.id, emit=emit)
    return LaunchResult(connection_info=info, state=state, manager=manager)


async def _to_the_end(ssh: SSHLoop, coro: Coroutine[Any, Any, R]) -> R:
    """Run *coro* on the SSH loop; cancelled, cancel it there and wait for its own cleanup.

    ``ssh.submit`` returns at once when cancelled, while *coro* still undoes its work
    on the SSH loop: a start of a remote nanny that is still stopping it. Releasing
    the connection then (or exiting) cut that short ("SSH connection closed") and
    left the nanny to its lease.
    """
    ended: concurrent.futures.Future[None] = concurrent.futures.Future()
    tasks: list[asyncio.Task[R]] = []

    def start() -> None:
        task = ssh.loop.create_task(coro)
        task.add_done_callback(lambda _: ended.set_result(None))
        tasks.append(task)

    ssh.loop.call_soon_threadsafe(start)
    try:
        await asyncio.shield(asyncio.wrap_future(ended))
    except asyncio.CancelledError:
        # Callbacks run in order: start() has run before this one.
        ssh.loop.call_soon_threadsafe(lambda: tasks[0].cancel())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await asyncio.shield(asyncio.wrap_future(ended))
        raise
    return tasks[0].result()


async def _take_tunnels(
    target: SSHHostConfig, state: Mapping[str, Any], preferred: Mapping[str, int]
) -> TunnelSet:
    """Return this process's tunnels of the kernel in *state*, opening them if needed."""
    key = _tunnel_key(target, str(state["workdir"]))
    existing = get_tunnels(key)
    if existing is not None:
        existing.refs += 1
        return existing
    host = await acquire(target)
    remote_ports = {k: int(v) for k, v in dict(state["remote_ports"]).items()}
    try:
        return await open_tunnels(host, remote_ports, key=key, preferred=preferred)
    except BaseException:
        await host.release()
        raise


async def make_remote_manager(
    hub: HubContext | None,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> SSHKernelManager:
    """Build the manager of a remote kernel, reconnecting and re-opening tunnels if needed.

    The local ports of *connection_info* are reused where they are free, so a
    re-attached host keeps its clients' connection info; where one is taken (by
    the process that launched the kernel, still attached), another is chosen and
    :attr:`SSHKernelManager.connection_info` holds the updated info.
    """
    try:
        target = SSHHostConfig.from_state(state["ssh"])
        state["remote_ports"], state["workdir"]
    except (KeyError, TypeError, ValueError) as exc:
        raise LaunchError(
            f"cannot manage {kernel_type.id}: its state lacks the SSH details ({exc}); "
            "pass the state that launch or describe() returned"
        ) from None
    preferred = {k: int(v) for k, v in connection_info.items() if k.endswith("_port")}
    tunnels = await SSHLoop.get().submit(_take_tunnels(target, state, preferred))
    info = tunnels.connection_info(connection_info)
    try:
        nanny = NannyManager(info, state, type_id=kernel_type.id)
    except BaseException:
        await SSHLoop.get().submit(tunnels.release())
        raise
    emit = _emitter(hub, str(state.get("kernel_id", "")), kernel_type.id)
    return SSHKernelManager(nanny, tunnels, info, state, type_id=kernel_type.id, emit=emit)


class SSHKernelManager(KernelManager):
    """A remote kernel's manager: its nanny over the tunnels, plus the SSH link's health.

    Delegates to a :class:`~kernel_hub.managers.remote.NannyManager` on the local ends of
    the tunnels, and adds what only the SSH side knows: a dropped connection is
    announced (``connection_lost``/``connection_restored`` events) and does not
    count as a death; a host gone for longer than ``reconnect_timeout``, or a
    nanny gone after a reconnect, ends :meth:`wait`.
    """

    def __init__(
        self,
        nanny: NannyManager,
        tunnels: TunnelSet,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        type_id: str = "",
        emit: Any = None,
    ) -> None:
        self.nanny = nanny
        self.tunnels = tunnels
        self.host = tunnels.host
        #: The connection info on this process's local ports.
        self.connection_info = dict(connection_info)
        self.state = dict(state)
        self.type_id = type_id
        self._emit = emit or (lambda kind, **data: None)
        self._unsubscribe = self.host.subscribe(self._on_link)
        self._closed = False
        self.gone_reason: str | None = None

    def __repr__(self) -> str:
        if self.gone_reason:
            status = "GONE"  # the most useful fact, even once cleaned up
        elif self._closed:
            status = "CLOSED"
        else:
            status = {"CONNECTED": "RUNNING"}.get(self.host.state, self.host.state)
        return (
            f"<SSHKernelManager {self.type_id or '?'} [{status} host={self.host.target.label} "
            f"nanny_pid={self.state.get('nanny_pid')}]>"
        )

    def _on_link(self, kind: str, data: dict[str, Any]) -> None:
        """Relay the shared connection's news as this kernel's events (SSH loop thread)."""
        if kind == "gone":
            self.gone_reason = str(data.get("reason", "host unreachable"))
            return  # wait() returns; the hub/restarter report the death
        self._emit(kind, **data)

    # ---- KernelManager ----

    async def is_alive(self) -> bool:
        if self._closed or self.gone_reason or self.host.state in ("GONE", "CLOSED"):
            return False
        if self.host.state != "CONNECTED":
            return True  # reconnecting: the remote kernel keeps running meanwhile
        return await self.nanny.is_alive()

    async def wait(self) -> int | None:
        ssh = SSHLoop.get()
        while True:
            if self.gone_reason or self.host.state in ("GONE", "CLOSED"):
                return None
            generation = self.host.generation
            inner = asyncio.ensure_future(self.nanny.wait())
            link = asyncio.ensure_future(ssh.submit(self.host.wait_change(generation)))
            try:
                await asyncio.wait({inner, link}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (inner, link):
                    if not task.done():
                        task.cancel()
                await asyncio.gather(inner, link, return_exceptions=True)
            if inner.done() and not inner.cancelled():
                return inner.result()  # the exit status, or the nanny link's error
            state = link.result() if link.done() and not link.cancelled() else self.host.state
            if state in ("GONE", "CLOSED"):
                return None
            if state == "CONNECTED":
                # Events published while the link was down are lost: ask once.
                try:
                    alive = await self.nanny.is_alive()
                except KernelHubError as exc:
                    # The host came back without its nanny (rebooted, killed): the kernel is gone.
                    self.gone_reason = f"the nanny did not answer after the reconnect ({exc})"
                    return None
                if not alive:
                    return self.nanny.exit_status

    async def signal(self, signum: int) -> None:
        await self.nanny.signal(signum)

    async def interrupt(self) -> None:
        await self.nanny.interrupt()

    async def kill(self) -> None:
        if self.gone_reason:
            return
        await self.nanny.kill()

    async def restart(self) -> int:
        """Restart the remote kernel in place (same ports, same key) through the nanny.

        :returns: the new kernel's pid (on the remote host).
        """
        pid = await self.nanny.restart()
        self.state["kernel_pid"] = pid
        return pid

    async def cleanup(self) -> None:
        """Shut the nanny down (it removes its work dir), then close the tunnels and connection."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.gone_reason and self.host.state == "CONNECTED":
                await self.nanny.cleanup()
            else:
                self.nanny.close()  # the nanny is out of reach: just let go of our sockets
        finally:
            self._unsubscribe()
            await self._release_tunnels()

    async def close(self) -> None:
        """Let go of the kernel without ending it: close sockets, tunnels and our connection ref.

        The remote nanny and kernel keep running; :func:`make_remote_manager`
        re-attaches to them from :meth:`describe`.
        """
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        self.nanny.close()
        await self._release_tunnels()

    async def _release_tunnels(self) -> None:
        """Give back our tunnel reference, to the end even if the caller is cancelled.

        A release cut short after its count dropped would leave the listeners open and the
        connection held, with nobody left to close them.
        """
        await asyncio.shield(SSHLoop.get().submit(self.tunnels.release()))

    def describe(self) -> dict[str, Any]:
        out = dict(self.state)
        inner = self.nanny.describe()
        out.update({k: v for k, v in inner.items() if k not in out or k in ("kernel_pid",)})
        out["ssh"] = self.host.target.to_state()
        return out

    async def last_output(self, lines: int = 20) -> str:
        text = ""
        with contextlib.suppress(Exception):
            text = await self.nanny.last_output(lines)
        where = f"(kernel on ssh host {self.host.target.label})"
        return f"{where}\n{text}" if text else where

    @property
    def exit_status(self) -> int | None:
        return self.nanny.exit_status
