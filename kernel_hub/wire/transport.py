"""The transport seam: ZeroMQ sockets driven straight from the event loop.

A transport has three methods — ``open(on_message)``, ``send(channel, frames)``
and ``close()`` — so tests can swap in the scripted fake from
:mod:`kernel_hub.testing`. The ZeroMQ transport registers each socket's file
descriptor with the running loop and drains every ready message in one
callback: no task, future or thread per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import zmq

from .connection import channel_url
from .context import hub_context
from .curve import secure_client
from .droplog import DropLog

__all__ = ["OnMessage", "Transport", "ZMQTransport"]

#: Called with ``(channel, frames)`` for every message received.
OnMessage = Callable[[str, list[bytes]], None]


class Transport(Protocol):
    """What :class:`AsyncKernelClient` needs from the wire."""

    def open(self, on_message: OnMessage) -> None:
        """Connect the channels; call *on_message* from the running loop for each message."""

    def send(self, channel: str, frames: list[bytes]) -> None:
        """Queue *frames* on *channel* (``shell``, ``control``, ``stdin``) without blocking."""

    def close(self) -> None:
        """Disconnect; no more *on_message* calls follow."""


_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
#: Messages read from one socket before the loop may serve others.
_DRAIN_BATCH = 64

#: Messages the IOPub socket may hold for a consumer that is behind (ZeroMQ's default
#: is 1,000). Past it the kernel's PUB socket drops output. ZeroMQ's own I/O thread
#: reads into this queue while the loop is busy (a hook writing into a full pipe),
#: so a consumer that falls behind for a while loses nothing; the bound keeps a
#: kernel that floods a consumer that never catches up from taking all memory.
IOPUB_HWM = 100_000

log = logging.getLogger("kernel_hub.transport")

#: Socket type per channel: a kernel's four, and a nanny's two (docs/nanny-protocol.md).
_SOCKET_TYPES = {
    "shell": zmq.DEALER,
    "control": zmq.DEALER,
    "stdin": zmq.DEALER,
    "iopub": zmq.SUB,
    "nanny_control": zmq.DEALER,
    "nanny_events": zmq.SUB,
}


class ZMQTransport:
    """The real transport: DEALER sockets for shell/control/stdin, SUB for IOPub.

    Also the nanny link's (``nanny_control``: DEALER, ``nanny_events``: SUB), so
    every ZeroMQ socket of kernel_hub is read by the one edge-triggered drain below.
    When the connection info has ``curve_publickey``, every socket is a CurveZMQ
    client of it (:func:`.curve.secure_client`).

    :param connection_info: the kernel's connection info.
    :param identity: the ZeroMQ routing id of shell and stdin (the kernel sends
        ``input_request`` to the frontend whose shell identity matches); empty for
        none, so that the peer's ROUTER assigns a new one on every (re)connection.
    :param context: a ZeroMQ context; defaults to kernel_hub's (:func:`.context.hub_context`).
    :param iopub_hwm: how many IOPub messages may wait to be read (see :data:`IOPUB_HWM`).

    A message callback that raises is logged (rate-limited, see
    :class:`~kernel_hub.wire.droplog.DropLog`) and the drain goes on with the next
    message: no message, however formed, can stop a channel.
    :attr:`callback_errors` counts them.
    """

    def __init__(
        self,
        connection_info: Mapping[str, Any],
        *,
        identity: bytes,
        context: zmq.Context[Any] | None = None,
        channels: tuple[str, ...] = ("shell", "control", "stdin", "iopub"),
        iopub_hwm: int = IOPUB_HWM,
    ) -> None:
        self._info = connection_info
        self._identity = identity
        self._context = context
        self._channels = channels
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._fds: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_message: OnMessage | None = None
        self._iopub_hwm = iopub_hwm
        self._errors = DropLog(
            log, f"ZMQTransport {connection_info.get('ip')}:{connection_info.get('shell_port')}"
        )

    @property
    def callback_errors(self) -> int:
        """How many messages the callback raised on (they were dropped; the drain went on)."""
        return sum(self._errors.counts.values())

    def __repr__(self) -> str:
        state = "OPEN" if self._sockets else "CLOSED"
        return f"<ZMQTransport {self._info.get('ip')}:{self._info.get('shell_port')} [{state}]>"

    def open(self, on_message: OnMessage) -> None:
        loop = asyncio.get_running_loop()
        ctx = self._context or hub_context()
        self._loop = loop
        self._on_message = on_message
        for name in self._channels:
            sock = ctx.socket(_SOCKET_TYPES[name])
            sock.linger = 0
            if _SOCKET_TYPES[name] == zmq.SUB:
                if name == "iopub":
                    sock.rcvhwm = self._iopub_hwm
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            elif self._identity:  # empty: let the peer's ROUTER pick one per connection
                sock.setsockopt(zmq.IDENTITY, self._identity)
            secure_client(sock, self._info)  # a Curve kernel's (and its nanny's) public key
            sock.connect(channel_url(self._info, name))
            self._sockets[name] = sock
            fd: int = sock.getsockopt(zmq.FD)
            loop.add_reader(fd, self._drain, name, sock)
            self._fds[name] = fd
            # The ZeroMQ fd is edge-triggered: drain once now in case it already fired.
            loop.call_soon(self._drain, name, sock)

    def _drain(self, name: str, sock: zmq.Socket[bytes]) -> None:
        # Frames with copy=False and .more: recv_multipart and get(RCVMORE) convert
        # through Python enums on every part (measured 6.8 -> 4.8 µs a 7-frame message).
        # After each message, ZMQ_EVENTS says whether another one is queued: cheaper
        # than the zmq.Again a final recv would raise (1.5 vs 3.3 µs), and the check
        # libzmq documents for its edge-triggered fd.
        if self._sockets.get(name) is not sock:
            return  # a drain scheduled before the socket was released or closed
        recv = sock.recv
        get: Callable[[int], int] = sock.get  # type: ignore[assignment]  # EVENTS is an int
        for _ in range(_DRAIN_BATCH):
            on_message = self._on_message  # None once closed, also by a callback
            if on_message is None or sock.closed:
                return
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            frames = [frame.bytes]
            while frame.more:
                frame = recv(_NOBLOCK, copy=False)
                frames.append(frame.bytes)
            try:
                on_message(name, frames)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the channel
                # The fd is edge-triggered: leaving here without draining would never wake again.
                what = f"dropped {name} messages (the message callback raised)"
                self._errors.count(what, f"{type(exc).__name__}: {exc}")
            if sock.closed or not get(_EVENTS) & _POLLIN:
                return
        # A busy socket yields to the others on the loop (one flooding kernel must not
        # starve the rest); the fd is edge-triggered, so continue by scheduling, not waiting.
        if self._loop is not None:
            self._loop.call_soon(self._drain, name, sock)

    def send(self, channel: str, frames: list[bytes]) -> None:
        sock = self._sockets.get(channel)
        if sock is None:
            raise RuntimeError(f"channel {channel!r} is not open on {self!r}")
        # send() per frame with int flags: send_multipart type-checks every frame and
        # combines its flags through enums.
        send = sock.send
        for frame in frames[:-1]:
            send(frame, _SNDMORE_NOBLOCK)
        send(frames[-1], _NOBLOCK)
        # Sending processes ZeroMQ's pending commands, which can take the fd's edge for a
        # message that arrived meanwhile: if one is queued, drain it on the next turn.
        if self._loop is not None and sock.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
            self._loop.call_soon(self._drain, channel, sock)

    def narrow_subscription(self, topic: bytes) -> None:
        """Receive only IOPub messages whose topic starts with *topic* (instead of all).

        The new subscription is added before the catch-all one is dropped, so no
        message of that topic can fall in between. ZeroMQ filters at the publisher,
        so the other messages no longer cross the wire to this socket at all.
        """
        sock = self._sockets.get("iopub")
        if sock is None:
            raise RuntimeError(f"no IOPub channel open on {self!r}")
        sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.setsockopt(zmq.UNSUBSCRIBE, b"")

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the transport was opened on (``None`` before :meth:`open`)."""
        return self._loop

    def socket(self, channel: str) -> zmq.Socket[bytes] | None:
        """Return the open socket of *channel* (still read by this transport), or ``None``."""
        return self._sockets.get(channel)

    def close(self) -> None:
        self._on_message = None
        self._errors.flush()
        loop = self._loop
        for fd in self._fds.values():
            if loop is not None and not loop.is_closed():
                loop.remove_reader(fd)
        self._fds.clear()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
