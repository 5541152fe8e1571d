"""Local kernels as child processes: launch them and manage them by process group.

Shared by the ``spec`` and ``ipykernel`` plugins (and usable by any plugin
that starts a local command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as _signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import LaunchError
from ..contract.manager import KernelManager
from ..contract.types import LaunchResult
from ..wire.connection import (
    CHANNELS,
    new_connection_info,
    runtime_dir,
    write_connection_file,
)
from ..wire.curve import curve_for
from ..wire.registration import (
    Registration,
    RegistrationError,
    registration_timeout,
    registration_wanted,
)
from .argv import expand_env, format_argv
from .procs import group_cpu_seconds, pid_alive
from .reaper import reaper

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..contract.types import KernelType, LaunchRequest
    from ..wire.connection import ConnectionInfo

__all__ = ["SubprocessManager", "expand_env", "format_argv", "launch_subprocess"]


async def launch_subprocess(
    kernel_type: KernelType,
    request: LaunchRequest,
    *,
    argv: Sequence[str] | None = None,
    ip: str = "127.0.0.1",
) -> LaunchResult:
    """Start *kernel_type*'s argv as a local child process in its own process group.

    Writes a 0600 connection file with a random key (and CurveZMQ keys, see
    :func:`~kernel_hub.provider.curve_for`) and loopback ports into the
    Jupyter runtime dir (on a relaunch, the ports and key of
    ``request.connection`` where they are free), fills ``{connection_file}``, ``{resource_dir}``,
    ``{prefix}`` and ``{kernel_id}`` in argv (other ``{...}`` stay as they are),
    and sends the kernel's own stdout/stderr (not the user code's output, which
    travels over IOPub) to a private log file whose tail is quoted when the
    kernel dies during start.

    :param argv: the command line to run; defaults to ``kernel_type.argv``.
    :returns: connection info and a state holding pid, connection file and log file.
    :raises LaunchError: when the command cannot be started; nothing is left behind.
    """
    argv = list(argv if argv is not None else kernel_type.argv)
    if not argv:
        raise LaunchError(f"kernel type {kernel_type.id} has an empty argv; nothing to run")
    if request.cwd is not None and not os.path.isdir(request.cwd):  # noqa: ASYNC240 - one stat
        raise LaunchError(
            f"cannot launch {kernel_type.id}: working directory {request.cwd!r} "
            + ("is not a directory" if os.path.exists(request.cwd) else "does not exist")  # noqa: ASYNC240
            + "; give the path of an existing directory as cwd"
        )
    # A relaunch keeps the old process's ports and keys where it can: clients do not notice.
    info = new_connection_info(
        ip=ip,
        kernel_name=kernel_type.name,
        reuse=request.connection,
        curve=curve_for(kernel_type, request),
    )
    # A kernel that speaks the registration handshake binds its own ports and reports them,
    # unless it is given ports it had before (a relaunch): it can take those from a file too.
    registration = _registration(kernel_type, request, info, ip=ip)
    rdir = runtime_dir()
    conn_path = rdir / f"kernel-{request.kernel_id}.json"
    log_file = rdir / f"kernel-{request.kernel_id}.log"
    files = [str(conn_path), str(log_file)]
    # The reaper (see kernel_hub.managers.reaper) runs, and knows of the files and of the spawn in
    # flight, before the first file or process exists: a host killed at any moment of this
    # launch leaves neither a kernel nor a key behind.
    guard = reaper()
    guard.start()
    with guard.spawning(files):
        conn_file = write_connection_file(
            info if registration is None else registration.file_info(info), conn_path
        )
        argv = format_argv(
            argv,
            connection_file=str(conn_file),
            resource_dir=kernel_type.resource_dir or "",
            kernel_id=request.kernel_id,
            prefix=sys.prefix,
        )
        # The type's env may refer to ${VARS} of the caller's env; the caller's values are
        # literal and win (call arguments > kernel-type config > environment).
        env = {**os.environ, **request.env}
        env = {**env, **expand_env(kernel_type.env, env), **request.env}
        # ipykernel exits when this process goes away (its parent poller watches this pid);
        # the reaper does the same for any kernel, its children and files, and finds a kernel
        # still being spawned by this variable.
        env["JPY_PARENT_PID"] = str(os.getpid())
        log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Popen returns once the child is forked (fork+exec, no waiting on it); asyncio's
            # subprocess transport would add a watcher per kernel for nothing: wait() uses a
            # pidfd.
            proc = subprocess.Popen(  # noqa: ASYNC220
                argv,
                cwd=request.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,  # own session and process group; no terminal signals
                close_fds=True,
            )
        except (OSError, ValueError, TypeError) as exc:
            if registration is not None:
                registration.close()
            for path in (conn_file, log_file):
                with contextlib.suppress(OSError):
                    path.unlink()
            if not isinstance(exc, OSError):  # the type's own env or argv cannot be passed on
                raise LaunchError(
                    f"cannot launch {kernel_type.id}: its argv or env cannot be passed to a "
                    f"process ({exc}). Fix the kernel type's definition."
                ) from exc
            raise LaunchError(
                f"cannot launch {kernel_type.id}: running {argv[0]!r} failed "
                f"({exc.strerror or exc}). Check the kernel type's argv and that its program "
                "is installed."
            ) from exc
        finally:
            os.close(log_fd)
        # Should this process die, even by SIGKILL, the reaper kills the group, removes the files.
        guard.add(proc.pid, files)
    state = {
        "pid": proc.pid,
        "pgid": proc.pid,
        "connection_file": str(conn_file),
        "log_file": str(log_file),
        "argv": argv,
    }
    # The manager holds the Popen (it reaps the child); make_manager rebuilds one from
    # state only on re-attach.
    manager = SubprocessManager.from_state(state, type_id=kernel_type.id, popen=proc)
    if registration is not None:
        info = await _register(registration, info, manager, conn_file, request)
    return LaunchResult(connection_info=info, state=state, manager=manager)


def _registration(
    kernel_type: KernelType, request: LaunchRequest, info: Mapping[str, Any], *, ip: str
) -> Registration | None:
    """Return a registration socket for this launch, or ``None`` for a classic one."""
    if not registration_wanted(kernel_type.metadata, request.params):
        return None
    registration_timeout(request.params)  # a bad param fails before anything starts
    old = request.connection or {}
    if old and all(info.get(f"{c}_port") == old.get(f"{c}_port") for c in CHANNELS):
        return None  # a relaunch on the old ports, which are free: given in the file
    return Registration(
        kernel_id=request.kernel_id,
        key=str(info["key"]),
        signature_scheme=info.get("signature_scheme", "hmac-sha256"),
        ip=ip,
        label=f"kernel {kernel_type.id}",
    )


async def _register(
    registration: Registration,
    info: ConnectionInfo,
    manager: SubprocessManager,
    conn_file: Path,
    request: LaunchRequest,
) -> ConnectionInfo:
    """Wait for the kernel's report; return its connection info, rewritten in its file.

    On any failure (or cancellation) the kernel is killed and its files removed.
    """
    try:
        with registration:
            ports = await registration.wait(
                timeout=registration_timeout(request.params), died=manager.wait()
            )
        final: ConnectionInfo = {**info, **ports}  # type: ignore[typeddict-item]
        # The registration file becomes a classic connection file: for clients that read it
        # (jupyter console --existing) and for a restart, which gives the kernel these ports.
        write_connection_file(final, conn_file)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await manager.kill()
        tail = await manager.last_output() if isinstance(exc, RegistrationError) else ""
        await manager.cleanup()
        if isinstance(exc, RegistrationError):
            raise RegistrationError(exc.summary, output=tail) from None
        raise
    return final


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SubprocessManager(KernelManager):
    """Manage a local kernel process and its process group.

    ``wait()`` wakes on a Linux pidfd registered with the running event loop, so
    watching a kernel costs no thread and no polling.

    :param pid: the kernel's process id.
    :param pgid: its process group (signals and kills go to the whole group).
    :param connection_file: removed by :meth:`cleanup`.
    :param log_file: the kernel's own stdout/stderr; removed by :meth:`cleanup`.
    """

    def __init__(
        self,
        pid: int,
        *,
        pgid: int | None = None,
        connection_file: str | None = None,
        log_file: str | None = None,
        argv: Sequence[str] = (),
        type_id: str = "",
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.pid = pid
        self.pgid = pgid
        self.connection_file = connection_file
        self.log_file = log_file
        self.argv = list(argv)
        self.type_id = type_id
        # Our child (launched here): reaped through it. Rebuilt from state: watched by pid.
        self._popen = popen
        self._exit_status: int | None = None
        self._gone = False

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        type_id: str = "",
        popen: subprocess.Popen[bytes] | None = None,
    ) -> SubprocessManager:
        """Rebuild a manager from :meth:`describe` output or a launch state.

        :param popen: the child process, when this process launched it.
        """
        try:
            pid = int(state["pid"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"subprocess kernel state has no valid 'pid': {dict(state)!r}"
            ) from None
        return cls(
            pid,
            pgid=state.get("pgid"),
            connection_file=state.get("connection_file"),
            log_file=state.get("log_file"),
            argv=state.get("argv", ()),
            type_id=type_id,
            popen=popen,
        )

    def __repr__(self) -> str:
        if self._gone:
            status = f"DEAD exit={self._exit_status}"
        else:
            status = "RUNNING" if self._poll() else f"DEAD exit={self._exit_status}"
        return f"<SubprocessManager {self.type_id or '?'} [{status} pid={self.pid}]>"

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "connection_file": self.connection_file,
            "log_file": self.log_file,
            "argv": self.argv,
        }

    @property
    def exit_status(self) -> int | None:
        self._poll()
        return self._exit_status

    def _poll(self) -> bool:
        """Return True while the process runs; reap it if it is our child."""
        if self._gone:
            return False
        if self._popen is not None:
            rc = self._popen.poll()
            if rc is None:
                return True
            self._exit_status = rc
        elif pid_alive(self.pid):  # not our child: a zombie of another manager counts as gone
            return True
        self._gone = True
        return False

    async def is_alive(self) -> bool:
        return self._poll()

    async def cpu_seconds(self) -> float | None:
        """CPU seconds of the kernel's process group, from ``/proc`` (:func:`group_cpu_seconds`)."""
        if not self._poll() or self.pgid is None:
            return None
        return group_cpu_seconds(self.pgid)

    async def wait(self) -> int | None:
        while self._poll():
            try:
                pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                continue  # exited between poll and open; poll again reaps it
            except (AttributeError, OSError):  # no pidfd: old kernel or not Linux
                await asyncio.sleep(0.05)
                continue
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.add_reader(pidfd, _set_done, done)
            try:
                await done
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            if self._popen is not None:
                # pidfd is readable once the child is a zombie; reap without blocking.
                self._popen.poll()
            else:
                # Not our child: it may linger as its parent's zombie, but it has ended.
                self._gone = True
        return self._exit_status

    async def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.pgid:
                os.killpg(self.pgid, signum)
            elif self._poll():
                os.kill(self.pid, signum)

    async def kill(self) -> None:
        await self.signal(_signal.SIGKILL)
        await self.wait()

    async def cleanup(self) -> None:
        if self._poll():
            return  # still running: cleanup is for ended kernels; kill first
        # The leader is gone; grandchildren it left in its group are killed too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.pgid:
                os.killpg(self.pgid, _signal.SIGKILL)
        for path in (self.connection_file, self.log_file):
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        reaper().remove(self.pgid or self.pid)

    async def last_output(self, lines: int = 20) -> str:
        """Return the last *lines* of the kernel's own stdout/stderr, if logged."""
        if not self.log_file:
            return ""
        try:
            text = Path(self.log_file).read_text(errors="replace")  # noqa: ASYNC240 - small, local
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])
