"""BlockingKernelClient: the async client, run on a private event loop thread.

Composition, not a second implementation: every blocking method is a one-line
``_blocking(AsyncKernelClient.method)`` that runs the coroutine on one shared
private loop in a daemon thread and waits for its result. It therefore works
the same inside an already running event loop (a notebook, an async app) —
without nest_asyncio and without touching the caller's loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .asynchronous import AsyncKernelClient

if TYPE_CHECKING:
    from ..manager import KernelManager
    from ..session import Message

__all__ = ["BlockingKernelClient", "LoopThread"]

P = ParamSpec("P")
R = TypeVar("R")
L = TypeVar("L", bound="LoopThread")


class LoopThread:
    """One private asyncio loop running in a daemon thread, shared by blocking clients.

    Subclass it (with its own ``_instance = None`` and ``thread_name``) for another
    process-wide loop, as the ssh plugin does for its connections and tunnels.
    """

    _instance: LoopThread | None = None
    _lock = threading.Lock()
    #: The name of the daemon thread, as shown by debuggers and ``py-spy``.
    thread_name = "kernel-hub-loop"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self.thread.start()
        ready.wait()

    def __repr__(self) -> str:
        state = "RUNNING" if self.thread.is_alive() else "STOPPED"
        return f"<{type(self).__name__} {self.thread_name} [{state}]>"

    @classmethod
    def get(cls: type[L]) -> L:
        """Return the process-wide loop thread of this class, starting it on first use."""
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance  # type: ignore[return-value]

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run *coro* on the private loop from another thread and return its result."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking kernel_hub call was made on kernel_hub's own loop thread "
                "(from a hook or handler); use the AsyncKernelClient there instead"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def submit(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run *coro* on the private loop and await its result from any loop.

        Cancelling the caller cancels *coro* too.
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


def _blocking(
    method: Callable[Concatenate[AsyncKernelClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[BlockingKernelClient, P], R]:
    """Turn an ``AsyncKernelClient`` coroutine method into a blocking one."""

    @functools.wraps(method)
    def blocking(self: BlockingKernelClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._runner.run(method(self.async_client, *args, **kwargs))

    return blocking


class BlockingKernelClient:
    """A blocking kernel client: :class:`AsyncKernelClient` run on a private loop.

    Hooks and handlers are called on the private loop's thread. Timeouts raise
    the builtin :class:`TimeoutError`.

    :param connection_info: the kernel's connection info (or pass *async_client*).
    :param async_client: an existing, not yet connected, async client to wrap.
    """

    def __init__(
        self,
        connection_info: Mapping[str, Any] | None = None,
        *,
        manager: KernelManager | None = None,
        interrupt_mode: str = "signal",
        async_client: AsyncKernelClient | None = None,
    ) -> None:
        if async_client is None:
            if connection_info is None:
                raise TypeError("BlockingKernelClient needs connection_info or async_client")
            async_client = AsyncKernelClient(
                connection_info, manager=manager, interrupt_mode=interrupt_mode
            )
        self.async_client = async_client
        self._runner = LoopThread.get()
        self._runner.run(async_client.connect())

    def __repr__(self) -> str:
        return repr(self.async_client).replace("AsyncKernelClient", "BlockingKernelClient", 1)

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
    interrupt = _blocking(AsyncKernelClient.interrupt)
    shutdown = _blocking(AsyncKernelClient.shutdown)
