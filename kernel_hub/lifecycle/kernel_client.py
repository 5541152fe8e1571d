"""KernelClient: the client of one RunningKernel, which follows it across restarts.

The wire client (:class:`~kernel_hub.AsyncKernelClient`) is a plain connection
to one endpoint. A kernel's life is not its business: this class holds one, and
its :class:`~kernel_hub.RunningKernel` tells it of each turn of that life:

- :meth:`KernelClient.kernel_died`: the requests waiting for the dead process
  fail with :class:`~kernel_hub.KernelDied`; requests made from now on wait.
- :meth:`KernelClient.kernel_back`: the kernel runs again. On the same endpoint
  (a restart keeps ports and key) the wire client is kept: ZeroMQ has already
  reconnected its sockets. Only after ``connection_changed`` is a new wire
  client opened on the new endpoint, with this client's handlers.
- :meth:`KernelClient.kernel_ended`: waiting and later requests fail with the
  reason.

The first request after a restart waits until the new process's IOPub delivers
(as :meth:`~kernel_hub.AsyncKernelClient.wait_for_ready` does), so no output of
it is lost. The notices may come from any thread: a blocking client runs its
async client on a private loop, and they are handed to that loop in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from ..client import AsyncKernelClient
from ..client._requests import KernelRequests
from ..client.asynchronous import CHANNELS
from ..contract.errors import KernelDied, KernelHubError
from ..wire.connection import endpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from ..client._execution import Handler
    from ..contract.manager import KernelManager
    from ..wire.droplog import DropLog
    from ..wire.session import Message, Session

__all__ = ["FollowedKernel", "KernelClient"]


class FollowedKernel(Protocol):
    """What a :class:`KernelClient` reads of its kernel (a :class:`~kernel_hub.RunningKernel`)."""

    @property
    def connection_info(self) -> dict[str, Any]: ...

    @property
    def manager(self) -> KernelManager: ...

    @property
    def interrupt_mode(self) -> str: ...


P = ParamSpec("P")
R = TypeVar("R")


def _following(
    method: Callable[Concatenate[AsyncKernelClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[KernelClient, P], Coroutine[Any, Any, R]]:
    """Make a wire client's request method wait, first, for a kernel being restarted.

    The wrapper waits for the kernel's comeback within the call's ``timeout``
    (:meth:`KernelClient._ready`: ``TimeoutError`` naming the restart, or
    ``KernelDied`` when the kernel ended for good), then calls the method of the
    current wire client with what is left of it. A subshell does not outlive its
    process: after a restart, create it again.
    """
    name = method.__name__

    @functools.wraps(method)
    async def following(self: KernelClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        kwargs["timeout"] = await self._ready(cast("float | None", kwargs.get("timeout")))
        return cast("R", await getattr(self._wire, name)(*args, **kwargs))

    return following


class KernelClient(KernelRequests):
    """Talk to a :class:`~kernel_hub.RunningKernel`, whatever restarts it goes through.

    Returned by :meth:`RunningKernel.client`; the same API as
    :class:`~kernel_hub.AsyncKernelClient` (``async with``, :meth:`execute`,
    :meth:`on`, the one-message requests, :meth:`interrupt`, :meth:`shutdown`).
    Requests that were waiting when the kernel died fail with
    :class:`~kernel_hub.KernelDied`; requests made while it is being restarted
    wait for the new process within their own timeout, and fail with
    ``KernelDied`` if it ends for good instead.

    :param kernel: the kernel it follows.
    :param on_close: called with this client when it closes (the kernel forgets it).
    :param ready_timeout: how long ``async with client:`` waits in :meth:`wait_for_ready`.
    """

    def __init__(
        self,
        kernel: FollowedKernel,
        *,
        on_close: Callable[[KernelClient], None] | None = None,
        ready_timeout: float | None = 60.0,
    ) -> None:
        self._kernel = kernel
        self._on_close = on_close
        self.ready_timeout = ready_timeout
        self._handlers: dict[str, list[Handler]] = {c: [] for c in CHANNELS}
        self._settings: dict[str, Any] = {}
        self._wire = self._new_wire(kernel.connection_info)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set after a death: resolved when the kernel is back or has ended.
        self._comeback: asyncio.Future[None] | None = None
        self._gone: KernelDied | None = None
        # The first request after a restart waits for the new process's IOPub first.
        self._rejoin: asyncio.Task[Message] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return repr(self._wire).replace("AsyncKernelClient", "KernelClient", 1)

    def _new_wire(self, connection_info: Mapping[str, Any]) -> AsyncKernelClient:
        # No manager: the wire client is a plain connection; deaths come from the kernel.
        wire = AsyncKernelClient(connection_info, ready_timeout=self.ready_timeout)
        for name, value in self._settings.items():
            setattr(wire, name, value)
        for channel, handlers in self._handlers.items():
            for handler in handlers:
                wire.on(channel, handler)
        return wire

    # ---- what it shows: the current wire client's, the current process's ----

    @property
    def connection_info(self) -> dict[str, Any]:
        return self._wire.connection_info

    @property
    def manager(self) -> KernelManager:
        """The manager of the kernel's current process."""
        return self._kernel.manager

    @property
    def interrupt_mode(self) -> str:
        return self._kernel.interrupt_mode

    @property
    def session(self) -> Session:
        return self._wire.session

    @property
    def drops(self) -> DropLog:
        return self._wire.drops

    @property
    def bad_signatures(self) -> int:
        return self._wire.bad_signatures

    @property
    def malformed(self) -> int:
        return self._wire.malformed

    @property
    def stray_replies(self) -> int:
        return self._wire.stray_replies

    @property
    def execution_state(self) -> str:
        return self._wire.execution_state

    @property
    def welcomes(self) -> bool:
        """Whether the kernel greets IOPub subscriptions (``iopub_welcome``, protocol 5.5)."""
        return self._wire.welcomes

    @property
    def iopub_nudges(self) -> int:
        """``kernel_info_request`` nudges the current wire client sent for IOPub readiness."""
        return self._wire.iopub_nudges

    @property
    def idle_grace(self) -> float:
        return self._wire.idle_grace

    @idle_grace.setter
    def idle_grace(self, value: float) -> None:
        self._settings["idle_grace"] = self._wire.idle_grace = value

    @property
    def output_backlog(self) -> int:
        return self._wire.output_backlog

    @output_backlog.setter
    def output_backlog(self, value: int) -> None:
        self._settings["output_backlog"] = self._wire.output_backlog = value

    @property
    def connected(self) -> bool:
        return self._wire.connected

    # ---- connection ----

    async def connect(self) -> KernelClient:
        """Open the channels on the running loop (idempotent)."""
        if self._closed:
            raise KernelHubError(f"{self!r} is closed; create a new client")
        self._loop = asyncio.get_running_loop()
        await self._wire.connect()
        return self

    async def close(self) -> None:
        """Close the channels; requests still waiting fail with :class:`KernelHubError`."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close(self)
        if self._rejoin is not None:
            self._rejoin.cancel()
        self._wake()  # requests waiting for a restarted kernel: it will not come to this client
        await self._wire.close()

    def on(self, channel: str, handler: Handler) -> Callable[[], None]:
        """Call *handler* with every message received on *channel*; return a remover.

        Handlers run on the client's loop; one that raises is logged and ignored.
        They stay across restarts.
        """
        self._wire.on(channel, handler)  # checks the channel
        self._handlers[channel].append(handler)

        def remove() -> None:
            self._handlers[channel].remove(handler)
            with contextlib.suppress(ValueError):  # a wire client made since has its own copy
                self._wire.off(channel, handler)

        return remove

    # ---- the kernel's notices (any thread) ----

    def kernel_died(self, err: KernelDied) -> None:
        """The kernel's process died: waiting requests fail with *err*, new ones wait.

        Called by the :class:`~kernel_hub.RunningKernel` before it emits ``died``.
        """
        self._call_on_loop(self._died, err)

    def kernel_back(self) -> None:
        """The kernel runs again (after ``restarted``, and ``connection_changed`` if any)."""
        self._call_on_loop(self._back)

    def link_restored(self) -> None:
        """The provider's link to the kernel came back (``connection_restored``): the
        kernel's publisher may have dropped this client's IOPub subscription with the link,
        so the next execution waits until IOPub delivers again, as after a restart."""
        self._call_on_loop(self._wire.forget_iopub)

    def kernel_ended(self, reason: str) -> None:
        """The kernel ended for good: waiting and later requests fail with *reason*."""
        self._call_on_loop(self._ended, reason)

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            fn(*args)  # never connected: nothing waits
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _died(self, err: KernelDied) -> None:
        if self._comeback is None and self._loop is not None and self._gone is None:
            self._comeback = self._loop.create_future()
        self._wire.abort(err)
        # The restarted process must see this client's IOPub subscription before the next
        # execution (it greets it with iopub_welcome where it can): the rejoin waits for it.
        self._wire.forget_iopub()

    def _back(self) -> None:
        if self._closed:
            return
        info = self._kernel.connection_info
        if endpoint(info) != endpoint(self._wire.connection_info):
            old, self._wire = self._wire, self._new_wire(info)
            # Anything still waiting on the old endpoint hears of the restart, not of a close.
            old.abort(KernelDied("the kernel restarted while a request was waiting"))
            asyncio.ensure_future(old.close())
        else:
            # Again, now that the old process is gone: what it published after the death
            # notice (the status of a restart's shutdown_request) proves nothing of the new one.
            self._wire.forget_iopub()
        if self._loop is not None:
            self._rejoin = asyncio.ensure_future(self._rejoined())
        self._wake()

    async def _rejoined(self) -> Message:
        await self._wire.connect()
        return await self._wire.wait_for_ready(self.ready_timeout)

    def _ended(self, reason: str) -> None:
        self._gone = KernelDied(reason)
        self._wire.abort(self._gone)
        self._wake()

    def _wake(self) -> None:
        fut, self._comeback = self._comeback, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _ready(self, timeout: float | None) -> float | None:
        """Wait while the kernel is being restarted; return what is left of *timeout*.

        :raises KernelDied: when it will not be back.
        :raises TimeoutError: when it is not back within *timeout* seconds.
        """
        if self._comeback is None and self._rejoin is None:
            if self._gone is not None:
                raise self._gone
            return timeout  # the hot path: running, nothing to wait for
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (fut := self._comeback) is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(fut)
            except TimeoutError:
                raise TimeoutError(
                    f"the kernel died and was not back within {timeout} s "
                    "(it is being restarted; try again, or check its events)"
                ) from None
        if self._gone is not None:
            raise self._gone
        if self._closed:
            raise KernelHubError(f"{self!r} was closed while waiting for its kernel")
        rejoin = self._rejoin
        if rejoin is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(rejoin)
            if rejoin.done():
                self._rejoin = None
        return None if deadline is None else max(0.0, deadline - loop.time())

    # ---- requests: the wire client's, once the kernel runs ----

    request = _following(AsyncKernelClient.request)
    supported_features = _following(AsyncKernelClient.supported_features)
    require_subshells = _following(AsyncKernelClient.require_subshells)
    execute = _following(AsyncKernelClient.execute)
    execute_interactive = _following(AsyncKernelClient.execute_interactive)

    async def wait_for_ready(self, timeout: float | None = 60.0) -> Message:
        """Wait until the kernel answers ``kernel_info`` and IOPub delivers; return the reply."""
        await self.connect()
        timeout = await self._ready(timeout)
        return await self._wire.wait_for_ready(timeout)

    def input(self, value: str) -> None:
        """Answer the kernel's pending ``input_request`` with *value* (for stdin handlers)."""
        self._wire.input(value)

    async def interrupt(self, *, timeout: float | None = 5.0) -> None:
        """Interrupt the running execution: ``interrupt_request``, or a signal by the manager."""
        if self.interrupt_mode == "message":
            await self.request("interrupt_request", channel="control", timeout=timeout)
        else:
            await self._ready(timeout)
            await self._kernel.manager.interrupt()

    async def shutdown(self, *, timeout: float = 5.0, restart: bool = False) -> None:
        """Ask the kernel's process to end, wait for it, and kill it if it does not.

        Like :meth:`AsyncKernelClient.shutdown`; the kernel's restart policy then
        applies as to any death. To end a kernel for good, call
        :meth:`RunningKernel.shutdown`.
        """
        left = await self._ready(timeout)
        await self._wire.shutdown(
            timeout=timeout if left is None else left, restart=restart, manager=self._kernel.manager
        )
