"""LoopThread: one private asyncio loop in a daemon thread, shared process-wide.

The blocking client runs its async client there; a plugin subclasses it for a
loop of its own (the ssh plugin keeps its connections and tunnels on one).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ["LoopThread"]

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
