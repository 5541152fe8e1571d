"""KernelPool: started, ready kernels of one type, kept for ``hub.launch`` to hand out.

A pool belongs to its hub (``hub.pool(type_id, size=N)``). It starts kernels
through the hub's one launch path until *size* of them are ready or on their
way, never more, and starts one more each time one is handed out or ends. A
launch whose type, cwd, env, params and nanny are the pool's takes a ready one
at once; so does a launch with another cwd or env when the pool adapts
(``adapt=True``, Python kernels of this machine only: :mod:`.adapt`). A launch
with a ``connection`` (a relaunch by a host) is never served from a pool.
Otherwise, or when none is ready yet, the launch starts a kernel as it would
without a pool. A kernel is handed out once: it leaves the pool for the hub's
registry, under the id, request and restart policy of the launch it serves,
and nobody else has had its connection info.

Spares are ordinary :class:`~kernel_hub.RunningKernel` objects, watched and
restarted by the pool's restart policy; they are not in ``hub.kernels`` until
handed out, and ``hub.shutdown_all`` ends them with the others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..contract.errors import KernelHubError
from .adapt import plan

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..contract.types import KernelType, LaunchRequest
    from .adapt import Adaptation
    from .kernel import RunningKernel

__all__ = ["KernelPool", "PoolKey", "take_spare"]

log = logging.getLogger("kernel_hub.pool")

#: Seconds before a pool tries again after a start of its kernels failed (doubling, to 60).
RETRY_FIRST = 1.0
RETRY_MAX = 60.0


@dataclass(frozen=True)
class PoolKey:
    """What a launch request must match to be served from a pool without adapting a spare.

    The restart policy is not part of it: a spare takes the launch's at hand-out.
    """

    type_id: str
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    params: str = "{}"  # canonical JSON: params are JSON-able, maybe nested
    nanny: bool = False

    @classmethod
    def of(
        cls,
        type_id: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        nanny: bool = False,
    ) -> PoolKey:
        import json

        try:
            canonical = json.dumps(dict(params or {}), sort_keys=True, default=repr)
        except (TypeError, ValueError):
            canonical = repr(params)
        return cls(type_id, cwd, tuple(sorted((env or {}).items())), canonical, nanny)

    def same_but_cwd_env(self, other: PoolKey) -> bool:
        """Return whether *other* differs from this key at most in cwd and env."""
        return (self.type_id, self.params, self.nanny) == (
            other.type_id,
            other.params,
            other.nanny,
        )


@dataclass
class KernelPool:
    """Ready kernels of one request, kept by a hub; get one with ``hub.launch``.

    :param key: the request its kernels were started for.
    :param size: how many kernels it keeps ready or starting.
    :param adapt: its spares may serve launches with another cwd and env (Python
        kernels of this machine; see :mod:`kernel_hub.lifecycle.adapt`).
    """

    key: PoolKey
    size: int
    _start: Callable[[], Awaitable[RunningKernel]]
    ready_timeout: float = 60.0
    adapt: bool = False
    _ready: list[RunningKernel] = field(default_factory=list)
    _starting: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False
    _retry: float = 0.0
    _retry_handle: asyncio.TimerHandle | None = None
    #: How many kernels it has handed out.
    handed_out: int = 0
    #: How many of its starts failed (each logged).
    failures: int = 0
    #: The error of the last start that failed.
    last_error: Exception | None = None
    #: How many of the handed-out kernels were adapted to another cwd or env.
    adapted: int = 0
    #: How many adaptations failed (the spare was ended, a cold kernel started instead).
    adapt_failures: int = 0

    def __repr__(self) -> str:
        state = "CLOSED" if self._closed else f"{len(self._ready)}/{self.size} ready"
        return f"<KernelPool {self.key.type_id} [{state}, {self.starting} starting]>"

    @property
    def type_id(self) -> str:
        return self.key.type_id

    @property
    def cwd(self) -> str | None:
        """The working directory its spares were started in (``None``: the host's)."""
        return self.key.cwd

    @property
    def env(self) -> dict[str, str]:
        """The environment entries its spares were started with."""
        return dict(self.key.env)

    @property
    def spares(self) -> list[RunningKernel]:
        """The ready kernels it holds now."""
        return list(self._ready)

    @property
    def starting(self) -> int:
        """How many of its kernels are starting now."""
        return sum(1 for task in self._starting if not task.done())

    def take(self) -> RunningKernel | None:
        """Hand out a ready kernel (it leaves the pool), or ``None``; refill in the background.

        A spare that is being restarted is not ready: it stays.
        """
        for i, kernel in enumerate(self._ready):
            if kernel.status == "RUNNING":
                del self._ready[i]
                self.handed_out += 1
                self.fill()
                return kernel
        return None

    def forget(self, kernel: RunningKernel) -> None:
        """A spare ended for good (its restarts failed, or it was shut down): start another."""
        if kernel in self._ready:
            self._ready.remove(kernel)
            self._notify()
            self.fill()

    def resize(self, size: int) -> list[RunningKernel]:
        """Set the size; return the spares beyond it (the caller shuts them down)."""
        if size < 0:
            raise ValueError(f"a pool's size must be 0 or more, not {size}")
        self.size = size
        extra = self._ready[size:]
        del self._ready[size:]
        self.fill()
        return extra

    def fill(self) -> None:
        """Start kernels until *size* are ready or starting (call on the hub's loop)."""
        if self._closed or self._retry_handle is not None:
            return
        while len(self._ready) + self.starting < self.size:
            task = asyncio.ensure_future(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        try:
            kernel = await self._start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed start is logged; the pool backs off
            self.failures += 1
            self.last_error = exc
            self._retry = min(RETRY_MAX, self._retry * 2 or RETRY_FIRST)
            log.warning(
                "kernel pool %s: a kernel did not start (%s); trying again in %g s",
                self.key.type_id,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                self._retry,
            )
            if self._retry_handle is None and not self._closed:
                loop = asyncio.get_running_loop()
                self._retry_handle = loop.call_later(self._retry, self._retry_now)
            self._notify()
            return
        self._retry = 0.0
        if self._closed or len(self._ready) >= self.size:
            await kernel.shutdown()  # resized or closed meanwhile
            return
        self._ready.append(kernel)
        self._notify()

    def _retry_now(self) -> None:
        self._retry_handle = None
        self.fill()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_full(self, timeout: float | None = None) -> None:
        """Return once *size* kernels are ready (for hosts that warm up before serving).

        :raises TimeoutError: after *timeout* seconds.
        :raises LaunchError: (or what the start raised) when a start fails meanwhile;
            the pool goes on trying, backing off.
        :raises KernelHubError: when the pool is closed meanwhile.
        """
        failures = self.failures
        async with asyncio.timeout(timeout):
            while len(self._ready) < self.size:
                if self._closed:
                    raise KernelHubError(f"{self!r} was closed")
                if self.failures > failures and self.last_error is not None:
                    raise self.last_error
                await self._changed.wait()

    async def close(self) -> list[RunningKernel]:
        """Stop refilling; cancel starts in progress; return the spares (the caller ends them)."""
        self._closed = True
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        starting = list(self._starting)
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        spares, self._ready = self._ready, []
        self._notify()
        return spares


def take_spare(
    pools: Mapping[PoolKey, KernelPool], kt: KernelType, request: LaunchRequest, *, nanny: bool
) -> tuple[KernelPool, RunningKernel, Adaptation | None] | None:
    """Take a ready spare for *request* out of *pools* (a hub's), or ``None``.

    Its own pool's spare first (exact match: no adaptation), else a spare of a pool
    with ``adapt`` that differs only in cwd and env, when :func:`~.adapt.plan` says
    how to adapt it to the request.
    """
    key = PoolKey.of(kt.id, cwd=request.cwd, env=request.env, params=request.params, nanny=nanny)
    pool = pools.get(key)
    spare = pool.take() if pool is not None else None
    if pool is not None and spare is not None:
        return pool, spare, None
    for other in pools.values():
        if not other.adapt or not other.key.same_but_cwd_env(key) or not other.spares:
            continue
        adaptation = plan(
            kt, pool_cwd=other.cwd, pool_env=other.env, cwd=request.cwd, env=request.env
        )
        if adaptation is None:
            continue
        spare = other.take()
        if spare is not None:
            return other, spare, adaptation
    return None
