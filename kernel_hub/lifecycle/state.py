"""A hub's state dir: one record per kernel, so that kernels outlive their host on purpose.

A :class:`~kernel_hub.KernelHub` made with ``state_dir=`` writes one file per
kernel, ``<kernel id>.json``, holding the kernel's ``describe()``, who owns it
(the host's pid, its start token and host name), when it was made, its
connection file and its grace. Each file is written under a temporary name
(``.<name>.<random>.tmp``, 0600) and renamed over the record, so a reader sees
a whole record or none; readers skip dotfiles. The dir is 0700.

A live hub holds ``.lock`` (an ``fcntl`` lock, with its pid written in the
file): a second hub on the same dir gets :class:`StateInUse` instead of
adopting the same kernels. The lock goes with the process, even on SIGKILL.

State dirs live under :func:`state_root` (``$KERNEL_HUB_STATE_DIR``, else
``$XDG_RUNTIME_DIR/kernel-hub/hubs``, else ``$XDG_STATE_HOME/kernel-hub/hubs/<host>``
with ``XDG_STATE_HOME`` defaulting to ``~/.local/state``); a hub whose dir is
elsewhere leaves a symbolic link there (``ext-<hash>``), so that ``kernel-hub
ps`` finds every hub state of this user on this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

from ..contract.errors import KernelHubError, StateInUse
from ..managers.procs import pid_alive, process_token
from ..wire.connection import write_private_file

__all__ = [
    "DEFAULT_GRACE",
    "STATE_DIR_ENV",
    "Owner",
    "Record",
    "StateDir",
    "default_state_dir",
    "state_dirs",
    "state_root",
]

#: Overrides :func:`state_root` (tests, and hosts that keep state elsewhere).
STATE_DIR_ENV = "KERNEL_HUB_STATE_DIR"
#: Seconds a kernel of a hub with a state dir outlives its host by default.
DEFAULT_GRACE = 300.0
RECORD_VERSION = 1
LOCK_FILE = ".lock"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def state_root() -> Path:
    """Return the folder that holds this user's hub state dirs on this machine (not created).

    ``$KERNEL_HUB_STATE_DIR``; else ``$XDG_RUNTIME_DIR/kernel-hub/hubs`` (a
    per-user tmpfs, emptied at logout or reboot, when no kernel survives
    anyway); else ``$XDG_STATE_HOME/kernel-hub/hubs/<host name>``
    (``~/.local/state`` by default; per host, as a home dir may be shared).
    """
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "kernel-hub" / "hubs"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "kernel-hub" / "hubs" / socket.gethostname()


def default_state_dir(name: str = "default") -> Path:
    """Return the state dir of the hub named *name* under :func:`state_root`.

    :raises ValueError: for a name that is not a plain file name.
    """
    if not _NAME_RE.match(name):
        raise ValueError(
            f"state dir name {name!r} is not usable: use letters, digits, '.', '_' or '-'"
        )
    return state_root() / name


def state_dirs() -> list[Path]:
    """Return every hub state dir under :func:`state_root`, links to dirs elsewhere followed.

    A link whose target is gone is removed.
    """
    root = state_root()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and not os.path.isdir(entry.path):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            continue
        if entry.is_dir():
            found.append(Path(os.path.realpath(entry.path)))
    return found


@dataclasses.dataclass(frozen=True)
class Owner:
    """The process that owns a record: pid, start token and host name."""

    pid: int
    token: str = ""
    host: str = ""

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, process_token(pid), socket.gethostname())

    def alive(self) -> bool:
        """Return whether the owner still runs (``False`` for another machine's: not ours)."""
        if self.host and self.host != socket.gethostname():
            return False
        if not pid_alive(self.pid):
            return False
        return not self.token or process_token(self.pid) == self.token

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Record:
    """One kernel of a hub state dir, as written to ``<kernel id>.json``.

    :param kernel: the kernel's ``describe()`` (``hub.attach(**kernel)`` rebuilds it).
    :param owner: the hub's process.
    :param created: ``time.time()`` of the kernel's launch.
    :param grace: seconds the kernel outlives its owner.
    :param restart: the kernel's restart policy (``RestartPolicy`` fields).
    :param request: the launch request's ``cwd``, ``env``, ``params`` and
        ``transport_encryption`` (for relaunches).
    :param pooled: a pool's spare, not handed out: cleaned up, not adopted.
    :param local_pids: ``pid -> start token`` of local processes whose end means the
        kernel's (a local nanny): a dead one is seen without asking anything.
    :param kernel_groups: ``pid -> start token`` of local kernel processes that lead their
        own process group (a local nanny's kernel): when the nanny is gone, the group is
        killed if its leader is still the process recorded (:meth:`end_orphans`).
    """

    kernel: dict[str, Any]
    owner: Owner
    created: float
    grace: float
    restart: dict[str, Any] = dataclasses.field(default_factory=dict)
    request: dict[str, Any] = dataclasses.field(default_factory=dict)
    pooled: bool = False
    local_pids: dict[str, str] = dataclasses.field(default_factory=dict)
    kernel_groups: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Where the record was read from (not written).
    path: Path | None = None

    @property
    def kernel_id(self) -> str:
        return str(self.kernel["kernel_id"])

    @property
    def type_id(self) -> str:
        return str(self.kernel.get("type_id", ""))

    @property
    def connection_file(self) -> str:
        state = self.kernel.get("state") or {}
        return str(state.get("connection_file") or "")

    def local_processes_gone(self) -> bool:
        """Return whether a recorded local process has ended (so the kernel has)."""
        for pid, token in self.local_pids.items():
            if not pid_alive(int(pid)) or (token and process_token(int(pid)) != token):
                return True
        return False

    def end_orphans(self) -> list[int]:
        """Kill the process group of each recorded kernel whose leader is the recorded process.

        For a kernel whose nanny was killed outright: the kernel runs in a group of
        its own and may outlive it (a kernel that does not watch its parent). A pid
        whose start token differs is another process by now and is left alone.

        :returns: the groups killed.
        """
        killed = []
        for pid, token in self.kernel_groups.items():
            pgid = int(pid)
            if not token or not pid_alive(pgid) or process_token(pgid) != token:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
        return killed

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "kernel": self.kernel,
            "owner": self.owner.to_dict(),
            "type_id": self.type_id,
            "created": self.created,
            "connection_file": self.connection_file,
            "grace": self.grace,
            "restart": self.restart,
            "request": self.request,
            "pooled": self.pooled,
            "local_pids": self.local_pids,
            "kernel_groups": self.kernel_groups,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: Path) -> Record:
        """Rebuild a record; :raises ValueError: when it is not one of ours."""
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise ValueError("not a version 1 kernel_hub state record")
        kernel = data["kernel"]
        if not isinstance(kernel, dict) or not isinstance(kernel.get("kernel_id"), str):
            raise ValueError("the record has no kernel")
        owner = data.get("owner") or {}
        return cls(
            kernel=kernel,
            owner=Owner(int(owner["pid"]), str(owner.get("token", "")), str(owner.get("host", ""))),
            created=float(data.get("created", 0.0)),
            grace=float(data.get("grace", DEFAULT_GRACE)),
            restart=dict(data.get("restart") or {}),
            request=dict(data.get("request") or {}),
            pooled=bool(data.get("pooled", False)),
            local_pids={str(k): str(v) for k, v in (data.get("local_pids") or {}).items()},
            kernel_groups={str(k): str(v) for k, v in (data.get("kernel_groups") or {}).items()},
            path=path,
        )


class StateDir:
    """A hub's state dir: its records and its lock.

    :param path: the folder (created 0700 on first write or lock).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"<StateDir {self.path} [{'LOCKED' if self.locked else 'UNLOCKED'}]>"

    @property
    def locked(self) -> bool:
        """Whether this object holds the dir's lock."""
        return self._lock_fd is not None

    def ensure(self) -> None:
        """Create the dir (0700) and, outside :func:`state_root`, the link that finds it.

        :raises KernelHubError: when the path exists and is not a dir, or is not private.
        """
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise KernelHubError(
                f"state dir {self.path} is not a directory; give the path of a directory "
                "(it is created if missing)"
            ) from None
        st = self.path.stat()
        if st.st_uid != os.getuid():
            raise KernelHubError(
                f"state dir {self.path} belongs to another user; use a dir of your own"
            )
        if st.st_mode & 0o077:
            os.chmod(self.path, 0o700)  # records hold keys: nobody else may list them
        root = state_root()
        if self.path.parent != root.absolute():
            name = "ext-" + hashlib.sha256(os.fsencode(self.path)).hexdigest()[:16]
            link = root / name
            if not link.is_symlink():
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(self.path, target_is_directory=True)

    # ---- the lock ----

    def lock(self, *, create: bool = True) -> None:
        """Take the dir's lock for this hub (held until :meth:`unlock` or the process ends).

        :param create: make the dir (and its link) first; else a missing dir is an error.
        :raises StateInUse: naming the process that holds it.
        """
        if self._lock_fd is not None:
            return
        if create:
            self.ensure()
        path = self.path / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateInUse(
                f"state dir {self.path} is in use by a live hub (pid {holder}); give each hub "
                "its own state_dir, or stop the other hub first"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def try_lock(self) -> bool:
        """Take the lock of an existing dir if it is free; return whether this object holds it."""
        try:
            self.lock(create=False)
        except (StateInUse, OSError):
            return False
        return True

    def unlock(self) -> None:
        """Release the lock (kept records stay for the next hub)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    # ---- records ----

    def record_path(self, kernel_id: str) -> Path:
        return self.path / f"{kernel_id}.json"

    def write(self, record: Record) -> Path:
        """Write *record* atomically (a temp file, 0600, renamed over the record)."""
        self.ensure()
        path = self.record_path(record.kernel_id)
        return write_private_file(path, json.dumps(record.to_json(), indent=1).encode())

    def remove(self, kernel_id: str) -> None:
        """Remove the record of *kernel_id* (no error if there is none)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record_path(kernel_id))

    def records(self) -> list[Record]:
        """Return the dir's records, oldest first; unreadable files are skipped.

        Temp files of writers that died mid-write are removed when this process
        holds the lock (nobody else writes then).
        """
        out = []
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return []
        for entry in entries:
            if entry.name.startswith("."):
                if self.locked and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                continue
            if not entry.name.endswith(".json"):
                continue
            try:
                with open(entry.path, "rb") as f:
                    data = json.loads(f.read())
                out.append(Record.from_json(data, path=Path(entry.path)))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        out.sort(key=lambda r: (r.created, r.kernel_id))
        return out
