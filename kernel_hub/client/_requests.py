"""The Jupyter requests of a client that are one message and its reply.

:class:`KernelRequests` is mixed into :class:`~kernel_hub.AsyncKernelClient`,
which provides :meth:`~KernelRequests.request`; the blocking client wraps each
method one-to-one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..wire.session import Message

__all__ = ["KernelRequests"]


class KernelRequests:
    """``kernel_info``, ``complete``, ``inspect``, ``history``, ``is_complete``, ``comm_info``.

    Also ``async with client:``, in terms of the client's own :meth:`connect`,
    :meth:`wait_for_ready` and :meth:`close`: both clients (the wire client and
    :class:`~kernel_hub.KernelClient`) mix it in.
    """

    #: How long ``async with client:`` waits in :meth:`wait_for_ready`.
    ready_timeout: float | None = 60.0

    async def connect(self) -> Any:
        """Open the channels (implemented by the client)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the channels (implemented by the client)."""
        raise NotImplementedError

    async def wait_for_ready(self, timeout: float | None = 60.0) -> Message:
        """Wait until the kernel answers (implemented by the client)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """Connect and wait until the kernel answers and IOPub delivers (so no output is lost)."""
        await self.connect()
        try:
            await self.wait_for_ready(self.ready_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        channel: str = "shell",
        timeout: float | None = None,
    ) -> Message:
        """Send one request and return its reply (implemented by the client)."""
        raise NotImplementedError

    async def kernel_info(self, *, timeout: float | None = None) -> Message:
        """Return the ``kernel_info_reply``."""
        return await self.request("kernel_info_request", timeout=timeout)

    async def complete(
        self, code: str, cursor_pos: int | None = None, *, timeout: float | None = None
    ) -> Message:
        """Return completions at *cursor_pos* (default: end of *code*)."""
        pos = len(code) if cursor_pos is None else cursor_pos
        return await self.request(
            "complete_request", {"code": code, "cursor_pos": pos}, timeout=timeout
        )

    async def inspect(
        self,
        code: str,
        cursor_pos: int | None = None,
        detail_level: int = 0,
        *,
        timeout: float | None = None,
    ) -> Message:
        """Return introspection of the object at *cursor_pos* (default: end of *code*)."""
        pos = len(code) if cursor_pos is None else cursor_pos
        content = {"code": code, "cursor_pos": pos, "detail_level": detail_level}
        return await self.request("inspect_request", content, timeout=timeout)

    async def history(
        self,
        *,
        raw: bool = True,
        output: bool = False,
        hist_access_type: str = "tail",
        n: int = 10,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Message:
        """Return the kernel's history (``tail`` of *n* entries by default)."""
        content = {
            "raw": raw,
            "output": output,
            "hist_access_type": hist_access_type,
            "n": n,
            **kwargs,
        }
        return await self.request("history_request", content, timeout=timeout)

    async def is_complete(self, code: str, *, timeout: float | None = None) -> Message:
        """Return whether *code* is a complete statement (``is_complete_reply``)."""
        return await self.request("is_complete_request", {"code": code}, timeout=timeout)

    async def comm_info(
        self, target_name: str | None = None, *, timeout: float | None = None
    ) -> Message:
        """Return the kernel's open comms (of *target_name* only, if given)."""
        content = {} if target_name is None else {"target_name": target_name}
        return await self.request("comm_info_request", content, timeout=timeout)
