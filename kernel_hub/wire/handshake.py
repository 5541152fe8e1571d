"""ZeroMQ handshakes seen from a socket's monitor: is a starting kernel refusing CurveZMQ?

A kernel given CurveZMQ keys that it ignores (its type declares
``supported_encryption`` wrongly) listens unencrypted and never answers a Curve
client: its start would wait the whole ``ready_timeout``. :func:`refuses_curve`
tells it apart from a kernel that is merely not listening yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zmq

__all__ = ["REFUSALS_BEFORE_PROBE", "refuses_curve"]

#: Failed CurveZMQ handshakes with a starting kernel before it is asked whether it speaks plain.
REFUSALS_BEFORE_PROBE = 3


class _Handshakes:
    """The outcome of each ZeroMQ handshake of a socket (``EVENT_HANDSHAKE_*``), from its monitor.

    The monitor is attached when this is made: make it before the socket connects
    to see every handshake. :meth:`close` detaches it.
    """

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        import zmq

        mask = (
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
        self._sock = sock
        self._monitor = sock.get_monitor_socket(mask)
        self._outcomes: asyncio.Queue[int] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._fd = int(self._monitor.getsockopt(zmq.FD))
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:  # the FD is edge-triggered: read all that is there
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while int(self._monitor.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            self._outcomes.put_nowait(int(event["event"]))

    async def next(self) -> int:
        """Wait for the next handshake's outcome: a ``zmq.EVENT_HANDSHAKE_*``."""
        self._readable()
        return await self._outcomes.get()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        with contextlib.suppress(Exception):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)


async def _speaks_plain(url: str, timeout: float) -> bool:
    """Return whether a plain (NULL mechanism) ZeroMQ handshake with *url* succeeds.

    Nothing is sent but ZeroMQ's greeting: no message, no key.
    """
    import zmq

    from .context import hub_context

    sock = hub_context().socket(zmq.DEALER)
    sock.linger = 0
    handshakes = _Handshakes(sock)
    try:
        sock.connect(url)
        async with asyncio.timeout(timeout):
            return await handshakes.next() == zmq.EVENT_HANDSHAKE_SUCCEEDED
    except TimeoutError:
        return False
    finally:
        handshakes.close()
        sock.close(linger=0)


async def refuses_curve(sock: zmq.Socket[Any], url: str, *, probe_timeout: float = 2.0) -> bool:
    """Watch a CurveZMQ client socket connecting to a starting kernel at *url*.

    Returns ``False`` at its first successful handshake (the kernel speaks
    CurveZMQ), ``True`` when its handshakes keep failing while a plain one with
    *url* succeeds: the kernel does not speak CurveZMQ although it was given keys
    (its type declares ``supported_encryption`` wrongly, e.g. an ipykernel older
    than 7.4). A failure alone proves nothing: Docker's proxy, for one, accepts
    and drops connections until the kernel listens. Cancel it to stop watching.

    A failure that ZeroMQ calls a protocol error (a mechanism mismatch) is
    checked at once, since libzmq does not connect again after one; others, at
    every :data:`REFUSALS_BEFORE_PROBE`-th.
    """
    import zmq

    failures = 0
    handshakes = _Handshakes(sock)
    try:
        while (outcome := await handshakes.next()) != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            failures += 1
            due = outcome == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            if (due or failures % REFUSALS_BEFORE_PROBE == 0) and await _speaks_plain(
                url, probe_timeout
            ):
                return True
        return False
    finally:
        handshakes.close()
