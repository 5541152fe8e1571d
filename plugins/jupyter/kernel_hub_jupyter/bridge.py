"""The process-wide hub of the bridge: one :class:`~kernel_hub.KernelHub` on a private loop thread.

jupyter_client calls a provisioner's coroutines on whatever loop its kernel
manager runs on: jupyter_server's tornado loop, nbclient's, or a fresh one per
call for the blocking ``KernelManager``. kernel_hub's kernels, clients and
monitors live on the loop they were made on, so every kernel of this process
is launched and managed on one loop, in a daemon thread of its own, through
:func:`call`. Kernels still running when the interpreter exits are shut down
(local kernels are also covered by kernel_hub's reaper, even after ``kill -9``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from kernel_hub import KernelHub
from kernel_hub.provider import LoopThread

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = ["BridgeLoop", "call", "get_hub"]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: How long the interpreter's exit may wait for the kernels of the bridge to shut down.
EXIT_TIMEOUT = 20.0


class BridgeLoop(LoopThread):
    """The loop thread on which the bridge's hub and all its kernels live."""

    _instance = None
    thread_name = "kernel-hub-jupyter"


_hub: KernelHub | None = None
_hub_lock: asyncio.Lock | None = None


async def _get_hub_here() -> KernelHub:
    global _hub, _hub_lock
    if _hub_lock is None:
        _hub_lock = asyncio.Lock()
    async with _hub_lock:
        if _hub is None:
            _hub = KernelHub()
            atexit.register(_shutdown_at_exit)
        return _hub


async def get_hub() -> KernelHub:
    """Return the process's bridge hub (made on first use), from any loop."""
    return await BridgeLoop.get().submit(_get_hub_here())


async def call(coro: Coroutine[Any, Any, R]) -> R:
    """Await *coro* on the bridge's loop, from any loop; cancelling the caller cancels it."""
    return await BridgeLoop.get().submit(coro)


def _shutdown_at_exit() -> None:
    """Shut down the kernels jupyter_client left running (its host exited without asking)."""
    hub = _hub
    if hub is None or not hub.kernels:
        return
    try:
        BridgeLoop.get().run(hub.shutdown_all(now=True), timeout=EXIT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - at exit, report and go on
        log.warning("kernel_hub_jupyter: could not shut down every kernel at exit: %r", exc)
