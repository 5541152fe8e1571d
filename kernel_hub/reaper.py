"""The reaper: a host's local kernels, their children and files go when the host goes.

ipykernel already exits when its parent (``JPY_PARENT_PID``) goes away, but it
checks only once a second, kernels of other languages have no such watch, the
subprocesses a kernel started survive it, and the connection files (with their
keys) stay in the runtime dir. So the first local launch of a process starts
one small helper, ``python -I -S -c <REAPER>``, in its own session, and tells it
over a pipe about every kernel's process group and files. Only this process
holds the pipe's write end (the fd is not inheritable), so when the host ends
— even by SIGKILL — the helper reads end-of-file at once, kills every process
group still registered, removes the files and exits. A kernel that was shut
down is unregistered by :meth:`SubprocessManager.cleanup` first.

A child forked *without exec* (``multiprocessing`` with the fork start method)
shares the write end, so the reaper then waits for that child too.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Reaper", "reaper"]

log = logging.getLogger("kernel_hub.reaper")

#: The helper's whole program. It runs as ``python -I -S``, uses only built-in C
#: modules (posix, _signal, sys) and reads a line protocol instead of JSON: no site, no
#: json/os/signal imports, so it starts in ~20 ms and holds ~1.4 MB less RSS (8.5 MB).
#: A line is ``add <pgid> <hex path>...`` or ``remove <pgid>``; paths are hex-encoded
#: bytes (os.fsencode), so any file name survives.
REAPER = r"""
import posix, sys, _signal
_signal.signal(_signal.SIGINT, _signal.SIG_IGN)
groups = {}
for line in sys.stdin.buffer:
    words = line.split()
    try:
        pgid = int(words[1])
        files = [bytes.fromhex(w.decode("ascii")) for w in words[2:]]
    except (IndexError, ValueError):
        continue
    if words[0] == b"add":
        groups[pgid] = files
    else:
        groups.pop(pgid, None)
for pgid, files in groups.items():
    try:
        posix.killpg(pgid, _signal.SIGKILL)
    except OSError:
        pass
    for path in files:
        try:
            posix.unlink(path)
        except OSError:
            pass
"""


def _command(cmd: str, pgid: int, files: Sequence[str] = ()) -> bytes:
    """Encode one line of the helper's protocol (see :data:`REAPER`)."""
    return " ".join([cmd, str(int(pgid)), *(os.fsencode(f).hex() for f in files)]).encode() + b"\n"


class Reaper:
    """The host side: start the helper on first use and keep it informed.

    Thread-safe; a process forked from the host starts its own helper.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0
        self._groups: dict[int, list[str]] = {}

    def __repr__(self) -> str:
        alive = self._proc is not None and self._proc.poll() is None
        state = f"RUNNING pid={self._proc.pid}" if alive and self._proc else "STOPPED"
        return f"<Reaper [{state} groups={len(self._groups)}]>"

    @property
    def pid(self) -> int | None:
        """The helper's pid, if it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def add(self, pgid: int, files: Sequence[str] = ()) -> None:
        """Register a kernel's process group and the files to remove if this process dies."""
        with self._lock:
            if self._owner != os.getpid():
                self._groups.clear()  # a forked child: the parent's kernels are not ours
            self._groups[pgid] = list(files)
            self._send(_command("add", pgid, files))

    def remove(self, pgid: int) -> None:
        """Unregister a process group that has been shut down and cleaned up."""
        with self._lock:
            if self._owner != os.getpid() or self._groups.pop(pgid, None) is None:
                return  # not registered by this process (e.g. re-attached from saved state)
            self._send(_command("remove", pgid))

    def _send(self, line: bytes) -> None:
        for _ in range(2):
            stdin = self._ensure_started()
            try:
                stdin.write(line)
                stdin.flush()
                return
            except OSError:  # the helper was killed: start a new one with every group
                self._discard()
        log.warning("the kernel reaper cannot be reached; kernels may outlive this process")

    def _discard(self) -> None:
        """Forget a dead helper (or one inherited over fork), releasing its pipe."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._owner == os.getpid():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(1)
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()

    def _ensure_started(self) -> IO[bytes]:
        proc = self._proc
        if proc is not None and self._owner == os.getpid() and proc.poll() is None:
            assert proc.stdin is not None
            return proc.stdin
        self._discard()
        proc = subprocess.Popen(
            # -I: no environment, no user site; -S: no site (the venv's packages are
            # not needed, and site's imports would cost RSS in every host).
            [sys.executable, "-I", "-S", "-c", REAPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of signals sent to the host's group
            close_fds=True,
        )
        self._proc, self._owner = proc, os.getpid()
        assert proc.stdin is not None
        for pgid, files in self._groups.items():
            proc.stdin.write(_command("add", pgid, files))
        return proc.stdin

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe, so the helper kills what is still registered, and reap it.

        Registered at exit: a host that exits without shutting its kernels down
        takes them with it, as when it is killed.
        """
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or self._owner != os.getpid():
                return
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_reaper = Reaper()
atexit.register(_reaper.close)


def reaper() -> Reaper:
    """Return this process's :class:`Reaper`."""
    return _reaper
