"""KernelRestarter: watch a running kernel and relaunch it, within limits, when it dies.

One restarter per :class:`~kernel_hub.RunningKernel`, one asyncio task each.
The task awaits ``manager.wait()`` for the kernel's whole life, so a local
kernel costs one pidfd registered with the loop and no polling. When the
kernel dies without being asked to, the restarter emits ``died``, releases
what the dead kernel held, waits the policy's backoff, relaunches the same
kernel type with the same :class:`~kernel_hub.LaunchRequest` and emits
``restarted``; once the policy's limit is spent it emits ``failed`` and the
kernel is dropped from the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..aio import cancel_and_wait
from ..contract.errors import KernelHubError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..contract.manager import KernelManager
    from ..contract.types import RestartPolicy

__all__ = ["KernelRestarter", "RestartBudget", "RestartControl"]

log = logging.getLogger("kernel_hub.restarter")


class RestartBudget:
    """Count restarts within a policy's sliding window: pure logic, clock injectable.

    :param policy: the limit, window and stable-start time to apply.
    :param clock: a monotonic clock in seconds.
    """

    def __init__(
        self, policy: RestartPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._times: deque[float] = deque()

    def __repr__(self) -> str:
        return f"<RestartBudget {self.used}/{self.policy.limit} in {self.policy.window:g} s>"

    @property
    def used(self) -> int:
        """Restarts within the current window."""
        self._prune()
        return len(self._times)

    def _prune(self) -> None:
        now = self._clock()
        while self._times and now - self._times[0] >= self.policy.window:
            self._times.popleft()

    def next_attempt(self) -> int | None:
        """Return the number (1-based) of the next restart, or ``None`` when the limit is spent."""
        used = self.used
        return None if used >= self.policy.limit else used + 1

    def record(self) -> None:
        """Count one restart, now."""
        self._times.append(self._clock())

    def ran_for(self, seconds: float) -> None:
        """Forget past restarts when the kernel stayed up ``stable_after`` seconds or more."""
        if seconds >= self.policy.stable_after:
            self._times.clear()


@dataclass(frozen=True)
class RestartControl:
    """What a restarter may do to the kernel it watches: the whole of its reach.

    The :class:`~kernel_hub.RunningKernel` builds one from its own methods; the
    restarter decides *when*, the kernel performs and owns its status.

    :param label: names the kernel in reprs and logs.
    :param manager: returns the kernel's current manager (it changes on relaunch).
    :param emit: emits a hub event about the kernel: ``emit(kind, **data)``.
    :param died: marks the kernel dead or restarting (the first step after a death).
    :param relaunch: starts the kernel again; raises
        :class:`~kernel_hub.KernelHubError` when that fails.
    :param end: marks the kernel ended for good: ``end(failed=reason_or_None)``.
    """

    label: str
    manager: Callable[[], KernelManager]
    emit: Callable[..., None]
    died: Callable[[], None]
    relaunch: Callable[[], Awaitable[None]]
    end: Callable[..., Any]


class KernelRestarter:
    """Watch a kernel's manager and apply *policy* when the kernel dies unexpectedly.

    Created by every :class:`~kernel_hub.RunningKernel` and started once the
    kernel answers (with restarts disabled it still notices the death, emits
    ``died`` and ends the kernel). :meth:`stop` is called before any purposeful
    shutdown, kill or manual restart, so those never trigger a relaunch.

    :param policy: limit, window, backoff and stable-start time.
    :param control: what the restarter may do to the kernel.
    :param random: the jitter source, a function returning a float in ``[0, 1)``.
    :param clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        policy: RestartPolicy,
        control: RestartControl,
        *,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = control
        self.policy = policy
        self.budget = RestartBudget(policy, clock=clock)
        #: Automatic restarts done over the kernel's whole life.
        self.restarts = 0
        self._random = random
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def __repr__(self) -> str:
        if self._task is None or self._task.done():
            state = "STOPPED"
        else:
            state = "WATCHING" if self.policy.enabled else "WATCHING no-restart"
        return (
            f"<KernelRestarter {self.control.label} "
            f"[{state} restarts={self.budget.used}/{self.policy.limit}]>"
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching the kernel's current manager (on the running loop)."""
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop watching; a death from now on is not restarted. Idempotent.

        A relaunch in progress is cancelled, and the half-started kernel is
        killed by the hub's launch helper.
        """
        self._stopping = True
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        await cancel_and_wait(task)

    async def _run(self) -> None:
        try:
            while not self._stopping:
                manager = self.control.manager()
                up_since = self._clock()
                try:
                    status = await manager.wait()
                except Exception:
                    log.exception("waiting for %r failed; treating the kernel as dead", manager)
                    status = None
                if self._stopping:
                    return
                self.budget.ran_for(self._clock() - up_since)
                if not await self._recover(manager, status):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the restarter of %s failed", self.control.label)
            self.control.end(failed=f"the restarter failed: {exc!r}")

    async def _recover(self, manager: KernelManager, status: int | None) -> bool:
        """Handle one unexpected death; return whether the kernel runs again."""
        control, policy = self.control, self.policy
        control.died()
        # A manager that knows why its kernel ended (a batch job's time limit) says so.
        reason = manager.exit_reason
        control.emit("died", exit_status=status, **({"reason": reason} if reason else {}))
        # Gone for the restarter means gone: a manager that only lost its link is killed.
        with contextlib.suppress(Exception):
            if await manager.is_alive():
                await manager.kill()
        await manager.cleanup()  # before the relaunch, which reuses the connection file name
        if not policy.enabled:
            control.end()
            return False
        error = ""
        while True:
            attempt = self.budget.next_attempt()
            if attempt is None:
                reason = f"{policy.limit} restarts within {policy.window:g} s"
                control.end(failed=reason + (f"; the last one failed: {error}" if error else ""))
                return False
            delay = policy.delay(attempt, random=self._random())
            data = {"attempt": attempt, "delay": round(delay, 3)}
            control.emit("restarting", **data)
            await asyncio.sleep(delay)  # the backoff itself, not a synchronisation
            self.budget.record()
            try:
                await control.relaunch()
            except KernelHubError as exc:
                error = (str(exc).strip().splitlines() or [repr(exc)])[0]
                log.warning("restart %d of %s failed: %s", attempt, control.label, error)
                continue
            self.restarts += 1
            control.emit("restarted", attempt=attempt)
            return True
