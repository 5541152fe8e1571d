"""Processes in tests: nannies started as a remote provider would, and what a run left behind."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from ..conformance import execute_output
from ..managers.procs import pid_alive

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..client import AsyncKernelClient
    from ..lifecycle.kernel_client import KernelClient

__all__ = [
    "NannyProcess",
    "children",
    "descendants",
    "processes_running",
    "processes_with_env",
    "spawn_grandchild",
    "start_nanny",
    "wait_gone",
    "wait_pid_gone",
]


class NannyProcess:
    """A nanny started by :func:`start_nanny`; :meth:`stop` leaves nothing behind.

    :param proc: the process started (for ``--daemon``, the parent that exited).
    :param handshake: the nanny's handshake line, decoded.
    """

    def __init__(self, proc: subprocess.Popen[bytes], handshake: dict[str, Any]) -> None:
        self.proc = proc
        self.handshake = handshake
        self.connection_info: dict[str, Any] = handshake["connection_info"]
        self.nanny_pid: int = handshake["nanny_pid"]
        self.workdir: str = handshake["workdir"]
        #: Every kernel pid seen; a test that restarts the kernel appends the new one.
        self.kernel_pids: list[int] = [handshake["kernel_pid"]]

    def __repr__(self) -> str:
        return f"<NannyProcess pid={self.nanny_pid} kernel={self.kernel_pids[-1]}>"

    @property
    def kernel_pid(self) -> int:
        return self.kernel_pids[-1]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the nanny (it kills its kernel), SIGKILL what is left, remove its work dir."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.nanny_pid, signal.SIGTERM)
        if self.proc.pid == self.nanny_pid:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:  # --daemon: not our child; wait for it to go away
            if not wait_pid_gone(self.nanny_pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.nanny_pid, signal.SIGKILL)
            self.proc.wait()
        for pid in self.kernel_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


#: Run in a kernel: starts a sleeping child process of the kernel's own and prints its pid.
_SPAWN_GRANDCHILD = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(p.pid)"
)


async def spawn_grandchild(
    client: AsyncKernelClient | KernelClient, *, timeout: float = 10.0
) -> int:
    """Have the kernel start a sleeping child process of its own; return that child's pid.

    For tests that a kernel's end (shutdown, kill, restart) reaches what it started.

    :param timeout: seconds for the execute request.
    """
    _, printed = await execute_output(client, _SPAWN_GRANDCHILD, timeout=timeout)
    return int(printed)


def children(pid: int) -> list[int]:
    """Return the pids of the live direct children of *pid*."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Return the pids of every live descendant of *pid*, children first (what a tree kill
    reaches)."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(children(child))
    return out


def processes_with_env(entry: str) -> list[int]:
    """Return the live processes (zombies excepted) whose environment holds *entry*.

    What a leak check looks for: every process a test run started carries a
    variable it set (``JPY_PARENT_PID=<pid>``, ``JUPYTER_RUNTIME_DIR=<dir>``),
    whoever its parent is by now. This process itself is never returned.

    :param entry: one ``NAME=value`` item, matched exactly.
    """
    me, needle, found = os.getpid(), entry.encode(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue  # ended while we looked, or not ours to read
        if needle in env and pid_alive(int(name)):
            found.append(int(name))
    return found


def processes_running(needle: str) -> list[tuple[int, str]]:
    """Return ``(pid, command line)`` of every live process whose command line contains *needle*.

    Zombies and this process itself are left out; the command line's arguments
    are joined by spaces.
    """
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # ended while we looked
        if needle in args and pid_alive(int(name)):
            found.append((int(name), args))
    return found


def wait_gone(pids: Iterable[int], timeout: float = 30.0) -> list[int]:
    """Wait up to *timeout* s in all for every process in *pids* to end; return those still alive.

    Woken by a pidfd per process (Linux), not by polling.
    """
    deadline = time.monotonic() + timeout
    return [pid for pid in pids if not wait_pid_gone(pid, max(0.0, deadline - time.monotonic()))]


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait up to *timeout* s for *pid* to end (woken by a pidfd); return whether it did."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            sel.select(timeout)  # readable once the process has exited
        return not pid_alive(pid)
    finally:
        os.close(pidfd)


def start_nanny(
    *args: str,
    python: str = sys.executable,
    stderr: int | IO[bytes] | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> NannyProcess:
    """Run ``python - *args < nanny.py`` as a remote provider would; return after the handshake.

    :param stderr: where the nanny's log goes (default: inherited).
    :raises RuntimeError: when the nanny answers with an error or no handshake in time.
    """
    from ..nanny import __file__ as nanny_file

    with open(nanny_file, "rb") as src:
        proc = subprocess.Popen(
            [python, "-", *args],
            stdin=src,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
            start_new_session=True,  # like over SSH: no terminal signals from the test run
        )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    try:
        handshake = json.loads(line)
    except ValueError:
        handshake = {"error": f"no handshake within {timeout} s (got {line!r})"}
    if "error" in handshake:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise RuntimeError(f"the nanny failed: {handshake['error']}")
    return NannyProcess(proc, handshake)
