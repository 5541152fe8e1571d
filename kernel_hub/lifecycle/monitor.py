"""ActivityMonitor: a kernel's execution state and last activity, from its IOPub channel.

The hub holds one per running kernel so that hosts can show ``busy``/``idle``
and cull kernels idle for too long. It is one SUB socket on the kernel's
IOPub, drained by the transport's single loop callback: no task, future or
thread per message. Only ``status`` messages are verified and parsed.

Once the kernel's first (signed) status message shows the topic it publishes
status on (ipykernel: ``kernel.<ident>.status``), the socket subscribes to that
topic only, so a busy kernel's output stream is not received twice by the host
(once by the clients, once by the monitor): the publisher filters it out.

It reads its own socket whatever clients the kernel has: no client feeds it
and none hands it a socket, so a client that closes, or never connects,
changes nothing for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Literal

from ..wire.session import DELIM, Session
from ..wire.transport import ZMQTransport

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["ActivityMonitor", "ExecutionState"]

ExecutionState = Literal["starting", "idle", "busy", "dead"]

_KERNEL_STATES = frozenset({"starting", "idle", "busy"})


class ActivityMonitor:
    """Follow one kernel's IOPub ``status`` messages.

    Owned by a :class:`~kernel_hub.RunningKernel`, which opens it on each
    (re)launched kernel's connection info and closes it when the kernel ends.
    """

    def __init__(self) -> None:
        #: ``starting``, ``idle``, ``busy`` (from the kernel) or ``dead`` (set by the hub).
        self.execution_state: ExecutionState = "starting"
        #: ``time.time()`` of the last IOPub status message (or of the launch).
        self.last_activity = time.time()
        #: IOPub messages seen, over all launches of the kernel (status only once narrowed).
        self.messages = 0
        #: The status topic this monitor narrowed its subscription to, if any.
        self.topic: bytes | None = None
        self._transport: ZMQTransport | None = None
        self._session: Session | None = None
        self._info: Mapping[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[frozenset[str], asyncio.Future[str]]] = []

    def __repr__(self) -> str:
        where = "OPEN" if self._transport is not None else "CLOSED"
        return f"<ActivityMonitor [{where} {self.execution_state} messages={self.messages}]>"

    def open(self, connection_info: Mapping[str, Any]) -> None:
        """Subscribe to the IOPub of the kernel at *connection_info*; call on the hub's loop.

        A previous subscription (of the kernel before a restart) is closed first.
        """
        self.close()
        self.set_state("starting")
        self._info = connection_info
        self._loop = asyncio.get_running_loop()
        self._session = Session(
            connection_info.get("key", ""), connection_info.get("signature_scheme", "hmac-sha256")
        )
        self.topic = None
        self._listen()

    def _listen(self) -> None:
        # SUB sockets have no routing id; the identity is unused.
        self._transport = ZMQTransport(self._info, identity=b"", channels=("iopub",))
        self._transport.open(self._on_message)

    def close(self) -> None:
        """Drop the subscription (idempotent); the last known state stays readable."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._loop = None

    def _on_message(self, channel: str, frames: list[bytes]) -> None:
        self.last_activity = time.time()
        self.messages += 1
        if self._session is None:
            return
        try:
            if self.topic is None:  # still subscribed to everything: skip non-status cheaply
                idx = frames.index(DELIM)
                if json.loads(frames[idx + 2]).get("msg_type") != "status":
                    return
            # Only the kernel's own (signed) status may change the state; of a status
            # message nothing but its content is needed.
            idx = self._session.verify(frames)
            content = json.loads(frames[idx + 5])
        except (ValueError, IndexError, AttributeError):
            return
        state = content.get("execution_state") if type(content) is dict else None
        if type(state) is str and state in _KERNEL_STATES:  # a list would not even hash
            self.set_state(state)  # type: ignore[arg-type]  # checked just above
        if self.topic is None and self._transport is not None:
            topic = frames[0] if idx == 1 else b""
            if topic.endswith(b".status"):  # a kernel that names its status topic
                self.topic = topic
                self._transport.narrow_subscription(topic)

    def set_state(self, state: ExecutionState) -> None:
        """Set the execution state and wake those waiting for it (the hub sets ``dead``)."""
        self.execution_state = state
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
        if self.execution_state in states:
            return self.execution_state
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
