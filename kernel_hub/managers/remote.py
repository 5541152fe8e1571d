"""NannyManager: the host side of a nanny, a :class:`KernelManager` over signed ZeroMQ.

A nanny (:mod:`kernel_hub.nanny`) runs next to a kernel on another machine and
serves its manager on two sockets: ``nanny_control`` (requests) and
``nanny_events`` (``kernel_died``, ``kernel_restarted``, ``nanny_welcome``).
The protocol is in ``docs/nanny-protocol.md``.

A manager may be used from several event loops (the hub's, and the private loop
of a blocking client), and ZeroMQ sockets belong to one thread: so each loop
gets its own sockets, created lazily on first use and registered with that
loop's reader callbacks like the client's transport. The kernel's state (pid,
exit status) is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import zmq

from ..contract.errors import KernelHubError
from ..contract.manager import KernelManager
from ..wire.droplog import DropLog
from ..wire.session import BadSignature, Message, Session
from ..wire.transport import ZMQTransport

if TYPE_CHECKING:
    from collections.abc import Mapping

    pass

__all__ = ["NannyManager", "is_nanny_info"]

log = logging.getLogger("kernel_hub.remote")

_BAD_SIGNATURE = "dropped nanny messages with a bad signature"
_MALFORMED = "dropped malformed nanny messages"


def is_nanny_info(connection_info: Mapping[str, Any]) -> bool:
    """Return whether *connection_info* describes a kernel served by a nanny."""
    return "nanny_control_port" in connection_info and "nanny_events_port" in connection_info


class _Link:
    """The sockets of one event loop: DEALER for requests, SUB (lazy) for events."""

    def __init__(self, manager: NannyManager, loop: asyncio.AbstractEventLoop) -> None:
        self.manager = manager
        self.loop = loop
        self.session = Session(
            manager.connection_info.get("key", ""),
            manager.connection_info.get("signature_scheme", "hmac-sha256"),
        )
        self.pending: dict[str, asyncio.Future[Message]] = {}
        #: Futures woken by the next event on the SUB socket.
        self.event_waiters: list[asyncio.Future[None]] = []
        #: Set when the SUB socket lost its connection (until the next welcome).
        self.disconnected = False
        self.closed = False
        self._monitor_fd: int | None = None
        # One transport per socket kind (the SUB one only once subscribed): the same drain
        # as the kernel clients' channels.
        # No fixed routing id: a ROUTER refuses a reconnection (a tunnel's stream dropped and
        # opened again) under an id it still holds, and then drops every request unanswered.
        self.control = ZMQTransport(
            manager.connection_info, identity=b"", channels=("nanny_control",)
        )
        self.control.open(self._on_frames)
        self.events: ZMQTransport | None = None
        self.monitor: zmq.Socket[bytes] | None = None

    def __repr__(self) -> str:
        state = "CLOSED" if self.closed else ("SUBSCRIBED" if self.events is not None else "OPEN")
        return f"<_Link {self.manager.where} [{state}]>"

    def subscribe(self) -> None:
        """Open the SUB socket (once); the nanny answers the subscription with nanny_welcome."""
        if self.events is not None or self.closed:
            return
        self.events = ZMQTransport(
            self.manager.connection_info, identity=b"", channels=("nanny_events",)
        )
        self.events.open(self._on_frames)
        sub = self.events.socket("nanny_events")
        assert sub is not None  # just opened
        # A nanny killed outright sends nothing; its closed connection is the only news.
        self.monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
        fd = int(self.monitor.getsockopt(zmq.FD))
        self.loop.add_reader(fd, self._drain_monitor)
        self._monitor_fd = fd
        self.loop.call_soon(self._drain_monitor)

    def _drain_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        mon = self.monitor
        while not self.closed and mon is not None and not mon.closed:
            try:
                event = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CONNECT_RETRIED):
                # SUB reconnects and re-subscribes by itself; the nanny then welcomes it again.
                self.disconnected = True
                self._wake()

    def _on_frames(self, channel: str, frames: list[bytes]) -> None:
        """One nanny message from the transport's drain: verify, then reply or event."""
        if self.closed:
            return
        try:
            msg = self.session.deserialize(frames)
        except BadSignature as exc:
            self.manager.drops.count(_BAD_SIGNATURE, str(exc))
            return
        except ValueError as exc:
            self.manager.drops.count(_MALFORMED, str(exc))
            return
        if channel == "nanny_events":
            self._on_event(msg)
        else:
            self._on_reply(msg)

    def _on_reply(self, msg: Message) -> None:
        fut = self.pending.pop(msg.parent_header.get("msg_id", ""), None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _on_event(self, msg: Message) -> None:
        kind = msg.header.get("msg_type")
        self.manager.handle_event(kind, msg.content)
        if kind == "nanny_welcome":
            self.disconnected = False
        elif kind == "nanny_exiting":
            # Nobody is left to answer: a request in flight (a kill racing another manager's
            # shutdown) fails now, not after its timeout, and its caller sees the kernel ended.
            self._fail_pending(
                KernelHubError(f"the nanny at {self.manager.where} has exited; its kernel is gone")
            )
        self._wake()

    def _fail_pending(self, err: BaseException) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(err)
        self.pending.clear()

    def _wake(self) -> None:
        waiters, self.event_waiters = self.event_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def next_event(self) -> None:
        """Wait for the next event on the SUB socket (or for the link to close)."""
        if self.closed:
            raise KernelHubError(f"{self.manager!r} was closed")
        fut: asyncio.Future[None] = self.loop.create_future()
        self.event_waiters.append(fut)
        await fut

    async def request(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        """Send one signed ``nanny_request`` and return the ``ok`` reply content."""
        if self.closed:
            raise KernelHubError(f"{self.manager!r} was closed")
        msg = self.session.msg("nanny_request", {"op": op, **args})
        msg_id = msg.header["msg_id"]
        fut: asyncio.Future[Message] = self.loop.create_future()
        self.pending[msg_id] = fut
        try:
            # The transport's send also catches a reply whose fd edge the send consumed.
            self.control.send("nanny_control", self.session.serialize(msg))
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError:
            raise KernelHubError(
                f"the nanny at {self.manager.where} did not answer {op!r} within {timeout} s; "
                "is it still running (and its tunnel, if any, still open)?"
            ) from None
        except zmq.Again:
            raise KernelHubError(
                f"cannot send {op!r} to the nanny at {self.manager.where}: the queue is full"
            ) from None
        finally:
            self.pending.pop(msg_id, None)
        content = dict(reply.content)
        if content.get("status") != "ok":
            raise KernelHubError(
                f"the nanny at {self.manager.where} refused {op!r}: "
                f"{content.get('evalue', 'no reason given')}"
            )
        return content

    def close(self) -> None:
        """Close the sockets; waiting requests fail. Call on this link's loop thread."""
        if self.closed:
            return
        self.closed = True
        if self._monitor_fd is not None and not self.loop.is_closed():
            self.loop.remove_reader(self._monitor_fd)
        self._monitor_fd = None
        sub = self.events.socket("nanny_events") if self.events is not None else None
        if sub is not None and self.monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                sub.disable_monitor()
        if self.monitor is not None:
            self.monitor.close(linger=0)
        self.control.close()
        if self.events is not None:
            self.events.close()
        self._fail_pending(KernelHubError(f"{self.manager!r} was closed"))
        # Waiters wake up and look at the state: after cleanup() the kernel is dead and
        # wait() returns; after a mere close() their next wait for an event raises.
        self._wake()


class NannyManager(KernelManager):
    """Manage a kernel through its nanny, wherever the two run.

    Built by the hub for kernels it runs under a local nanny, by the core's
    ``make_manager`` fallback for a provider's kernel whose connection info
    carries ``nanny_control_port``, and by providers that wrap it (SSH).
    ``wait()`` wakes on the
    nanny's ``kernel_died`` event, never by polling.

    ``cleanup()`` sends the nanny ``shutdown``: it kills the kernel if it still
    runs, removes its work dir and exits, so nothing lingers on the remote
    machine. To let go of a kernel without ending it (a host detaching, a
    client that only borrowed it), call :meth:`close` instead.

    :param connection_info: the kernel's connection info with the two nanny
        ports, as reachable from this host (tunnelled ports for SSH).
    :param state: the launch state or an earlier :meth:`describe`: ``nanny_pid``,
        ``kernel_pid``, ``workdir``; unknown keys are kept and given back by
        :meth:`describe`.
    :param type_id: the kernel type id, for reprs and messages.
    :param request_timeout: seconds to wait for the nanny's reply to a request.
    """

    def __init__(
        self,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any] | None = None,
        *,
        type_id: str = "",
        request_timeout: float = 10.0,
    ) -> None:
        if not is_nanny_info(connection_info):
            raise KernelHubError(
                "the connection info has no nanny_control_port/nanny_events_port; "
                "a NannyManager needs a kernel started by a nanny (kernel-hub launch --nanny)"
            )
        self.connection_info = dict(connection_info)
        self.state = dict(state or {})
        self.type_id = type_id
        self.request_timeout = request_timeout
        self.nanny_pid: int | None = self.state.get("nanny_pid")
        self.kernel_pid: int | None = self.state.get("kernel_pid")
        #: Nanny messages this host dropped, by kind (warnings are rate-limited).
        self.drops = DropLog(log, f"NannyManager {self.type_id or 'kernel'} {self.where}")
        self._exit_status: int | None = None
        self._dead = False
        self._shut = False
        #: Set by the nanny's ``nanny_exiting`` event: nothing is left to ask.
        self._nanny_gone = False
        self._links: dict[asyncio.AbstractEventLoop, _Link] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_state(
        cls, connection_info: Mapping[str, Any], state: Mapping[str, Any], *, type_id: str = ""
    ) -> NannyManager:
        """Rebuild a manager from :meth:`describe` output (re-attach, in any process)."""
        return cls(connection_info, state, type_id=type_id)

    @property
    def bad_signatures(self) -> int:
        """Nanny messages dropped on this host because of a bad signature."""
        return self.drops.counts.get(_BAD_SIGNATURE, 0)

    @property
    def where(self) -> str:
        """``ip:control_port`` of the nanny, for messages."""
        info = self.connection_info
        return f"{info.get('ip', '127.0.0.1')}:{info['nanny_control_port']}"

    def __repr__(self) -> str:
        if self._shut:
            status = "CLOSED"
        elif self._dead:
            status = f"DEAD exit={self._exit_status}"
        else:
            status = "RUNNING"
        return (
            f"<NannyManager {self.type_id or '?'} [{status} pid={self.kernel_pid} "
            f"nanny={self.where}]>"
        )

    def describe(self) -> dict[str, Any]:
        return {
            **self.state,
            "nanny": True,
            "nanny_pid": self.nanny_pid,
            "kernel_pid": self.kernel_pid,
        }

    @property
    def exit_status(self) -> int | None:
        return self._exit_status

    # ---- links ----

    def _link(self) -> _Link:
        loop = asyncio.get_running_loop()
        if self._shut:
            raise KernelHubError(f"{self!r} is closed; rebuild it from describe() to use it again")
        with self._lock:
            for other in [lp for lp in self._links if lp.is_closed()]:
                self._links.pop(other).close()  # its loop is gone; nobody uses the sockets
            link = self._links.get(loop)
            if link is None:
                link = self._links[loop] = _Link(self, loop)
            return link

    async def _request(
        self, op: str, *, timeout: float | None = None, **args: Any
    ) -> dict[str, Any]:
        link = self._link()  # a closed manager says so first
        if self._nanny_gone:
            raise KernelHubError(f"the nanny at {self.where} has exited; its kernel is gone")
        return await link.request(op, timeout or self.request_timeout, **args)

    def handle_event(self, kind: str | None, content: Mapping[str, Any]) -> None:
        """Update the shared state from an event (called on any link's loop)."""
        pid = content.get("kernel_pid")
        if kind == "kernel_died":
            if pid is None or self.kernel_pid is None or pid == self.kernel_pid:
                self._mark_dead(content.get("exit_status"))
        elif kind == "kernel_restarted":
            self._mark_alive(pid)
        elif kind == "nanny_exiting":
            self._nanny_gone = True
            self._mark_dead(content.get("exit_status", self._exit_status))
        elif kind == "nanny_welcome":
            if content.get("nanny_pid") is not None:
                self.nanny_pid = content["nanny_pid"]
            if content.get("alive"):
                if pid != self.kernel_pid:
                    self._mark_alive(pid)
            elif pid is None or self.kernel_pid is None or pid == self.kernel_pid:
                self._mark_dead(content.get("exit_status"))

    def _ended(self) -> bool:
        """Return whether the kernel is known dead and there is nothing left to ask.

        That is after this manager's cleanup, or once the nanny said it is exiting.
        """
        return self._dead and (self._shut or self._nanny_gone)

    def _mark_dead(self, exit_status: int | None) -> None:
        self._dead = True
        self._exit_status = exit_status

    def _mark_alive(self, kernel_pid: int | None) -> None:
        self.kernel_pid = kernel_pid
        self._dead = False
        self._exit_status = None

    # ---- KernelManager ----

    async def is_alive(self) -> bool:
        """Ask the nanny whether the kernel runs.

        :raises KernelHubError: when the nanny does not answer (it, or its tunnel, is gone).
        """
        if self._ended():
            return False
        try:
            reply = await self._request("is_alive")
        except KernelHubError:
            if self._ended():
                return False  # cleaned up (by the hub's watcher, say) while we asked
            raise
        if reply.get("alive"):
            if reply.get("kernel_pid") != self.kernel_pid:
                self._mark_alive(reply.get("kernel_pid"))
            return True
        self._mark_dead(reply.get("exit_status"))
        return False

    async def wait(self) -> int | None:
        """Wait for the kernel's end, woken by the nanny's ``kernel_died`` event.

        PUB/SUB drops what is published before a subscription is live, so the
        link subscribes and the nanny answers every new subscription with a
        ``nanny_welcome`` that carries the kernel's state at that moment (the
        ``is_alive`` answer); every later event follows it on the same socket.
        No polling, and no death can slip between the check and the wait.

        If the event socket loses its connection (or cannot make one) and the
        nanny then does not answer ``ping``, the nanny is taken for gone and
        the kernel for ended: ``wait()`` returns the exit status known so far
        (usually ``None``) instead of hanging.
        """
        link = self._link()
        link.subscribe()
        while not self._dead:
            if link.disconnected:
                await self._check_nanny(link)
            else:
                await link.next_event()
        return self._exit_status

    async def _check_nanny(self, link: _Link) -> None:
        """After the event socket lost its connection: is the nanny still there?

        A nanny that does not answer ``ping`` within ``request_timeout`` is taken
        for gone, and its kernel with it (ipykernel exits when its parent does):
        the kernel counts as ended with an unknown exit status.
        """
        link.disconnected = False
        try:
            await link.request("ping", self.request_timeout)
        except KernelHubError as exc:
            log.warning("%r: the nanny is gone (%s); taking its kernel for ended", self, exc)
            self._mark_dead(self._exit_status)

    async def signal(self, signum: int) -> None:
        """Send *signum* to the kernel's process group (no error if the kernel is gone)."""
        await self._request("signal", signum=int(signum))

    async def interrupt(self) -> None:
        """SIGINT the kernel's process group, through the nanny."""
        await self._request("interrupt")

    async def kill(self) -> None:
        """SIGKILL the kernel's process group; return once the nanny has reaped it.

        Killing a kernel that ended and was cleaned up is not an error.
        """
        if self._ended():
            return
        try:
            reply = await self._request("kill", timeout=max(self.request_timeout, 15.0))
        except KernelHubError:
            if self._ended():
                return  # cleaned up while we asked: the kernel is gone all the same
            raise
        self._mark_dead(reply.get("exit_status"))

    async def restart(self) -> int:
        """Kill the kernel if alive and start it again with the same ports and key.

        The nanny does not publish ``kernel_died`` for the old kernel, so
        ``wait()`` keeps waiting, now for the new one.

        :returns: the new kernel's pid.
        """
        reply = await self._request("restart", timeout=max(self.request_timeout, 30.0))
        self._mark_alive(reply.get("kernel_pid"))
        return int(reply["kernel_pid"])

    async def ping(self) -> dict[str, Any]:
        """Return the nanny's ``ping`` reply (``nanny_pid``, ``bad_signatures``)."""
        reply = await self._request("ping")
        self.nanny_pid = reply.get("nanny_pid", self.nanny_pid)
        return reply

    async def own_file(self, path: str) -> None:
        """Have the nanny remove *path* (a file of ours holding the key) when it exits.

        For a file written next to a nanny on its machine, such as
        ``kernel-hub launch --nanny``'s connection file: however the nanny ends
        (shutdown, a signal, its lease), the file goes with it.

        :raises KernelHubError: when the nanny refuses (an older one does not know the op).
        """
        await self._request("own_file", path=os.path.abspath(path))  # noqa: ASYNC240 - getcwd only

    async def cpu_seconds(self) -> float | None:
        """CPU seconds of the kernel's process group, measured by the nanny on its machine.

        ``None`` when the nanny cannot tell, does not answer, or predates the ``cpu`` op.
        """
        if self._ended():
            return None
        try:
            reply = await self._request("cpu", timeout=5.0)
        except KernelHubError:
            return None
        value = reply.get("cpu_seconds") if reply.get("status") == "ok" else None
        return float(value) if isinstance(value, (int, float)) else None

    async def last_output(self, lines: int = 20) -> str:
        """Return the last *lines* of the kernel's own stdout/stderr, from the nanny."""
        try:
            reply = await self._request("log_tail", lines=lines, timeout=5.0)
        except KernelHubError:
            return ""
        return str(reply.get("text", ""))

    async def cleanup(self) -> None:
        """Tell the nanny to ``shutdown`` (kill the kernel if alive, remove its files, exit).

        Then close this manager's sockets. Idempotent; a nanny that does not
        answer any more is logged, not an error.
        """
        if self._shut:
            return
        try:
            if not self._nanny_gone:  # shut down by another manager of the same kernel
                await self._request("shutdown", timeout=min(self.request_timeout, 5.0))
        except KernelHubError as exc:
            if self._nanny_gone:
                # It said it is exiting while we asked: another manager of the same kernel
                # (the launcher's, say) shut it down first. That is what we asked for.
                log.debug("%r: the nanny exited before it answered shutdown", self)
            else:
                log.warning(
                    "%r: shutdown got no answer (%s); the nanny may be gone already", self, exc
                )
        if not self._dead:
            self._mark_dead(self._exit_status)
        self.close()

    def close(self) -> None:
        """Close this manager's sockets, leaving the nanny and its kernel running.

        Sockets of other, still running loops are closed on their own threads.
        """
        self._shut = True
        self.drops.flush()
        with self._lock:
            links, self._links = list(self._links.items()), {}
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, link in links:
            if loop is current or loop.is_closed() or not loop.is_running():
                link.close()
            else:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(link.close)
