"""The manager of a kernel in a Slurm job: its nanny, and the job around it.

Requests go to the nanny (:class:`kernel_hub.provider.NannyManager`) on the
ports it registered; Slurm is the fallback and the second witness:

- ``interrupt``/``signal`` fall back to ``scancel --batch --signal`` (the
  dial-back nanny relays SIGINT, SIGUSR1 and SIGUSR2 to the kernel) when the
  nanny does not answer;
- ``kill`` kills the kernel through the nanny and ``scancel``\\ s the job;
- ``wait`` wakes on the nanny's ``kernel_died`` *or* on the job leaving the
  queue (preemption, time limit, node failure), polling ``squeue`` every
  ``watch_interval`` seconds, and :attr:`SlurmKernelManager.exit_reason` says which;
- ``cleanup`` shuts the nanny down, cancels the job and removes its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as _signal
import time
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import KernelHubError, KernelManager, NannyManager

from .cluster import ACTIVE_STATES, LocalRunner, SlurmCLI
from .login import LoginRunner

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .cluster import CommandRunner

__all__ = ["SlurmKernelManager", "describe_end"]

log = logging.getLogger("kernel_hub.slurm")

#: Signals the dial-back nanny relays to the kernel when Slurm sends them to the batch step.
#: Seconds the job's state may lag behind the death of a kernel killed by a signal.
END_GRACE = 5.0

_RELAYED: dict[int, str] = {_signal.SIGINT: "INT", _signal.SIGUSR1: "USR1", _signal.SIGUSR2: "USR2"}


def describe_end(job_id: str, state: str, reason: str, *, name: str, time_limit: str | None) -> str:
    """Return why a kernel's job ended, in one line that names the fix where there is one."""
    where = f"[slurm.{name}]"
    if state == "TIMEOUT" or reason == "TimeLimit":
        limit = f" ({time_limit})" if time_limit else ""
        return (
            f"Slurm job {job_id} reached its time limit{limit}; raise 'time' in {where} "
            "or pass params={'time': ...}"
        )
    if state == "PREEMPTED":
        return f"Slurm job {job_id} was preempted by a higher-priority job"
    if state == "NODE_FAIL":
        return f"Slurm job {job_id} ended because its node failed"
    if state == "OUT_OF_MEMORY":
        return f"Slurm job {job_id} ran out of memory; raise 'mem' in {where}"
    if state == "CANCELLED":
        return f"Slurm job {job_id} was cancelled (scancel)"
    if state:
        return f"Slurm job {job_id} ended ({state}" + (f", {reason})" if reason else ")")
    return f"Slurm job {job_id} left the queue"


def _runner_from_state(state: Mapping[str, Any] | None) -> CommandRunner:
    """Rebuild the runner a kernel was submitted with (from :meth:`CommandRunner.to_state`)."""
    state = state or {"kind": "local"}
    if state.get("kind", "local") == "local":
        return LocalRunner(state.get("env"))
    if state.get("kind") == "ssh":
        return LoginRunner.from_state(state)
    raise KernelHubError(
        f"unknown Slurm command runner {state.get('kind')!r}; is a newer kernel-hub-slurm needed?"
    )


class SlurmKernelManager(KernelManager):
    """Manage a kernel that runs in a Slurm batch job, through its nanny and Slurm's tools.

    :param nanny: the nanny's manager, on the ports the nanny registered.
    :param cli: Slurm's tools, where the job was submitted.
    :param state: the launch state: ``job_id``, ``job_dir``, ``config_name``, ...
    :param emit: ``emit(kind, **data)`` for this kernel's events (or ``None``).
    """

    def __init__(
        self,
        nanny: NannyManager,
        cli: SlurmCLI,
        state: Mapping[str, Any],
        *,
        type_id: str = "",
        emit: Callable[..., None] | None = None,
        tunnels: Any = None,
    ) -> None:
        self.nanny = nanny
        #: The ssh plugin's tunnels to the kernel's node (route = "login"), else ``None``.
        self.tunnels = tunnels
        self.cli = cli
        self.state = dict(state)
        self.type_id = type_id
        self.job_id = str(self.state["job_id"])
        self.job_dir = str(self.state.get("job_dir") or "")
        #: Seconds between ``squeue`` checks in :meth:`wait`.
        self.watch_interval = float(self.state.get("watch_interval") or 30.0)
        self._emit = emit or (lambda kind, **data: None)
        self._exit_reason: str | None = None
        self._job_gone = False
        self._closed = False
        self._purposeful = False
        # A lost and regained SSH link to the login node is news, not a death.
        self._unsubscribe = (
            cli.runner.subscribe(self._on_link)
            if isinstance(cli.runner, LoginRunner)
            else (lambda: None)
        )

    def _on_link(self, kind: str, data: dict[str, Any]) -> None:
        self._emit(kind, job_id=self.job_id, **data)

    @property
    def connection_info(self) -> dict[str, Any]:
        """The connection info clients use (local tunnel ports when the traffic goes via SSH)."""
        return dict(self.nanny.connection_info)

    @classmethod
    async def reattach(
        cls,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        type_id: str = "",
        emit: Callable[..., None] | None = None,
    ) -> SlurmKernelManager:
        """Rebuild the manager of a kernel whose traffic goes through the login node.

        Reconnects to the login node and forwards local ports to the kernel's node again
        (the old local ports where they are free); :attr:`connection_info` has the result.
        """
        runner = _runner_from_state(state.get("runner"))
        if not isinstance(runner, LoginRunner) or not state.get("remote_info"):
            raise KernelHubError(
                f"cannot manage {type_id or 'a Slurm kernel'}: its state has no login node or "
                "remote ports; pass the state that launch or describe() returned"
            )
        preferred = {k: int(v) for k, v in connection_info.items() if k.endswith("_port")}
        try:
            tunnels = await runner.open_tunnels(
                state["remote_info"],
                key=runner.tunnel_key(str(state["job_id"])),
                preferred=preferred,
            )
        except BaseException:
            await runner.close()
            raise
        info = tunnels.connection_info(connection_info)
        return cls.from_state(
            info, state, type_id=type_id, emit=emit, runner=runner, tunnels=tunnels
        )

    @classmethod
    def from_state(
        cls,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        type_id: str = "",
        emit: Callable[..., None] | None = None,
        runner: CommandRunner | None = None,
        tunnels: Any = None,
    ) -> SlurmKernelManager:
        """Rebuild a manager from a launch state or :meth:`describe` (re-attach, any process).

        :param runner: the launch's runner, taken over (default: rebuilt from the state,
            reconnecting to the login node if the job was submitted through one).

        :raises KernelHubError: when *state* lacks the job id.
        """
        if not state.get("job_id"):
            raise KernelHubError(
                f"cannot manage {type_id or 'a Slurm kernel'}: its state has no job_id; pass "
                "the state that launch or describe() returned"
            )
        cli = SlurmCLI(runner or _runner_from_state(state.get("runner")))
        nanny = NannyManager(connection_info, state, type_id=type_id, request_timeout=10.0)
        return cls(nanny, cli, state, type_id=type_id, emit=emit, tunnels=tunnels)

    @property
    def exit_reason(self) -> str | None:
        """Why the kernel ended, once known (time limit, cancelled, its exit status ...)."""
        return self._exit_reason

    def __repr__(self) -> str:
        if self._closed:
            status = "CLOSED"
        elif self._exit_reason is not None:
            status = "ENDED"
        else:
            status = "RUNNING"
        return (
            f"<SlurmKernelManager {self.type_id or '?'} [{status} job={self.job_id} "
            f"node={self.state.get('node')}]>"
        )

    def describe(self) -> dict[str, Any]:
        out = {**self.state, **self.nanny.describe()}
        info = self.nanny.connection_info
        ip = info.get("ip", "127.0.0.1")
        out.update(
            job_id=self.job_id,
            job_dir=self.job_dir,
            nanny=True,
            nanny_endpoints={
                "control": f"tcp://{ip}:{info['nanny_control_port']}",
                "events": f"tcp://{ip}:{info['nanny_events_port']}",
            },
        )
        return out

    @property
    def exit_status(self) -> int | None:
        return self.nanny.exit_status

    # ---- the job ----

    async def _job_active(self) -> bool:
        if self._job_gone:
            return False
        status = await self.cli.status(self.job_id)
        if status is None or not status.active:
            self._job_gone = True
        return not self._job_gone

    async def _explain_end(self, exit_status: int | None) -> str:
        """Say why the kernel ended: the job's end if it has ended, else the kernel's exit."""
        state, reason = "", ""
        # Slurm signals the job's processes before it records why (a cancel, the time
        # limit): a kernel killed by a signal gets a few seconds for the job's state to follow.
        deadline = time.monotonic() + (END_GRACE if exit_status is None or exit_status < 0 else 0)
        while True:
            with contextlib.suppress(Exception):
                state, reason = await self.cli.end_reason(self.job_id)
            if state not in ("RUNNING", "COMPLETING") or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.25)  # polling scontrol: Slurm has no event for it
        name = str(self.state.get("config_name", "?"))
        if not state or state not in ACTIVE_STATES:
            self._job_gone = True  # nothing left to shut down or cancel
        if state and state not in ("RUNNING", "COMPLETING", "CONFIGURING"):
            return describe_end(
                self.job_id, state, reason, name=name, time_limit=self.state.get("time")
            )
        if state in ("RUNNING", "COMPLETING") and reason == "TimeLimit":
            return describe_end(self.job_id, "TIMEOUT", reason, name=name, time_limit=None)
        if not state:
            return describe_end(self.job_id, "", "", name=name, time_limit=None)
        if exit_status is not None and exit_status < 0:
            return f"the kernel in Slurm job {self.job_id} was killed by signal {-exit_status}"
        return f"the kernel in Slurm job {self.job_id} exited with status {exit_status}"

    def _ended(self, reason: str) -> None:
        if self._exit_reason is None:
            self._exit_reason = reason
            if not self._purposeful:
                self._emit("progress", step="ended", job_id=self.job_id, reason=reason)

    # ---- KernelManager ----

    async def is_alive(self) -> bool:
        if self._closed or self._exit_reason is not None:
            return False
        try:
            return await self.nanny.is_alive()
        except KernelHubError:
            # The nanny does not answer: the job's state is the next best witness.
            return await self._job_active()

    async def wait(self) -> int | None:
        """Wait until the kernel ends: the nanny's ``kernel_died``, or the job leaving the queue."""
        if self._exit_reason is not None or self._closed:
            return self.nanny.exit_status
        inner = asyncio.ensure_future(self.nanny.wait())
        try:
            while True:
                await asyncio.wait({inner}, timeout=self.watch_interval)
                if inner.done():
                    status: int | None = None
                    with contextlib.suppress(Exception):
                        status = inner.result()
                    self._ended(await self._explain_end(status))
                    return status
                try:
                    active = await self._job_active()
                except KernelHubError as exc:
                    log.warning("%r: squeue failed (%s); trying again", self, exc)
                    continue
                if not active:
                    self._ended(await self._explain_end(None))
                    return self.nanny.exit_status
        finally:
            if not inner.done():
                inner.cancel()
                with contextlib.suppress(BaseException):
                    await inner

    async def signal(self, signum: int) -> None:
        """Send *signum* to the kernel's process group through the nanny, else through Slurm."""
        try:
            await self.nanny.signal(signum)
        except KernelHubError as exc:
            await self._scancel_signal(signum, exc)

    async def interrupt(self) -> None:
        """SIGINT the kernel through the nanny, else ``scancel --batch --signal=INT``."""
        try:
            await self.nanny.interrupt()
        except KernelHubError as exc:
            await self._scancel_signal(_signal.SIGINT, exc)

    async def _scancel_signal(self, signum: int, why: Exception) -> None:
        name = _RELAYED.get(signum)
        if name is None:
            raise KernelHubError(
                f"{self!r}: the nanny did not take signal {signum} ({why}), and Slurm can "
                f"deliver only {', '.join(sorted(_RELAYED.values()))} to the kernel"
            )
        log.warning("%r: no answer from the nanny (%s); sending SIG%s by scancel", self, why, name)
        if not await self.cli.cancel(self.job_id, signal=name, batch=True):
            raise KernelHubError(f"{self!r}: scancel --signal={name} failed for job {self.job_id}")

    async def restart(self) -> int:
        """Restart the kernel in place, in the same job (same ports and key), through the nanny."""
        pid = await self.nanny.restart()
        self.state["kernel_pid"] = pid
        return pid

    async def kill(self) -> None:
        """Kill the kernel through the nanny and ``scancel`` its job; return once it is gone."""
        if self._closed or self._job_gone:
            return
        self._purposeful = True
        with contextlib.suppress(KernelHubError):
            await self.nanny.kill()
        await self.cli.cancel(self.job_id)
        for _ in range(150):  # up to 30 s
            try:
                if self._closed or not await self._job_active():
                    break
            except KernelHubError:
                # cleanup() ran meanwhile (the hub saw the kernel die) and closed the
                # runner's connection under this squeue: the job is cancelled either way.
                if self._closed:
                    break
                raise
            await asyncio.sleep(0.2)  # polling squeue: Slurm has no event for a job's end
        self._ended(f"Slurm job {self.job_id} was cancelled (killed by kernel_hub)")

    async def cleanup(self) -> None:
        """Shut the nanny down, cancel the job, remove the job's directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._purposeful = True
        with contextlib.suppress(Exception):
            if not self._job_gone:
                await self.nanny.cleanup()
        self.nanny.close()
        with contextlib.suppress(Exception):
            if not self._job_gone:
                await self.cli.cancel(self.job_id)
        if self.job_dir:
            with contextlib.suppress(Exception):
                await self.cli.runner.remove_tree(self.job_dir)
        self._unsubscribe()
        runner = self.cli.runner
        if self.tunnels is not None and isinstance(runner, LoginRunner):
            with contextlib.suppress(Exception):
                await runner.release_tunnels(self.tunnels)
        with contextlib.suppress(Exception):
            await runner.close()

    async def last_output(self, lines: int = 20) -> str:
        text = ""
        with contextlib.suppress(Exception):
            text = await self.nanny.last_output(lines)
        return f"(kernel in Slurm job {self.job_id})\n{text}" if text else ""
