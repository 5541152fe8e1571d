"""Culler: one task per hub that shuts down kernels doing nothing (:class:`CullPolicy`).

A kernel is working while an execution is in progress (its last IOPub status is
``busy``) or while its processes use CPU (``KernelManager.cpu_seconds``, sampled
once per check), so a silent long computation is kept and an abandoned kernel
is not. One task serves every kernel of the hub: no task, timer or thread per
kernel, and a check reads ``/proc`` once for all local kernels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..aio import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..contract.types import CullPolicy
    from .kernel import RunningKernel

__all__ = ["Culler"]

log = logging.getLogger("kernel_hub.culler")


@dataclass
class _Sample:
    """What the culler remembers of one kernel between two checks."""

    when: float  #: time.time() of the last CPU sample
    cpu: float | None  #: CPU seconds then (None: unknown)
    working: float  #: time.time() the kernel was last seen using CPU (or first seen)


class Culler:
    """Check a hub's kernels against their :class:`CullPolicy` and cull the inactive ones.

    :param kernels: returns the hub's registered kernels (pool spares are not among them).
    :param policy_for: the policy of one kernel, or ``None`` (never culled).
    :param every: seconds between two checks (the shortest of the hub's policies).
    :param emit: the hub's ``emit(kind, kernel_id, type_id, **data)``.
    """

    def __init__(
        self,
        kernels: Callable[[], Iterable[RunningKernel]],
        policy_for: Callable[[RunningKernel], CullPolicy | None],
        every: float,
        emit: Callable[..., None],
    ) -> None:
        self._kernels = kernels
        self._policy_for = policy_for
        self.every = every
        self._emit = emit
        self._samples: dict[str, _Sample] = {}
        self._task: asyncio.Task[None] | None = None
        self._culling: set[asyncio.Task[Any]] = set()
        #: Completed checks (:meth:`wait_checks` waits for more).
        self.checks = 0
        self._check_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        state = "RUNNING" if self._task is not None and not self._task.done() else "STOPPED"
        return f"<Culler [{state} kernels={len(self._samples)} checks={self.checks}]>"

    def start(self) -> None:
        """Start checking, on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="kernel_hub culler")

    async def stop(self) -> None:
        """Stop checking; kernels being culled finish their shutdown first."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        if self._culling:
            await asyncio.gather(*self._culling, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception:  # a bug here must not end culling for the hub's whole life
                log.exception("culling check failed")

    async def check(self, now: float | None = None) -> list[RunningKernel]:
        """Check every kernel once; start culling those inactive too long and return them."""
        kernels = [
            (k, p)
            for k in self._kernels()
            if k.status == "RUNNING" and (p := self._policy_for(k)) is not None
        ]
        live = {k.id for k, _ in kernels}
        for gone in [kid for kid in self._samples if kid not in live]:
            del self._samples[gone]
        cpus = await asyncio.gather(*(_cpu(k) for k, _ in kernels))
        now = time.time() if now is None else now
        culled = []
        for (kernel, policy), cpu in zip(kernels, cpus, strict=True):
            reason = self._judge(kernel, policy, cpu, now)
            if reason is None:
                continue
            why, since = reason
            culled.append(kernel)
            self._samples.pop(kernel.id, None)
            since = round(since, 1)
            self._emit("culled", kernel.id, kernel.type_id, reason=why, inactive_for=since)
            task = asyncio.get_running_loop().create_task(_cull(kernel))
            self._culling.add(task)
            task.add_done_callback(self._culling.discard)
        self.checks += 1
        for count, fut in [w for w in self._check_waiters if w[0] <= self.checks]:
            self._check_waiters.remove((count, fut))
            if not fut.done():
                fut.set_result(None)
        return culled

    async def wait_checks(self, more: int = 1) -> None:
        """Wait until *more* checks have completed after this call (bound it with a timeout)."""
        fut = asyncio.get_running_loop().create_future()
        self._check_waiters.append((self.checks + more, fut))
        await fut

    def _judge(
        self, kernel: RunningKernel, policy: CullPolicy, cpu: float | None, now: float
    ) -> tuple[str, float] | None:
        """Return ``(reason, inactive seconds)`` if *kernel* is to be culled now, else ``None``."""
        sample = self._samples.get(kernel.id)
        if sample is None:  # first sight: the CPU baseline; its launch counts as activity
            self._samples[kernel.id] = _Sample(now, cpu, now)
            return None
        if cpu is not None and sample.cpu is not None:
            elapsed = max(now - sample.when, 1e-3)
            if cpu - sample.cpu > policy.cpu * elapsed:
                sample.working = now
        sample.when, sample.cpu = now, cpu
        if policy.connected and kernel.client_count:
            sample.working = now
        state = kernel.execution_state
        if state == "busy":
            if policy.busy is None or cpu is None:
                return None  # an execution in progress is work, unless CPU says otherwise
            stuck = now - max(sample.working, kernel.last_activity)
            return ("busy without CPU", stuck) if stuck > policy.busy else None
        inactive = now - max(sample.working, kernel.last_activity)
        return ("idle", inactive) if inactive > policy.idle else None


async def _cpu(kernel: RunningKernel) -> float | None:
    try:
        return await kernel.manager.cpu_seconds()
    except Exception as exc:  # noqa: BLE001 - a manager's failure means "cannot tell"
        log.debug("%r: no CPU time (%s)", kernel, exc)
        return None


async def _cull(kernel: RunningKernel) -> None:
    try:
        await kernel.shutdown()
    except Exception:
        log.exception("culling %r: its shutdown failed", kernel)
