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

Warm pools: :func:`start_pools` starts the pools of the config file's
``[pool."<type id>"]`` tables whose types a kernelspec launches (through the
``kernel-hub`` provisioner), once per process: the provisioner calls it at the
first launch, :class:`~kernel_hub_jupyter.kernelmanager.KernelHubKernelManager`
at the server's start. A launch is then served by a ready spare, adapted to the
notebook's directory and ``JPY_SESSION_NAME`` (see ``hub.pool``). The spares
end with the process (or are left out of what a state dir keeps).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from kernel_hub import KernelHub
from kernel_hub.provider import LoopThread

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

    from kernel_hub import KernelPool, RunningKernel

__all__ = [
    "PROVISIONER_NAME",
    "BridgeLoop",
    "adopt",
    "bridged_types",
    "call",
    "claim",
    "configure",
    "detach",
    "get_hub",
    "start_pools",
]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: The name kernelspecs select the bridge's provisioner by (its entry point in
#: ``jupyter_client.kernel_provisioners``).
PROVISIONER_NAME = "kernel-hub"

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
#: Whether :func:`start_pools` has run in this process.
_pools_started = False


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


def bridged_types(spec_manager: Any = None) -> dict[str, str]:
    """Return kernel_hub type id -> name of the first kernelspec that launches it.

    The kernelspecs that select the ``kernel-hub`` provisioner, as *spec_manager*
    (a jupyter_client ``KernelSpecManager``; a new default one if ``None``) lists them.
    Call it outside the bridge's loop: a live spec manager asks the bridge's hub.
    """
    if spec_manager is None:
        from jupyter_client.kernelspec import KernelSpecManager

        spec_manager = KernelSpecManager()
    names: dict[str, str] = {}
    for name, spec in sorted(spec_manager.get_all_specs().items()):
        chosen = (spec.get("spec", {}).get("metadata") or {}).get("kernel_provisioner") or {}
        type_id = (chosen.get("config") or {}).get("type_id")
        if chosen.get("provisioner_name") == PROVISIONER_NAME and type_id:
            names.setdefault(type_id, name)
    return names


async def _start_pools_here(type_ids: Iterable[str]) -> list[KernelPool]:
    hub = await _get_hub_here()
    return await hub.start_configured_pools(type_ids=type_ids)


async def start_pools(spec_manager: Any = None) -> list[KernelPool]:
    """Start the configured pools of the types that kernelspecs launch; once per process.

    The config file's ``[pool."<type id>"]`` tables (``KERNEL_HUB_CONFIG``), for
    the types :func:`bridged_types` finds; returns at once (the spares start in
    the background). Later calls start nothing and return ``[]``.

    :param spec_manager: the host's ``KernelSpecManager`` (jupyter_server's own,
        which may be :class:`~kernel_hub_jupyter.specmanager.KernelHubSpecManager`).
    """
    global _pools_started
    if _pools_started:
        return []
    _pools_started = True
    try:
        type_ids = bridged_types(spec_manager)
    except Exception as exc:  # noqa: BLE001 - a broken kernelspec must not stop a launch
        log.warning("kernel_hub_jupyter: no kernel pools: listing kernelspecs failed: %r", exc)
        return []
    if not type_ids:
        return []
    return await call(_start_pools_here(list(type_ids)))


async def get_hub() -> KernelHub:
    """Return the process's bridge hub (made on first use), from any loop."""
    return await BridgeLoop.get().submit(_get_hub_here())


async def call(coro: Coroutine[Any, Any, R]) -> R:
    """Await *coro* on the bridge's loop, from any loop; cancelling the caller cancels it."""
    return await BridgeLoop.get().submit(coro)


def _shutdown_at_exit() -> None:
    """Shut down the kernels jupyter_client left running (its host exited without asking)."""
    hub = _hub
    if hub is None or not (hub.kernels or hub.pools):
        return
    # With a state dir the kernels are meant to outlive this process: leave them to the next.
    end = _detach_here() if hub.state is not None else hub.shutdown_all(now=True)
    try:
        BridgeLoop.get().run(end, timeout=EXIT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - at exit, report and go on
        log.warning("kernel_hub_jupyter: could not shut down every kernel at exit: %r", exc)
