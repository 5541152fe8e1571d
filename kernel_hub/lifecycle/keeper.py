"""StateKeeper: a hub's kernels kept in its state dir, and adopted by the next hub.

The hub (``KernelHub(state_dir=...)``) holds one and calls it at the points of a
kernel's life: :meth:`StateKeeper.outlive` for each launch (taking the dir's
lock), :meth:`StateKeeper.record` when a kernel starts, restarts or is handed
out, :meth:`StateKeeper.adopt` when a new hub takes over. The records
themselves and the lock are :mod:`kernel_hub.lifecycle.state`. :func:`end_record`
ends the kernel of one record and removes what is left of it; ``kernel-hub
stop`` and the reaper's ``expire`` program use it without a state dir of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any, Protocol

from ..contract.types import LaunchRequest, RestartPolicy
from .kernel import RunningKernel, first_line
from .starter import Started
from .state import Owner

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..contract.manager import KernelManager
    from ..contract.types import KernelType, TransportEncryption
    from .starter import Starter
    from .state import Record, StateDir

__all__ = ["Host", "StateKeeper", "end_record"]

log = logging.getLogger("kernel_hub")


class Host(Protocol):
    """What the keeper needs of its hub (``KernelHub``)."""

    @property
    def kernels(self) -> Mapping[str, RunningKernel]: ...

    #: The hub-wide ``transport_encryption`` (for records that predate the field).
    @property
    def transport_encryption(self) -> TransportEncryption: ...

    def emit(self, kind: str, kernel_id: str, type_id: str, **data: Any) -> None: ...

    async def get_kernel_type(self, type_id: str) -> KernelType: ...

    async def manager_for(
        self,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        type_id: str | None = None,
        plugin: str | None = None,
        nanny: bool | None = None,
    ) -> KernelManager | None: ...

    async def attach(
        self,
        type_id: str,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        kernel_id: str | None = None,
        restart: RestartPolicy | bool | None = False,
        plugin: str | None = None,
        nanny: bool | None = None,
        launch_id: str | None = None,
        _request: LaunchRequest | None = None,
        _created: float | None = None,
    ) -> RunningKernel: ...


class StateKeeper:
    """Record a hub's kernels in its state dir, and adopt those an earlier hub left.

    :param host: the hub.
    :param state: its state dir.
    :param grace: seconds its kernels outlive it.
    :param starter: the hub's launch path (to end a recorded kernel politely).
    """

    def __init__(self, host: Host, state: StateDir, grace: float, starter: Starter) -> None:
        self.host = host
        self.state = state
        self.grace = grace
        self._starter = starter
        self._unexpire: Callable[[], None] | None = None
        #: Whether this hub has adopted since it took the lock (adopt() once per lock).
        self.adopted = False

    def __repr__(self) -> str:
        lock = "LOCKED" if self.state.locked else "UNLOCKED"
        return f"<StateKeeper {self.state.path} [{lock} grace={self.grace:g}]>"

    # ---- the lock, and the end of the grace ----

    def outlive(self) -> float:
        """Return ``LaunchRequest.outlive`` for a launch now, taking the dir's lock first."""
        self.claim()
        return self.grace

    def claim(self) -> None:
        """Lock the state dir, and have the reaper end what is left after the grace.

        :raises StateInUse: when another live hub holds it.
        """
        if self.state.locked:
            return
        self.state.lock()
        if self._unexpire is None:
            from ..managers.reaper import reap_on_exit

            me = Owner.me()
            # Runs when this process ends, even by SIGKILL: waits out the grace (or until a
            # new hub adopted every kernel), then ends what this process left.
            command = [sys.executable, "-m", "kernel_hub.cli._state", "expire"]
            command += [str(self.state.path), str(me.pid), me.token or "-", f"{self.grace:g}"]
            self._unexpire = reap_on_exit(command=command)

    def release(self) -> None:
        """Release the lock (the records stay for the next hub)."""
        if not self.state.locked:
            return
        if not self.state.records() and self._unexpire is not None:
            self._unexpire()  # nothing left to expire
            self._unexpire = None
        self.state.unlock()
        self.adopted = False

    # ---- records ----

    def record(self, kernel: RunningKernel, *, pooled: bool = False) -> None:
        """Write *kernel*'s record (its ``describe()``, owner, policy, request) to the dir."""
        from ..managers.procs import process_token
        from .state import Record

        described = kernel.describe()
        local_pids: dict[str, str] = {}
        kernel_groups: dict[str, str] = {}
        kstate = described["state"]
        nanny_pid, kernel_pid = kstate.get("nanny_pid"), kstate.get("kernel_pid")
        if kstate.get("launch_mode") == "nanny" and isinstance(nanny_pid, int):
            local_pids[str(nanny_pid)] = process_token(nanny_pid)
            if isinstance(kernel_pid, int):  # the nanny starts it in a group of its own
                kernel_groups[str(kernel_pid)] = process_token(kernel_pid)
        request = kernel.request
        record = Record(
            kernel=described,
            owner=Owner.me(),
            created=kernel.created,
            grace=self.grace,
            restart=dataclasses.asdict(kernel.restart_policy),
            request={
                "cwd": request.cwd,
                "env": dict(request.env),
                "params": dict(request.params),
                "transport_encryption": request.transport_encryption,
            },
            pooled=pooled,
            local_pids=local_pids,
            kernel_groups=kernel_groups,
        )
        try:
            self.state.write(record)
        except OSError as exc:
            log.warning("could not record %r in %s: %s", kernel, self.state.path, exc)

    def forget(self, kernel_id: str) -> None:
        """Remove the record of a kernel that has ended for good."""
        self.state.remove(kernel_id)

    # ---- adoption ----

    async def adopt(self, timeout: float) -> list[RunningKernel]:
        """Adopt every recorded kernel still running; end and remove the others.

        See :meth:`KernelHub.adopt`.
        """
        self.claim()
        if self.adopted:
            return []
        self.adopted = True
        mine = self.host.kernels
        records = [r for r in self.state.records() if r.kernel_id not in mine]
        results = await asyncio.gather(*(self._adopt_one(r, timeout) for r in records))
        return [k for k in results if k is not None]

    async def _adopt_one(self, record: Record, timeout: float) -> RunningKernel | None:
        previous = record.owner.pid
        why = ""
        if record.pooled:
            why = "a pool's spare that was never handed out"
        elif record.local_processes_gone():
            why = "its process ended while no host ran"
        else:
            try:
                async with asyncio.timeout(timeout):
                    adopted = await self._attach(record)
            except Exception as exc:  # noqa: BLE001 - any failure: it cannot be adopted
                why = first_line(exc)
            else:
                extra = (
                    {"connection_file": record.connection_file} if record.connection_file else {}
                )
                self.host.emit(
                    "adopted", adopted.id, adopted.type_id, previous_owner=previous, **extra
                )
                return adopted
        await end_record(self.host, self._starter, record)
        self.host.emit(
            "cleaned_up", record.kernel_id, record.type_id, reason=why, previous_owner=previous
        )
        return None

    async def _attach(self, record: Record) -> RunningKernel:
        k = record.kernel
        req = record.request
        return await self.host.attach(
            k["type_id"],
            k["connection_info"],
            k["state"],
            kernel_id=record.kernel_id,
            restart=RestartPolicy(**record.restart) if record.restart else False,
            plugin=k.get("plugin") or None,
            nanny=k.get("nanny"),
            launch_id=k.get("launch_id"),
            _request=LaunchRequest(
                kernel_id=record.kernel_id,
                cwd=req.get("cwd"),
                env=req.get("env") or {},
                params=req.get("params") or {},
                outlive=self.grace,
                transport_encryption=req.get(
                    "transport_encryption", self.host.transport_encryption
                ),
            ),
            _created=record.created,
        )


async def end_record(
    host: Host, starter: Starter, record: Record, *, timeout: float = 10.0
) -> bool:
    """End the kernel of a state record (if it still runs) and remove what is left of it.

    See :meth:`KernelHub.end_record`.

    :returns: whether the kernel was still running.
    """
    k = record.kernel
    was_running = False
    if record.local_processes_gone():
        # Its nanny is gone (killed outright): nothing answers. Its kernel may live on (one
        # that does not watch its parent): its group goes if it is still the one recorded.
        record.end_orphans()
        workdir = str((k.get("state") or {}).get("workdir") or "")
        if os.path.basename(workdir).startswith("kernel-hub-nanny-"):
            shutil.rmtree(workdir, ignore_errors=True)
        _unlink(record)
        return False
    try:
        async with asyncio.timeout(timeout):
            manager = await host.manager_for(
                k["connection_info"],
                k["state"],
                type_id=k["type_id"],
                plugin=k.get("plugin") or None,
                nanny=k.get("nanny") or None,
            )
            if manager is not None:
                if await manager.is_alive():
                    was_running = True
                    running = RunningKernel(
                        host,
                        kernel_id=record.kernel_id,
                        kernel_type=await host.get_kernel_type(k["type_id"]),
                        request=LaunchRequest(kernel_id=record.kernel_id),
                        started=Started(k["connection_info"], k["state"], manager),
                        starter=starter,
                        emit=lambda kind, **data: None,
                        on_end=lambda kernel: None,
                    )
                    await running.shutdown(timeout=min(5.0, timeout / 2))
                else:
                    await manager.cleanup()
    except Exception as exc:  # noqa: BLE001 - the record goes anyway; the reason is logged
        log.warning("ending recorded kernel %s: %s", record.kernel_id, first_line(exc))
    _unlink(record)
    return was_running


def _unlink(record: Record) -> None:
    if record.path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.path)
