"""ActivityMonitor: a kernel's execution state and last activity, from its IOPub channel.

The hub holds one per running kernel so that hosts can show ``busy``/``idle``
and cull kernels idle for too long. It is one SUB socket on the kernel's
IOPub, read from the loop: no task, future or thread per message. Only
``status`` messages are verified and parsed.

Once the kernel's first (signed) status message shows the topic it publishes
status on (ipykernel: ``kernel.<ident>.status``), the socket subscribes to that
topic only, so a busy kernel's output stream is not received twice by the host
(once by the clients, once by the monitor): the publisher filters it out.

From then on it reads lazily: messages wait in the socket's queue (ZeroMQ's I/O
thread puts them there) and are read in one batch at most :data:`LAZY` seconds
after the first of them arrives, of which only the last valid status is parsed;
reading :attr:`ActivityMonitor.execution_state` reads what is queued first, and
while someone waits for a state (:meth:`ActivityMonitor.wait_for`) every status
is read at once. A status then costs the host a few microseconds instead of a
loop wake-up, a verification and a parse each: the price of two of them per
request, paid by every client's round trip, was 13 % of its CPU (issue 21).

It reads its own socket whatever clients the kernel has: no client feeds it
and none hands it a socket, so a client that closes, or never connects,
changes nothing for it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import zmq

from ..wire.connection import channel_url
from ..wire.context import hub_context
from ..wire.curve import secure_client
from ..wire.session import DELIM, Session

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["LAZY", "ActivityMonitor", "ExecutionState"]

ExecutionState = Literal["starting", "idle", "busy", "dead"]

_KERNEL_STATES = frozenset({"starting", "idle", "busy"})
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)

#: Seconds a status message may wait in the queue when nobody waits for a state.
LAZY = 0.2


class ActivityMonitor:
    """Follow one kernel's IOPub ``status`` messages.

    Owned by a :class:`~kernel_hub.RunningKernel`, which opens it on each
    (re)launched kernel's connection info and closes it when the kernel ends.
    """

    def __init__(self) -> None:
        self._state: ExecutionState = "starting"
        self._activity = time.time()
        #: IOPub messages seen, over all launches of the kernel (status only once narrowed).
        self.messages = 0
        #: The status topic this monitor narrowed its subscription to, if any.
        self.topic: bytes | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._fd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._session: Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None  # the loop's thread: the only one that reads the socket
        self._waiters: list[tuple[frozenset[str], asyncio.Future[str]]] = []

    def __repr__(self) -> str:
        where = "OPEN" if self._sock is not None else "CLOSED"
        return f"<ActivityMonitor [{where} {self.execution_state} messages={self.messages}]>"

    @property
    def execution_state(self) -> ExecutionState:
        """``starting``, ``idle``, ``busy`` (from the kernel) or ``dead`` (set by the hub)."""
        self._catch_up()
        return self._state

    @property
    def last_activity(self) -> float:
        """``time.time()`` of the last IOPub status message read (or of the launch).

        A status read lazily counts from when it was read: at most :data:`LAZY` late.
        """
        self._catch_up()
        return self._activity

    def open(self, connection_info: Mapping[str, Any]) -> None:
        """Subscribe to the IOPub of the kernel at *connection_info*; call on the hub's loop.

        A previous subscription (of the kernel before a restart) is closed first.
        """
        self.close()
        self.set_state("starting")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread = threading.get_ident()
        self._session = Session(
            connection_info.get("key", ""), connection_info.get("signature_scheme", "hmac-sha256")
        )
        self.topic = None
        sock = hub_context().socket(zmq.SUB)
        sock.linger = 0
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(sock, connection_info)
        sock.connect(channel_url(connection_info, "iopub"))
        self._sock = sock
        self._fd = sock.getsockopt(zmq.FD)
        loop.add_reader(self._fd, self._wake)
        loop.call_soon(self._wake)  # the fd is edge-triggered: it may have fired already

    def close(self) -> None:
        """Drop the subscription (idempotent); the last known state stays readable."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._fd is not None and self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            sock.close(linger=0)
        self._fd = None
        self._loop = None

    def _wake(self) -> None:
        sock = self._sock
        # Reading ZMQ_EVENTS takes the fd's edge; what is queued waits for the read below.
        if sock is None or not sock.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
            return
        if self.topic is None or self._waiters:
            self._read()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(LAZY, self._read)

    def _catch_up(self) -> None:
        """Read what is queued, so that a reader of the state never sees an old one.

        Only on the loop's thread (a ZeroMQ socket is not thread-safe): a reader on
        another thread gets the state as of the last read, at most :data:`LAZY` old.
        """
        if self._timer is not None and threading.get_ident() == self._thread:
            self._read()

    def _read(self) -> None:
        """Read every queued message; act on each status when someone waits, else on the last."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = self._sock
        if sock is None:
            return
        recv = sock.recv
        get: Any = sock.get
        batch: list[list[bytes]] = []
        while get(_EVENTS) & _POLLIN:
            frames = [recv(_NOBLOCK)]
            while get(_RCVMORE):
                frames.append(recv(_NOBLOCK))
            self.messages += 1
            if self.topic is None or self._waiters:
                self._on_message(frames)  # may narrow the subscription; wakes waiters
            else:
                batch.append(frames)
        for frames in reversed(batch):  # the newest valid status is the state
            if self._on_message(frames):
                break

    def _on_message(self, frames: list[bytes]) -> bool:
        """Apply one message; return whether it was a valid status."""
        self._activity = time.time()
        if self._session is None:
            return False
        try:
            if self.topic is None:  # still subscribed to everything: skip non-status cheaply
                idx = frames.index(DELIM)
                if json.loads(frames[idx + 2]).get("msg_type") != "status":
                    return False
            # Only the kernel's own (signed) status may change the state; of a status
            # message nothing but its content is needed.
            idx = self._session.verify(frames)
            content = json.loads(frames[idx + 5])
        except (ValueError, IndexError, AttributeError):
            return False
        state = content.get("execution_state") if type(content) is dict else None
        if type(state) is not str or state not in _KERNEL_STATES:  # a list would not hash
            return False
        self.set_state(state)  # type: ignore[arg-type]  # checked just above
        if self.topic is None and self._sock is not None:
            topic = frames[0] if idx == 1 else b""
            if topic.endswith(b".status"):  # a kernel that names its status topic
                # The topic's subscription first, then the catch-all's removal: no status
                # can fall in between. ZeroMQ filters at the publisher from then on.
                self.topic = topic
                self._sock.setsockopt(zmq.SUBSCRIBE, topic)
                self._sock.setsockopt(zmq.UNSUBSCRIBE, b"")
        return True

    def set_state(self, state: ExecutionState) -> None:
        """Set the execution state and wake those waiting for it (the hub sets ``dead``)."""
        self._state = state
        if not self._waiters:
            return
        waiting = self._waiters
        self._waiters = []
        for states, fut in waiting:
            if fut.done():
                continue
            if state in states:
                fut.set_result(state)
            else:
                self._waiters.append((states, fut))

    async def wait_for(self, *states: ExecutionState, timeout: float | None = None) -> str:
        """Return once the execution state is one of *states* (at once if it already is).

        :raises TimeoutError: after *timeout* seconds.
        """
        state = self.execution_state
        if state in states:
            return state
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
