"""KernelRestarter: the restart policy of one kernel, applied; pure logic.

A :class:`~kernel_hub.RunningKernel` watches its own process and, when it dies
unexpectedly, asks its restarter whether to launch it again and after what
delay (:meth:`KernelRestarter.decide`). The restarter counts restarts within
the policy's window (:class:`RestartBudget`) and computes the backoff; it
neither waits nor starts anything, so it is tested with a fake clock.
"""

from __future__ import annotations

import random as _random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..contract.types import RestartPolicy

__all__ = ["KernelRestarter", "Restart", "RestartBudget"]


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
class Restart:
    """A relaunch the policy allows: its number (1-based) in the window and the delay before it."""

    attempt: int
    delay: float


class KernelRestarter:
    """Decide whether, and after what delay, a kernel that died is launched again.

    Pure policy: it starts, waits for and touches nothing. Its
    :class:`~kernel_hub.RunningKernel` runs the one watch-and-relaunch loop and
    asks :meth:`decide` after each unexpected death and after each relaunch
    that failed.

    :param policy: limit, window, backoff and stable-start time.
    :param label: names the kernel in the repr.
    :param random: the jitter source, a function returning a float in ``[0, 1)``.
    :param clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        policy: RestartPolicy,
        *,
        label: str = "",
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.label = label
        self.budget = RestartBudget(policy, clock=clock)
        #: Automatic restarts that brought the kernel back, over its whole life.
        self.restarts = 0
        #: Whether the kernel is watched now (set by its kernel, shown in the repr).
        self.watching = False
        self._random = random

    def __repr__(self) -> str:
        if not self.watching:
            state = "STOPPED"
        else:
            state = "WATCHING" if self.policy.enabled else "WATCHING no-restart"
        return (
            f"<KernelRestarter {self.label} "
            f"[{state} restarts={self.budget.used}/{self.policy.limit}]>"
        )

    def decide(self, ran_for: float | None) -> Restart | None:
        """Return the next relaunch the policy allows, or ``None``: no restart.

        Called by the kernel after an unexpected death, with *ran_for* the seconds
        the process was up (a stable run gives the budget back), and again with
        ``None`` after a relaunch that failed. The relaunch is counted now.
        """
        if ran_for is not None:
            self.budget.ran_for(ran_for)
        if not self.policy.enabled:
            return None
        attempt = self.budget.next_attempt()
        if attempt is None:
            return None
        self.budget.record()
        return Restart(attempt, self.policy.delay(attempt, random=self._random()))

    def why_not(self) -> str:
        """Say why :meth:`decide` gave no restart (for the ``failed`` event and clients)."""
        if not self.policy.enabled:
            return "its restart policy is off"
        return f"{self.policy.limit} restarts within {self.policy.window:g} s"
