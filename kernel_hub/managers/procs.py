"""Process facts from ``/proc``: is a pid running, and which process is it.

One copy for the whole core and every plugin (the nanny, which must stay one
self-contained file, keeps a twin that ``tests/test_procs.py`` pins to this one).
A pid alone may have been reused; the pair (pid, start time) names one process.
"""

from __future__ import annotations

import os
import time

__all__ = [
    "boot_id",
    "group_cpu_seconds",
    "pid_alive",
    "process_group",
    "process_start",
    "process_token",
]

#: Seconds one scan of ``/proc`` serves :func:`group_cpu_seconds` for.
CPU_SNAPSHOT_AGE = 1.0
_cpu_snapshot: tuple[float, dict[int, int]] = (-CPU_SNAPSHOT_AGE, {})


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


def _scan_group_ticks() -> dict[int, int]:
    """Return process group -> CPU clock ticks (user + system, own and reaped children)."""
    ticks: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if not fields or len(fields) < 15 or fields[0] in (b"Z", b"X"):
            continue
        group = int(fields[2])
        # utime, stime, cutime, cstime: fields 14-17 of stat(5), 11-14 after the name.
        ticks[group] = ticks.get(group, 0) + sum(int(v) for v in fields[11:15])
    return ticks


def group_cpu_seconds(group: int) -> float | None:
    """Return the CPU seconds used by the live processes of process group *group*.

    Includes the children they have reaped. One scan of ``/proc`` serves every
    group for :data:`CPU_SNAPSHOT_AGE` seconds, so a hub checking a thousand
    kernels reads ``/proc`` once, not a thousand times. ``None``: no such group.
    """
    global _cpu_snapshot  # one process-wide cache of one scan
    now = time.monotonic()
    taken, ticks = _cpu_snapshot
    if now - taken >= CPU_SNAPSHOT_AGE:
        ticks = _scan_group_ticks()
        _cpu_snapshot = (now, ticks)
    if group not in ticks:
        return None
    return ticks[group] / os.sysconf("SC_CLK_TCK")
