"""Typed lifecycle events a host can subscribe to.

The hub emits one :class:`KernelEvent` per step of a kernel's life; plugins
emit ``progress`` (slow launch steps) and connection events through
:meth:`KernelHub.emit`. Subscribers are called in order, synchronously, on
the hub's loop; one that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EVENT_KINDS", "EventBus", "KernelEvent"]

log = logging.getLogger("kernel_hub.events")

EventKind = Literal[
    "starting",  # the launch hook is about to be called
    "progress",  # a provider reports a slow step: data {"step": ..., "message": ...}
    "ready",  # the kernel answered kernel_info and IOPub
    "died",  # the kernel ended unexpectedly: data {"exit_status": ..., "reason"?: ...}
    "restarting",  # a restart is scheduled: data {"attempt": n, "delay": seconds}
    "restarted",  # the relaunched kernel is ready
    # a relaunched kernel has another endpoint than the process it replaced (a port was
    # taken, or the provider's endpoint moves): data {"transport", "ip", "<channel>_port"
    # for the five channels, "key_changed": bool, "connection_file"?: path}; emitted before
    # "restarted"; the full info (with the key) is kernel.connection_info
    "connection_changed",
    "failed",  # restarts exhausted or a relaunch failed: data {"reason": ...}
    "shutdown",  # the kernel was shut down on purpose
    # the hub's culler is shutting the kernel down (CullPolicy): data {"reason": "idle" |
    # "busy without CPU", "inactive_for": seconds}; "shutdown" follows
    "culled",
    "connection_lost",  # a remote provider lost its link (the kernel may still run)
    "connection_restored",  # ... and got it back
    # a hub with a state_dir took over a kernel recorded by an earlier host:
    # data {"previous_owner": pid, "connection_file"?: path}
    "adopted",
    # a hub with a state_dir found a recorded kernel dead (or could not adopt it) and
    # removed what was left of it: data {"reason": ..., "previous_owner": pid}
    "cleaned_up",
]

EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class KernelEvent:
    """One step in a kernel's life.

    :param kind: one of :data:`EVENT_KINDS`.
    :param kernel_id: the kernel's id.
    :param type_id: the kernel type id.
    :param data: kind-specific details, JSON-able.
    :param time: when it happened (``time.time()``).
    """

    kind: str
    kernel_id: str
    type_id: str
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; use one of {EVENT_KINDS}")

    def describe(self) -> str:
        """Return a one-line human description (used by ``kernel-hub launch``)."""
        details = " ".join(f"{k}={v}" for k, v in self.data.items())
        return f"{self.kind} {self.type_id} {self.kernel_id[:8]}" + (
            f" {details}" if details else ""
        )


Subscriber = Callable[[KernelEvent], Any]


class EventBus:
    """Deliver events to subscribers in emission order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call *callback* with every event from now on; return a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: KernelEvent) -> None:
        """Deliver *event* to every subscriber; one that raises is logged and skipped."""
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, event.kind)
