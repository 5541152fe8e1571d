"""A jupyter_server kernel manager that gets its kernel_hub kernels back after a restart.

jupyter_server's ``MappingKernelManager`` forgets every kernel when the server
stops, and ends them. Configured instead of it::

    jupyter lab --ServerApp.kernel_manager_class=\\
        kernel_hub_jupyter.kernelmanager.KernelHubKernelManager

the bridge's hub records the kernels it launches for the server (the
kernelspecs that select the ``kernel-hub`` provisioner) in a kernel_hub state
dir, they outlive the server for :attr:`~KernelHubKernelManager.grace`
seconds, and the next server on the same state dir adopts those still alive
and registers each under its jupyter kernel id: ``GET /api/kernels`` lists
it, the frontend's websocket reconnects to it, and its variables are there.
Kernels of other kernelspecs end with the server, as before. It also starts
the kernel pools of the kernel_hub config file's ``[pool."<type id>"]`` tables
(for the types its kernelspecs launch) at the server's start, so that the
first notebook is served by a ready kernel too.

Its culling (``--MappingKernelManager.cull_idle_timeout``) also sees work that
prints nothing: a kernel_hub kernel whose processes used more than
:attr:`~KernelHubKernelManager.cull_cpu` CPU-seconds per second since the
last check counts as active, so a silent ten-hour computation, or a thread
computing after its cell finished, is not culled.

The server's stop (Ctrl-C, SIGTERM, ``/api/shutdown``) leaves the kernels
running for the next server unless ``keep_kernels_at_exit`` is off; a server
killed outright (``kill -9``, a crash) leaves them in any case, and kernel_hub's
reaper ends what no new server adopted once the grace is over.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.ioloop import IOLoop
from traitlets import Bool, Float, Unicode, default

from kernel_hub import KernelHubError, default_state_dir

from . import bridge
from .provisioner import KernelHubProvisioner

if TYPE_CHECKING:
    import asyncio

__all__ = ["KernelHubKernelManager"]


class KernelHubKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager, plus kernel_hub kernels that survive its restarts."""

    state_dir = Unicode(
        config=True,
        help="kernel_hub state dir of this server's kernels (default: "
        "kernel_hub.default_state_dir('jupyter')); one per server that runs at a time",
    )
    grace = Float(
        300.0,  # KernelHub's own default
        config=True,
        help="seconds the kernels outlive the server, for the next server to take them back",
    )
    keep_kernels_at_exit = Bool(
        True,
        config=True,
        help="leave the kernel_hub kernels running when the server stops, for the next "
        "server on the same state dir; off: a stop ends them (a crash still leaves them)",
    )

    cull_cpu = Float(
        0.05,
        config=True,
        help="CPU-seconds per second of a kernel_hub kernel's processes that count as "
        "activity for culling (jupyter_server counts IOPub messages only); 0: IOPub only",
    )

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return str(default_state_dir("jupyter"))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.grace <= 0:
            raise KernelHubError(
                f"KernelHubKernelManager.grace must be a positive number of seconds, "
                f"not {self.grace!r}"
            )
        bridge.configure(state_dir=self.state_dir, grace=self.grace)
        #: kernel id -> (time.monotonic(), CPU seconds) at the last culling check
        self._cpu_samples: dict[str, tuple[float, float]] = {}
        #: Done once the kernels of the previous server are registered again.
        self.readopted: asyncio.Future[list[str]] | asyncio.Task[list[str]]
        loop = IOLoop.current().asyncio_loop  # type: ignore[attr-defined]
        if loop.is_running():  # an embedded server: the kernels come back shortly after
            self.readopted = loop.create_task(self._readopt())
        else:
            # ``jupyter server``: the loop starts later, after the HTTP port is bound, so
            # the kernels are back before the first request is served.
            ids = loop.run_until_complete(self._readopt())
            self.readopted = loop.create_future()
            self.readopted.set_result(ids)

    def _spec_names(self) -> dict[str, str]:
        """Return kernel_hub type id -> name of the kernelspec that launches it."""
        specs = self.kernel_spec_manager
        return {} if specs is None else bridge.bridged_types(specs)

    async def _readopt(self) -> list[str]:
        """Adopt the kernels of the previous server; register each under its kernel id.

        Then start the configured kernel pools (the adopted kernels come first).
        """
        try:
            return await self._readopt_kernels()
        finally:
            await bridge.start_pools(self.kernel_spec_manager)

    async def _readopt_kernels(self) -> list[str]:
        kernels = await bridge.adopt()
        if not kernels:
            return []
        names = self._spec_names()
        ids = []
        for kernel in kernels:
            name = names.get(kernel.type_id)
            if name is None:
                self.log.warning(
                    "kernel_hub kernel %s (%s) of the previous server is shut down: no "
                    "kernelspec launches %s any more; run 'kernel-hub jupyter install'",
                    kernel.id,
                    kernel.type_id,
                    kernel.type_id,
                )
                await bridge.claim(kernel.id)
                await bridge.call(kernel.shutdown())
                continue
            try:
                await self.start_kernel(
                    kernel_id=kernel.id, kernel_name=name, cwd=kernel.request.cwd
                )
            except Exception as exc:  # noqa: BLE001 - one kernel's failure must not stop the server
                self.log.error("kernel_hub kernel %s not re-registered: %r", kernel.id, exc)
                if await bridge.claim(kernel.id) is not None:  # not attached: end it
                    await bridge.call(kernel.shutdown())
                continue
            ids.append(kernel.id)
            self.log.info("Kernel adopted from the previous server: %s (%s)", kernel.id, name)
        return ids

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """Count CPU use of a kernel_hub kernel's processes as activity, then cull as usual."""
        km = self._kernels.get(kernel_id)
        provisioner = getattr(km, "provisioner", None)
        if self.cull_cpu > 0 and isinstance(provisioner, KernelHubProvisioner):
            try:
                cpu = await provisioner.cpu_seconds()
            except Exception as exc:  # noqa: BLE001 - unknown CPU: IOPub alone decides
                self.log.debug("kernel %s: no CPU time for culling: %r", kernel_id, exc)
                cpu = None
            now = time.monotonic()
            last = self._cpu_samples.pop(kernel_id, None)
            if cpu is not None:
                self._cpu_samples[kernel_id] = (now, cpu)
                if last is not None and cpu - last[1] > self.cull_cpu * (now - last[0]):
                    km.last_activity = datetime.now(UTC)  # type: ignore[union-attr]  # working silently
        await super().cull_kernel_if_idle(kernel_id)

    async def _async_shutdown_all(self, now: bool = False) -> None:
        """Leave kernel_hub kernels to the next server (``keep_kernels_at_exit``); end the rest."""
        if not self.keep_kernels_at_exit:
            await super()._async_shutdown_all(now=now)
            return
        for kernel_id, km in list(self._kernels.items()):
            provisioner = km.provisioner
            if not isinstance(provisioner, KernelHubProvisioner) or not provisioner.has_process:
                continue
            km.stop_restarter()
            self.stop_watching_activity(kernel_id)
            provisioner.detach()  # jupyter_client's cleanup then ends nothing
            await ensure_async(km.cleanup_resources(restart=False))
            self.remove_kernel(kernel_id)
        await bridge.detach()
        await super()._async_shutdown_all(now=now)

    shutdown_all = _async_shutdown_all  # type: ignore[assignment]
