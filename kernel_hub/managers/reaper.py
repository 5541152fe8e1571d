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

The helper is not a descendant of the host: it forks once more and its first
process exits, so it is adopted by init (or the nearest subreaper). An editor
that kills the host's whole process tree (VS Code closing a window: every
process found through ``/proc/<pid>/task/*/children``) cannot reach it, and it
still cleans up after the tree. The host knows that it has ended by the
end-of-file of a second pipe, the helper's stdout, which only the helper holds.

Besides process groups the helper keeps:

- plain files (:func:`reap_on_exit`): any file that holds a key, e.g. the
  connection file ``kernel-hub launch`` writes; a directory is removed once empty;
- commands (:func:`reap_on_exit` with ``command``): run, detached, when the host
  ends; the Docker plugin removes its containers this way;
- spawns in flight (:meth:`Reaper.spawning`): a kernel being started, whose
  process group is not known until ``Popen`` returns. Should the host die in that
  window, the helper looks for the processes that carry ``JPY_PARENT_PID=<host
  pid>`` (every local kernel gets it) for a moment and kills their groups, so no
  moment of a launch leaves a kernel behind.

A child forked *without exec* (``multiprocessing`` with the fork start method)
shares the write end, so the reaper then waits for that child too.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["Reaper", "reap_on_exit", "reaper"]

log = logging.getLogger("kernel_hub.reaper")

#: The helper's whole program. It runs as ``python -I -S``, uses only built-in C
#: modules (posix, _signal, sys, time) and reads a line protocol instead of JSON: no site,
#: no json/os/signal imports, so it starts in ~20 ms and holds ~1.4 MB less RSS (8.5 MB).
#: A line is ``<verb> <key> <hex word>...``; words are hex-encoded bytes (os.fsencode), so
#: any file name or argument survives. Verbs: ``add`` (key > 0: a process group to kill,
#: words: files; key < 0: files only), ``spawn`` (files of a kernel being started: look for
#: its processes if the host dies now), ``run`` (words: a command to run), ``remove``.
REAPER = r"""
import posix, sys, time, _signal
_signal.signal(_signal.SIGINT, _signal.SIG_IGN)
host = int(sys.argv[1])  # not getppid(): the host may be gone before this line runs
# Out of the host's process tree: the host reaps this first process, init adopts the second.
if posix.fork():
    posix._exit(0)
# The host reads the helper's pid; stdout then stays open, unused, until the helper exits.
posix.write(1, b"%d\n" % posix.getpid())
entries = {}
for line in sys.stdin.buffer:
    words = line.split()
    try:
        key = int(words[1])
        args = [bytes.fromhex(w.decode("ascii")) for w in words[2:]]
    except (IndexError, ValueError):
        continue
    if words[0] == b"remove":
        entries.pop(key, None)
    else:
        entries[key] = (words[0], args)

def scan(marker):
    found = []
    for name in posix.listdir(b"/proc"):
        if name.isdigit():
            try:
                with open(b"/proc/" + name + b"/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                pass
    return found

for key, (verb, args) in entries.items():
    if verb == b"add" and key > 0:
        try:
            posix.killpg(key, _signal.SIGKILL)
        except OSError:
            pass
if any(verb == b"spawn" for verb, _ in entries.values()):
    # A kernel was being started: it may exec a moment after its parent's death.
    marker = b"JPY_PARENT_PID=" + str(host).encode()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for pid in scan(marker):
            try:
                posix.killpg(pid, _signal.SIGKILL)
            except OSError:
                try:
                    posix.kill(pid, _signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.05)
for key, (verb, args) in entries.items():
    if verb in (b"add", b"spawn"):
        for path in args:
            try:
                posix.unlink(path)
            except IsADirectoryError:
                try:
                    posix.rmdir(path)
                except OSError:
                    pass
            except OSError:
                pass
for key, (verb, args) in entries.items():
    if verb == b"run" and args:
        try:
            null = posix.open(b"/dev/null", posix.O_RDWR)
            posix.posix_spawnp(
                args[0], args, posix.environ, setsid=True,
                file_actions=[(posix.POSIX_SPAWN_DUP2, null, 0), (posix.POSIX_SPAWN_DUP2, null, 1),
                              (posix.POSIX_SPAWN_DUP2, null, 2)],
            )
        except OSError:
            pass
"""


def _command(cmd: str, key: int, words: Sequence[str | bytes] = ()) -> bytes:
    """Encode one line of the helper's protocol (see :data:`REAPER`)."""
    return " ".join([cmd, str(int(key)), *(os.fsencode(w).hex() for w in words)]).encode() + b"\n"


class Reaper:
    """The host side: start the helper on first use and keep it informed.

    Thread-safe; a process forked from the host starts its own helper.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._helper: _Helper | None = None
        self._owner = 0
        #: Every registration, as the line that tells a (new) helper about it.
        self._entries: dict[int, bytes] = {}
        self._keys = itertools.count(1)

    def __repr__(self) -> str:
        pid = self.pid
        state = f"RUNNING pid={pid}" if pid is not None else "STOPPED"
        groups = sum(1 for k in self._entries if k > 0)
        return f"<Reaper [{state} groups={groups} other={len(self._entries) - groups}]>"

    @property
    def pid(self) -> int | None:
        """The helper's pid, if it runs."""
        helper = self._helper
        return helper.pid if helper is not None and not helper.wait(0) else None

    def start(self) -> None:
        """Start the helper now, if it does not run yet (a launch calls this before it spawns)."""
        with self._lock:
            self._forked_check()
            for _ in range(2):
                stdin = self._ensure_started()
                try:
                    stdin.flush()
                    return
                except OSError:
                    self._discard()

    def add(self, pgid: int, files: Sequence[str] = ()) -> None:
        """Register a kernel's process group and the files to remove if this process dies."""
        if pgid <= 0:
            raise ValueError(f"not a process group id: {pgid}")
        self._register(pgid, _command("add", pgid, files))

    def add_files(self, files: Sequence[str]) -> int:
        """Register files (a directory is removed if empty) to remove if this process dies.

        :returns: a key for :meth:`remove`.
        """
        key = -next(self._keys)
        self._register(key, _command("add", key, files))
        return key

    def add_command(self, argv: Sequence[str]) -> int:
        """Register a command to run, detached, when this process ends without removing it.

        :returns: a key for :meth:`remove`.
        """
        if not argv:
            raise ValueError("an empty command")
        key = -next(self._keys)
        self._register(key, _command("run", key, argv))
        return key

    @contextlib.contextmanager
    def spawning(self, files: Sequence[str] = ()) -> Iterator[None]:
        """Cover a local kernel's start: register *files* and the spawn in flight.

        Should this process die inside the block, the helper also kills every
        process that carries ``JPY_PARENT_PID=<this pid>`` and appears within a
        second (the kernel being started, whose group is not known yet). Call
        :meth:`add` with the new group inside the block.
        """
        key = -next(self._keys)
        self._register(key, _command("spawn", key, files))
        try:
            yield
        finally:
            self.remove(key)

    def _register(self, key: int, line: bytes) -> None:
        with self._lock:
            self._forked_check()
            self._entries[key] = line
            self._send(line)

    def remove(self, key: int) -> None:
        """Unregister a process group that has been shut down and cleaned up, or a key."""
        with self._lock:
            if self._owner != os.getpid() or self._entries.pop(key, None) is None:
                return  # not registered by this process (e.g. re-attached from saved state)
            self._send(_command("remove", key))

    def _forked_check(self) -> None:
        if self._owner and self._owner != os.getpid():
            self._entries.clear()  # a forked child: the parent's kernels are not ours

    def _send(self, line: bytes) -> None:
        for _ in range(2):
            stdin = self._ensure_started()
            try:
                stdin.write(line)
                stdin.flush()
                return
            except OSError:  # the helper was killed: start a new one with every entry
                self._discard()
        log.warning("the kernel reaper cannot be reached; kernels may outlive this process")

    def _discard(self) -> None:
        """Forget a dead helper (or one inherited over fork), releasing its pipes."""
        helper, self._helper = self._helper, None
        if helper is None:
            return
        if self._owner == os.getpid():
            helper.kill(1.0)
        helper.release()

    def _ensure_started(self) -> IO[bytes]:
        helper = self._helper
        if helper is not None and self._owner == os.getpid() and not helper.wait(0):
            return helper.stdin
        self._discard()
        helper = _Helper.start()
        self._helper, self._owner = helper, os.getpid()
        for line in self._entries.values():
            helper.stdin.write(line)
        return helper.stdin

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe, so the helper kills what is still registered; wait until it exits.

        Registered at exit: a host that exits without shutting its kernels down
        takes them with it, as when it is killed.
        """
        with self._lock:
            helper, self._helper = self._helper, None
            if helper is None or self._owner != os.getpid():
                return
            with contextlib.suppress(OSError):
                helper.stdin.close()
            if not helper.wait(timeout):
                helper.kill(timeout)
            helper.release()


class _Helper:
    """The running helper, seen from the host: its pid, its command pipe and its exit pipe.

    It is not the host's child (see the module docstring), so it cannot be
    waited for with ``waitpid``: its stdout, which only it holds, reads
    end-of-file when it exits.
    """

    def __init__(self, pid: int, stdin: IO[bytes], exit_fd: int) -> None:
        self.pid = pid
        self.stdin = stdin
        self._exit_fd = exit_fd
        self._exited = False

    @classmethod
    def start(cls) -> _Helper:
        """Start the helper and return once it runs outside this process's tree."""
        proc = subprocess.Popen(
            # -I: no environment, no user site; -S: no site (the venv's packages are
            # not needed, and site's imports would cost RSS in every host).
            [sys.executable, "-I", "-S", "-c", REAPER, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of signals sent to the host's group
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):  # the helper writes its pid at once; EOF: it failed
            chunk = os.read(proc.stdout.fileno(), 32)
            if not chunk:
                break
            line += chunk
        proc.wait()  # the first process, which exits right after its fork
        exit_fd = os.dup(proc.stdout.fileno())  # the Popen object's file is closed below
        proc.stdout.close()
        helper = cls(int(line) if line.strip().isdigit() else 0, proc.stdin, exit_fd)
        if not helper.pid:
            helper._exited = True  # no helper: writes fail, and the caller starts another
        return helper

    def wait(self, timeout: float) -> bool:
        """Return whether the helper has exited, waiting up to *timeout* seconds for it."""
        if not self._exited and select.select([self._exit_fd], [], [], max(0.0, timeout))[0]:
            self._exited = True  # end-of-file: nothing else is ever written there
        return self._exited

    def kill(self, timeout: float) -> None:
        """SIGKILL the helper if it still runs (so its pid is still its own); wait for it."""
        if not self.wait(0):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait(timeout)

    def release(self) -> None:
        """Close this process's ends of both pipes."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        if self._exit_fd >= 0:
            os.close(self._exit_fd)
        self._exit_fd = -1
        self._exited = True


_reaper = Reaper()
atexit.register(_reaper.close)


def reaper() -> Reaper:
    """Return this process's :class:`Reaper`."""
    return _reaper


#: Run as ``python -I -S -c _TERMINATE <pid> <start time>``: SIGTERM the process if the pid
#: still names the same one (its start time matches), so a reused pid is never hit.
_TERMINATE = """
import posix, sys
pid, start = int(sys.argv[1]), sys.argv[2]
try:
    with open("/proc/%d/stat" % pid, "rb") as f:
        now = f.read().rsplit(b")", 1)[1].split()[19].decode()
except (OSError, IndexError):
    now = ""
if now and now == start:
    posix.kill(pid, 15)
"""


def reap_on_exit(
    files: Sequence[str] = (),
    *,
    command: Sequence[str] | None = None,
    terminate: int | None = None,
) -> Callable[[], None]:
    """Remove *files*, run *command*, SIGTERM *terminate* when this process ends, even by SIGKILL.

    For what a provider leaves outside its kernel's process group: a file that
    holds a key, a container, a nanny. The helper (see the module docstring)
    acts when this process ends without having called the returned function
    first; a directory among *files* is removed if it is empty by then (list its
    files before it). *command* runs detached, in its own session, with this
    process's environment and no stdio; it must not need this process.
    *terminate* is a pid, signalled only if it still names the same process.

    :returns: call it to unregister (the resource was cleaned up in the normal way).
    """
    from .procs import process_start

    keys = []
    if files:
        keys.append(_reaper.add_files([os.fspath(f) for f in files]))
    if command:
        keys.append(_reaper.add_command([os.fspath(a) for a in command]))
    if terminate is not None:
        start = process_start(terminate)
        if start:
            argv = [sys.executable, "-I", "-S", "-c", _TERMINATE, str(terminate), start]
            keys.append(_reaper.add_command(argv))

    def cancel() -> None:
        for key in keys:
            _reaper.remove(key)

    return cancel
