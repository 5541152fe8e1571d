"""The process-wide hub of the bridge: one :class:`~kernel_hub.KernelHub` on a private loop thread.

jupyter_client calls a provisioner's coroutines on whatever loop its kernel
manager runs on: jupyter_server's tornado loop, nbclient's, or a fresh one per
call for the blocking ``KernelManager``. kernel_hub's kernels, clients and
monitors live on the loop they were made on, so every kernel of this process
is launched and managed on one loop, in a daemon thread of its own, through
:func:`call`. Kernels still running when the interpreter exits are shut down
(local kernels are also covered by kernel_hub's reaper, even after ``kill -9``).

By default the hub has no state dir: the kernels end with the process. A
host that keeps kernels across its own restarts (jupyter_server with
:class:`~kernel_hub_jupyter.kernelmanager.KernelHubKernelManager`) calls
:func:`configure` before the first launch: the hub then records its kernels
there, they outlive the process for the grace, and :func:`adopt` takes back
those an earlier process left; :func:`claim` hands one to the provisioner
that re-registers it under its jupyter kernel id.
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

    from kernel_hub import RunningKernel

__all__ = ["BridgeLoop", "adopt", "call", "claim", "configure", "detach", "get_hub"]

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
#: ``KernelHub`` keyword arguments set by :func:`configure` (``state_dir``, ``grace``).
_settings: dict[str, Any] = {}
#: Adopted kernels not yet claimed by a provisioner, by kernel id (on the bridge's loop).
_adopted: dict[str, RunningKernel] = {}


def configure(*, state_dir: str, grace: float) -> None:
    """Give the process's hub a state dir: its kernels outlive the process for *grace* seconds.

    Call it before the first launch (a host's start-up).

    :raises RuntimeError: when the hub exists already with other settings.
    """
    settings = {"state_dir": str(state_dir), "grace": float(grace)}
    if _hub is not None and settings != _settings:
        raise RuntimeError(
            "the kernel_hub bridge's hub is running already; configure its state dir "
            "before the first kernel is launched"
        )
    _settings.clear()
    _settings.update(settings)


async def _get_hub_here() -> KernelHub:
    global _hub, _hub_lock
    if _hub_lock is None:
        _hub_lock = asyncio.Lock()
    async with _hub_lock:
        if _hub is None:
            _hub = KernelHub(**_settings)
            atexit.register(_shutdown_at_exit)
        return _hub


async def _adopt_here() -> list[RunningKernel]:
    hub = await _get_hub_here()
    kernels = await hub.adopt()
    _adopted.update((k.id, k) for k in kernels)
    return kernels


async def adopt() -> list[RunningKernel]:
    """Adopt the kernels an earlier process recorded in the state dir (see :func:`configure`).

    They wait for :func:`claim`; dead ones are cleaned up by the hub.

    :raises kernel_hub.StateInUse: when another live process holds the state dir.
    """
    return await call(_adopt_here())


async def _claim_here(kernel_id: str) -> RunningKernel | None:
    return _adopted.pop(kernel_id, None)


async def claim(kernel_id: str) -> RunningKernel | None:
    """Return the adopted kernel *kernel_id* (once: it is then the caller's), or ``None``."""
    return await call(_claim_here(kernel_id))


async def _detach_here() -> list[str]:
    _adopted.clear()
    hub = _hub
    if hub is None or hub.state is None:
        return []
    return await hub.detach()


async def detach() -> list[str]:
    """Leave every kernel of the hub running for the next process (with a state dir only).

    :returns: the ids of the kernels left running (none without a state dir).
    """
    return await call(_detach_here())


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
    # With a state dir the kernels are meant to outlive this process: leave them to the next.
    end = _detach_here() if hub.state is not None else hub.shutdown_all(now=True)
    try:
        BridgeLoop.get().run(end, timeout=EXIT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - at exit, report and go on
        log.warning("kernel_hub_jupyter: could not shut down every kernel at exit: %r", exc)
