"""EventRecorder: record a hub's lifecycle events and await them in tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..contract.events import KernelEvent
    from ..hub import KernelHub

__all__ = ["EventRecorder"]


class EventRecorder:
    """Record every event of *hub* and wait for particular ones (tests of hosts and plugins).

    :param hub: the hub to subscribe to; :meth:`close` unsubscribes.
    """

    def __init__(self, hub: KernelHub) -> None:
        self.events: list[KernelEvent] = []
        self._waiters: list[tuple[str, str | None, int, asyncio.Future[KernelEvent]]] = []
        self._unsubscribe = hub.events.subscribe(self._on_event)

    def __repr__(self) -> str:
        return f"<EventRecorder events={len(self.events)}>"

    def close(self) -> None:
        """Stop recording."""
        self._unsubscribe()

    def of(self, kernel_id: str | None = None, kind: str | None = None) -> list[KernelEvent]:
        """Return the recorded events, of one kernel and/or one kind."""
        return [
            e
            for e in self.events
            if (kernel_id is None or e.kernel_id == kernel_id) and (kind is None or e.kind == kind)
        ]

    def kinds(self, kernel_id: str | None = None) -> list[str]:
        """Return the kinds of the recorded events (of one kernel), in order."""
        return [e.kind for e in self.of(kernel_id)]

    def _on_event(self, event: KernelEvent) -> None:
        self.events.append(event)
        for kind, kernel_id, count, fut in self._waiters:
            if not fut.done() and len(self.of(kernel_id, kind)) >= count:
                fut.set_result(self.of(kernel_id, kind)[count - 1])

    async def wait_for(
        self, kind: str, kernel_id: str | None = None, *, count: int = 1, timeout: float = 30.0
    ) -> KernelEvent:
        """Return the *count*-th event of *kind* (of *kernel_id*), waiting for it if needed.

        :raises TimeoutError: naming the events seen, after *timeout* seconds.
        """
        seen = self.of(kernel_id, kind)
        if len(seen) >= count:
            return seen[count - 1]
        fut: asyncio.Future[KernelEvent] = asyncio.get_running_loop().create_future()
        entry = (kind, kernel_id, count, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise TimeoutError(
                f"no {kind!r} event #{count} within {timeout} s; seen: {self.kinds(kernel_id)}"
            ) from None
        finally:
            self._waiters.remove(entry)
