"""The bookkeeping of one ``execute`` request, and the hook types clients accept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..session import Message

if TYPE_CHECKING:
    import asyncio

__all__ = ["Execution", "Handler", "OutputHook", "StdinHook", "expire"]

#: Called with each IOPub message of one execution.
OutputHook = Callable[[Message], Any]
#: Called with ``(prompt, password)`` on ``input_request``; returns the reply or an awaitable.
StdinHook = Callable[[str, bool], "str | Awaitable[str]"]
#: A per-channel handler, called with every message received on that channel.
Handler = Callable[[Message], Any]


def expire(fut: asyncio.Future[Message], what: str, timeout: float) -> None:
    """Fail *fut* with :class:`TimeoutError` (a timer callback of a request)."""
    if not fut.done():
        fut.set_exception(TimeoutError(f"no {what} from the kernel within {timeout} s"))


class Execution:
    """Bookkeeping of one execute request: done once its reply and its idle status arrived.

    One future for both, so the waiting task wakes once per execution, not twice.
    """

    __slots__ = ("done", "idle", "output_hook", "reply", "stdin_hook")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        output_hook: OutputHook | None,
        stdin_hook: StdinHook | None,
    ) -> None:
        self.done: asyncio.Future[Message] = loop.create_future()
        self.reply: Message | None = None
        self.idle = False
        self.output_hook = output_hook
        self.stdin_hook = stdin_hook

    def got_reply(self, reply: Message) -> None:
        self.reply = reply
        if self.idle and not self.done.done():
            self.done.set_result(reply)

    def got_idle(self) -> None:
        self.idle = True
        if self.reply is not None and not self.done.done():
            self.done.set_result(self.reply)
