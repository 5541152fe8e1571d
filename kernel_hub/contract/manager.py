"""The KernelManager contract: how the hub watches and controls one kernel."""

from __future__ import annotations

import signal as _signal
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["KernelManager"]


class KernelManager(ABC):
    """Control one running kernel, wherever it runs.

    A provider's ``make_manager`` hook returns one, built from the ``state`` its
    ``launch`` returned; ``describe()`` gives that state back so another process
    can rebuild the manager (re-attach). Every method is a coroutine that must
    not block the event loop, and every method but ``describe`` may be called
    from any event loop (the blocking client uses a private one).
    """

    #: The kernel type id this manager serves, for reprs and messages.
    type_id: str = ""

    @abstractmethod
    async def is_alive(self) -> bool:
        """Return whether the kernel is still running.

        Called by the restarter and by hosts showing state; must be cheap.
        """

    @abstractmethod
    async def wait(self) -> int | None:
        """Wait until the kernel has ended and return its exit status if known.

        Called by the restarter, which awaits it for the kernel's whole life, and
        by ``shutdown`` after the ``shutdown_request``. Implementations wake on
        the event (process exit, container exit, ``kernel_died``), not by polling,
        wherever the platform allows. Negative statuses mean "killed by signal N".
        """

    @abstractmethod
    async def signal(self, signum: int) -> None:
        """Send signal *signum* to the kernel (its whole process group if it has one).

        Called by hosts and by ``interrupt``. A kernel already gone is not an error.
        """

    async def interrupt(self) -> None:
        """Interrupt the kernel's current execution.

        Called by :meth:`AsyncKernelClient.interrupt` when the kernel type's
        ``interrupt_mode`` is ``"signal"``. The default sends SIGINT.
        """
        await self.signal(_signal.SIGINT)

    @abstractmethod
    async def kill(self) -> None:
        """End the kernel at once (SIGKILL or the equivalent), children included.

        Called by ``shutdown`` when the kernel does not exit after a
        ``shutdown_request``, and by hosts. Returns once the kernel is gone.
        """

    @abstractmethod
    async def cleanup(self) -> None:
        """Release what the launch created: connection files, tunnels, containers.

        Called by the hub once the kernel has ended, whether by shutdown, kill
        or death, and before a restart relaunches it. Idempotent.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Return JSON-able state from which ``make_manager`` can rebuild this manager.

        Called by hosts that persist their kernels to re-attach later.
        """

    async def last_output(self, lines: int = 20) -> str:
        """Return the kernel's last lines of its own output (logs), or ``""``.

        Called by the hub to explain a kernel that died during start-up.
        """
        return ""

    async def cpu_seconds(self) -> float | None:
        """Return the CPU time the kernel has used so far, in seconds, or ``None``.

        User plus system time of the kernel's processes (its process group, or
        its container, where it has one), so that a silent computation counts
        as work. Called by the hub's culler once per check to tell an idle
        kernel from a busy one (:class:`~kernel_hub.CullPolicy`); must be cheap.
        ``None`` (the default) means "cannot tell": the culler then goes by
        the kernel's messages only.
        """
        return None

    @property
    def exit_status(self) -> int | None:
        """The exit status once known, else ``None``."""
        return None

    @property
    def exit_reason(self) -> str | None:
        """Why the kernel ended, when the manager knows more than its exit status.

        Read by the restarter for the ``died`` event's ``reason`` (a batch job's
        time limit, a preempted job, a node failure); ``None`` by default.
        """
        return None
