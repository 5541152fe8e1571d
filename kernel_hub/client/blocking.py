"""BlockingKernelClient: the async client, run on a private event loop thread.

Composition, not a second implementation: every blocking method is a one-line
``_blocking(AsyncKernelClient.method)`` that runs the coroutine on one shared
private loop in a daemon thread and waits for its result. It therefore works
the same inside an already running event loop (a notebook, an async app) —
without nest_asyncio and without touching the caller's loop.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from ..aio.loopthread import LoopThread
from .asynchronous import AsyncKernelClient

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from ..contract.manager import KernelManager
    from ..wire.session import Message

__all__ = ["AsyncClientAPI", "BlockingKernelClient", "LoopThread"]


class AsyncClientAPI(Protocol):
    """The async client API a blocking client wraps (``AsyncKernelClient``'s)."""

    @property
    def connection_info(self) -> dict[str, Any]: ...

    @property
    def bad_signatures(self) -> int: ...

    @property
    def execution_state(self) -> str: ...

    def on(self, channel: str, handler: Callable[[Message], Any]) -> Callable[[], None]: ...

    def input(self, value: str) -> None: ...

    async def connect(self) -> Any: ...


P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[AsyncKernelClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[BlockingKernelClient, P], R]:
    """Turn an ``AsyncKernelClient`` coroutine method into a blocking one.

    The method is looked up by name on the wrapped client, so that a
    :class:`~kernel_hub.KernelClient` (the same API) is wrapped the same way.
    """
    name = method.__name__

    @functools.wraps(method)
    def blocking(self: BlockingKernelClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._runner.run(getattr(self.async_client, name)(*args, **kwargs))

    return blocking


class BlockingKernelClient:
    """A blocking kernel client: :class:`AsyncKernelClient` run on a private loop.

    Hooks and handlers are called on the private loop's thread. Timeouts raise
    the builtin :class:`TimeoutError`.

    :param connection_info: the kernel's connection info (or pass *async_client*).
    :param async_client: an existing, not yet connected, async client to wrap: an
        :class:`AsyncKernelClient`, or a :class:`~kernel_hub.KernelClient` (what
        :meth:`RunningKernel.blocking_client` wraps).
    """

    def __init__(
        self,
        connection_info: Mapping[str, Any] | None = None,
        *,
        manager: KernelManager | None = None,
        interrupt_mode: str = "signal",
        async_client: AsyncKernelClient | AsyncClientAPI | None = None,
    ) -> None:
        if async_client is None:
            if connection_info is None:
                raise TypeError("BlockingKernelClient needs connection_info or async_client")
            async_client = AsyncKernelClient(
                connection_info, manager=manager, interrupt_mode=interrupt_mode
            )
        self.async_client: AsyncKernelClient | AsyncClientAPI = async_client
        self._runner = LoopThread.get()
        self._runner.run(async_client.connect())

    def __repr__(self) -> str:
        text = repr(self.async_client)
        for name in ("AsyncKernelClient", "KernelClient"):
            text = text.replace(f"<{name} ", "<BlockingKernelClient ", 1)
        return text

    def __enter__(self) -> BlockingKernelClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connection_info(self) -> dict[str, Any]:
        return self.async_client.connection_info

    @property
    def bad_signatures(self) -> int:
        return self.async_client.bad_signatures

    @property
    def execution_state(self) -> str:
        return self.async_client.execution_state

    def on(self, channel: str, handler: Callable[[Message], Any]) -> Callable[[], None]:
        """Call *handler* (on the private loop thread) for every message on *channel*."""
        return self.async_client.on(channel, handler)

    def input(self, value: str) -> None:
        """Answer the kernel's pending ``input_request`` with *value*."""
        self._runner.loop.call_soon_threadsafe(self.async_client.input, value)

    close = _blocking(AsyncKernelClient.close)
    wait_for_ready = _blocking(AsyncKernelClient.wait_for_ready)
    request = _blocking(AsyncKernelClient.request)
    execute = _blocking(AsyncKernelClient.execute)
    execute_interactive = _blocking(AsyncKernelClient.execute_interactive)
    kernel_info = _blocking(AsyncKernelClient.kernel_info)
    complete = _blocking(AsyncKernelClient.complete)
    inspect = _blocking(AsyncKernelClient.inspect)
    history = _blocking(AsyncKernelClient.history)
    is_complete = _blocking(AsyncKernelClient.is_complete)
    comm_info = _blocking(AsyncKernelClient.comm_info)
    supported_features = _blocking(AsyncKernelClient.supported_features)
    create_subshell = _blocking(AsyncKernelClient.create_subshell)
    list_subshells = _blocking(AsyncKernelClient.list_subshells)
    delete_subshell = _blocking(AsyncKernelClient.delete_subshell)
    interrupt = _blocking(AsyncKernelClient.interrupt)
    shutdown = _blocking(AsyncKernelClient.shutdown)
