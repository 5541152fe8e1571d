"""One execute request's bookkeeping: its output queue, its reply and its idle status.

Reading a socket must never wait for an output hook. The client's drain hands
each IOPub message of an execution to :meth:`Execution.got_output`, which only
queues it; the hook runs from the loop in slices of a few milliseconds, so the
drain gets its turn between slices and keeps the kernel's IOPub queue short (a
kernel drops output once that queue is full, its final idle status included).

The execution is done once its reply and its idle status have been read and
every queued message has gone through the hook. Output can still be lost (the
backlog is bounded; a message can be dropped before it reaches this process),
so after the reply the idle status is awaited only while output keeps coming:
once nothing of this execution has arrived for ``idle_grace`` seconds, the
execution ends without it and the gap is counted and logged.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..contract.errors import KernelHubError
from ..wire.session import Message

__all__ = [
    "IDLE_GRACE",
    "OUTPUT_BACKLOG",
    "Execution",
    "Handler",
    "OnGap",
    "OutputHook",
    "StdinHook",
    "expire",
]

log = logging.getLogger("kernel_hub.client")

#: Called with each IOPub message of one execution.
OutputHook = Callable[[Message], Any]
#: Called with ``(prompt, password)`` on ``input_request``; returns the reply or an awaitable.
StdinHook = Callable[[str, bool], "str | Awaitable[str]"]
#: A per-channel handler, called with every message received on that channel.
Handler = Callable[[Message], Any]
#: Called with ``(kind, detail, n)`` for each gap: output dropped, idle status never seen.
OnGap = Callable[[str, str, int], None]

#: Seconds without any message of an execution, after its reply, before it ends without idle.
IDLE_GRACE = 10.0
#: Output messages that may wait for a slow hook, per execution, before new ones are dropped.
OUTPUT_BACKLOG = 50_000
#: Longest stretch the hook runs before the loop (and so the drain) gets a turn.
_SLICE = 0.005

LOST_OUTPUT = "dropped output messages (an output hook fell behind)"
NO_IDLE = "executions ended without their idle status (output may be missing)"


def expire(fut: asyncio.Future[Message], what: str, timeout: float) -> None:
    """Fail *fut* with :class:`TimeoutError` (a timer callback of a request)."""
    if not fut.done():
        fut.set_exception(TimeoutError(f"no {what} from the kernel within {timeout} s"))


class Execution:
    """Bookkeeping of one ``execute_request``; :attr:`done` resolves to its reply.

    :param loop: the client's loop.
    :param output_hook: gets each IOPub message of the execution except status.
    :param stdin_hook: answers its ``input_request`` messages.
    :param idle_grace: see :data:`IDLE_GRACE`.
    :param backlog: see :data:`OUTPUT_BACKLOG`.
    :param on_gap: told about dropped output and a missing idle status.
    """

    __slots__ = (
        "_last_read",
        "_loop",
        "_on_gap",
        "_queue",
        "_scheduled",
        "_timer",
        "backlog",
        "done",
        "idle",
        "idle_grace",
        "lost",
        "output_hook",
        "reply",
        "stdin_hook",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        output_hook: OutputHook | None,
        stdin_hook: StdinHook | None,
        *,
        idle_grace: float = IDLE_GRACE,
        backlog: int = OUTPUT_BACKLOG,
        on_gap: OnGap | None = None,
    ) -> None:
        self._loop = loop
        self.done: asyncio.Future[Message] = loop.create_future()
        self.reply: Message | None = None
        self.idle = False
        self.output_hook = output_hook
        self.stdin_hook = stdin_hook
        self.idle_grace = idle_grace
        self.backlog = backlog
        #: Output messages of this execution dropped because the hook fell behind.
        self.lost = 0
        self._on_gap = on_gap
        self._queue: collections.deque[Message] = collections.deque()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = loop.time()

    def __repr__(self) -> str:
        state = "DONE" if self.done.done() else "REPLIED" if self.reply is not None else "RUNNING"
        return f"<Execution [{state} idle={self.idle} queued={len(self._queue)} lost={self.lost}]>"

    # ---- fed by the client's drain ----

    def got_output(self, msg: Message) -> None:
        """Queue one IOPub message (not a status) for the hook; never calls the hook itself."""
        self._last_read = self._loop.time()
        if self.output_hook is None or self.done.done():
            return
        if len(self._queue) >= self.backlog:
            self.lost += 1  # reported once, by close()
            return
        self._queue.append(msg)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)

    def got_reply(self, reply: Message) -> None:
        """Take the ``execute_reply``; the idle status is awaited from now on with a grace."""
        self._last_read = self._loop.time()
        self.reply = reply
        if self.idle:
            self._cancel_timer()  # the reply came after all
        elif self._timer is None:
            self._timer = self._loop.call_later(self.idle_grace, self._grace_over)
        self._check()

    def got_idle(self) -> None:
        """Take the ``idle`` status of this execution; without a reply, await it with a grace.

        The kernel has finished with the request: a reply that has not come within
        the grace will not come (ipykernel drops it when an interrupt lands after its
        ``execute_input`` and before the code runs).
        """
        self.idle = True
        self._cancel_timer()
        if self.reply is None and not self.done.done():
            self._timer = self._loop.call_later(self.idle_grace, self._no_reply)
        self._check()

    def close(self) -> None:
        """Report dropped output (one line per execution), stop the timer, forget the queue.

        Called once the caller stopped waiting, whether the execution is done or not.
        """
        self._cancel_timer()
        self._queue.clear()
        if self.lost:
            more = f"{self.backlog} messages were waiting for the hook"
            self._gap(LOST_OUTPUT, f"{self.lost} of one execution ({more})", self.lost)

    # ---- internals ----

    def _dispatch(self) -> None:
        self._scheduled = False
        hook = self.output_hook
        queue = self._queue
        if hook is None:
            return
        loop = self._loop
        end = loop.time() + _SLICE
        while queue:
            msg = queue.popleft()
            try:
                result = hook(msg)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("output_hook %r failed", hook)
            if queue and loop.time() >= end:
                self._scheduled = True
                loop.call_soon(self._dispatch)
                return
        self._check()

    def _check(self) -> None:
        if self.reply is not None and self.idle and not self._queue and not self.done.done():
            self.done.set_result(self.reply)

    def _grace_over(self) -> None:
        self._timer = None
        if self.idle or self.done.done():
            return
        quiet_since = self._last_read
        if self._loop.time() - quiet_since < self.idle_grace:  # output still came: wait on
            self._timer = self._loop.call_at(quiet_since + self.idle_grace, self._grace_over)
            return
        self._gap(
            NO_IDLE,
            f"nothing of the execution arrived for {self.idle_grace:g} s after its reply",
            1,
        )
        self.idle = True
        self._check()

    def _no_reply(self) -> None:
        self._timer = None
        if self.reply is None and not self.done.done():
            self.done.set_exception(
                KernelHubError(
                    "the kernel finished the execute_request without an execute_reply "
                    f"({self.idle_grace:g} s after its idle status; an interrupt that "
                    "reached it just before the code ran?)"
                )
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _gap(self, kind: str, detail: str, n: int) -> None:
        if self._on_gap is not None:
            self._on_gap(kind, detail, n)
