"""Signals for a kernel that is starting: held until it answers, then delivered.

A signal that reaches a kernel before it has set up its handlers ends it: a
SIGINT while ipykernel still imports its modules is a ``KeyboardInterrupt``
that kills the process (exit status -2). jupyter_client sends one that way when
a frontend interrupts a kernel that has not answered yet. So while a launch
waits for the kernel's first answer, its :class:`SignalHold` keeps interrupts
and other signals back, and the launch path delivers them once the kernel has
answered, or drops them (with a log line that says why) when the start fails.

Signals whose purpose is to end the process (:data:`ENDING`) are never held.
"""

from __future__ import annotations

import logging
import signal as _signal
from typing import TYPE_CHECKING

from ..contract.errors import KernelDied

if TYPE_CHECKING:
    from ..contract.manager import KernelManager

__all__ = ["ENDING", "SignalHold", "send_signal", "signal_name"]

log = logging.getLogger("kernel_hub")

#: Signals delivered at once, even to a kernel that is starting: they are meant to end it.
ENDING = frozenset({_signal.SIGTERM, _signal.SIGKILL, _signal.SIGQUIT, _signal.SIGHUP})


def signal_name(signum: int) -> str:
    """Return ``SIGINT`` for 2 (the number itself for an unknown signal)."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


async def send_signal(manager: KernelManager, signum: int) -> None:
    """Send *signum* through *manager*: SIGINT as its ``interrupt()`` (a nanny's is its own)."""
    if signum == _signal.SIGINT:
        await manager.interrupt()
    else:
        await manager.signal(signum)


class SignalHold:
    """The signals sent to one launched process before it answered.

    Made by the launch path for each launch, handed out with the launched kernel
    (``Started.signal``, ``Started.interrupt``), released by :meth:`ready` once the
    kernel answers, or by :meth:`ended` when the start fails. Its methods may be
    awaited on any loop (a manager's are).

    :param manager: the launched process's manager.
    :param label: names the kernel in log lines and errors.
    """

    def __init__(self, manager: KernelManager, *, label: str) -> None:
        self._manager = manager
        self._label = label
        self._state = "STARTING"
        self._held: list[int] = []
        self._why = ""

    def __repr__(self) -> str:
        held = ",".join(signal_name(s) for s in self._held)
        return f"<SignalHold {self._label} [{self._state}{' held=' + held if held else ''}]>"

    @property
    def held(self) -> tuple[int, ...]:
        """The signals waiting for the kernel to answer, in the order they were sent."""
        return tuple(self._held)

    async def signal(self, signum: int) -> bool:
        """Send *signum* now if the kernel has answered (or it is in :data:`ENDING`), else hold it.

        The same signal held twice is delivered once.

        :returns: whether it was sent now.
        :raises KernelDied: when the start has already failed (nothing to deliver to).
        """
        if self._state == "READY" or signum in ENDING:
            await send_signal(self._manager, signum)
            return True
        if self._state == "ENDED":
            raise KernelDied(f"{signal_name(signum)} not delivered to {self._label}: {self._why}")
        if signum not in self._held:
            self._held.append(signum)
            log.info(
                "%s for %s held until it answers (a signal during start-up would end it)",
                signal_name(signum),
                self._label,
            )
        return False

    async def interrupt(self) -> bool:
        """Interrupt the kernel (SIGINT through the manager), held while it starts."""
        return await self.signal(_signal.SIGINT)

    async def ready(self) -> None:
        """The kernel answered: deliver what was held. Called by the launch path."""
        self._state = "READY"
        held, self._held = self._held, []
        for signum in held:
            try:
                await send_signal(self._manager, signum)
            except Exception as exc:  # noqa: BLE001 - a failed delivery must not fail the start
                log.warning(
                    "%s held for %s could not be delivered: %r",
                    signal_name(signum),
                    self._label,
                    exc,
                )
            else:
                log.info(
                    "%s held for %s delivered: it has answered", signal_name(signum), self._label
                )

    def ended(self, why: str) -> None:
        """The start failed (or was stopped): drop what was held, saying *why*."""
        self._state = "ENDED"
        self._why = why
        held, self._held = self._held, []
        for signum in held:
            log.warning("%s held for %s dropped: %s", signal_name(signum), self._label, why)
