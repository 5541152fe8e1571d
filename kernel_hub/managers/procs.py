"""Process facts from ``/proc``: is a pid running, and which process is it.

One copy for the whole core and every plugin (the nanny, which must stay one
self-contained file, keeps a twin that ``tests/test_procs.py`` pins to this one).
A pid alone may have been reused; the pair (pid, start time) names one process.
"""

from __future__ import annotations

__all__ = ["boot_id", "pid_alive", "process_group", "process_start", "process_token"]


def _stat_fields(pid: int) -> list[bytes] | None:
    """Return the fields of ``/proc/<pid>/stat`` after the command name, or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name may hold spaces and ")": split after its last ")".
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Return whether process *pid* runs (a zombie counts as gone)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in (b"Z", b"X")  # type: ignore[index]


def process_group(pid: int) -> int | None:
    """Return the process group of *pid* if it runs (a zombie counts as gone), else ``None``."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in (b"Z", b"X") or len(fields) < 3:
        return None
    return int(fields[2])


def process_start(pid: int) -> str:
    """Return when *pid* started (clock ticks since boot, as text), or ``""`` if unknown."""
    fields = _stat_fields(pid)
    return fields[19].decode() if fields and len(fields) > 19 else ""


def boot_id() -> str:
    """Return this boot's id (``/proc/sys/kernel/random/boot_id``), or ``""``."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_token(pid: int) -> str:
    """Return ``"<boot id>/<start time>"`` of *pid*: one process across pid reuse and reboots.

    Empty where ``/proc`` does not tell (then only the pid can be checked).
    """
    start = process_start(pid)
    boot = boot_id() if start else ""
    return f"{boot}/{start}" if boot else ""
