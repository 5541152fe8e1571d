"""Who owns a kernel container: labels written at launch, and the test the reaper applies.

A container is labelled with the launching process's host name, pid and a
start token (the boot id and the process's start time in clock ticks, from
``/proc``), so that a reused pid is not mistaken for the owner.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import TYPE_CHECKING, Literal

from kernel_hub.provider import process_token

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "LABEL_KERNEL_ID",
    "LABEL_OWNER_HOST",
    "LABEL_OWNER_PID",
    "LABEL_OUTLIVE",
    "LABEL_OWNER_START",
    "LABEL_TEMP_DIR",
    "LABEL_TYPE_ID",
    "owner_labels",
    "owner_state",
    "process_start_token",
]

LABEL_KERNEL_ID = "org.kernel-hub.kernel-id"
LABEL_TYPE_ID = "org.kernel-hub.type-id"
LABEL_OWNER_HOST = "org.kernel-hub.owner.host"
LABEL_OWNER_PID = "org.kernel-hub.owner.pid"
LABEL_OWNER_START = "org.kernel-hub.owner.start"
LABEL_TEMP_DIR = "org.kernel-hub.temp-dir"
#: Seconds the container outlives its owner (``LaunchRequest.outlive``: a hub with a state
#: dir). The owner's death does not remove it: the core ends it after that grace unless a
#: new hub adopted it, so the reaper and ``prune`` leave it alone.
LABEL_OUTLIVE = "org.kernel-hub.outlive"

OwnerState = Literal["alive", "dead", "unknown"]


def process_start_token(pid: int) -> str:
    """Return ``"<boot id>/<start time>"`` of process *pid*, or ``""`` if it is unknown.

    The pair identifies one process across pid reuse (Linux ``/proc``); elsewhere
    it is empty and only the pid is checked.
    """
    return process_token(pid)


@functools.cache
def _hostname() -> str:
    return socket.gethostname()


def owner_labels() -> dict[str, str]:
    """Return the owner labels naming this process."""
    pid = os.getpid()
    return {
        LABEL_OWNER_HOST: _hostname(),
        LABEL_OWNER_PID: str(pid),
        LABEL_OWNER_START: process_start_token(pid),
    }


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_state(labels: Mapping[str, str]) -> OwnerState:
    """Return whether the process named by a container's owner labels still runs.

    ``"unknown"`` when the owner is on another host or the labels are missing
    (such containers are left alone unless the caller says otherwise).
    """
    host = labels.get(LABEL_OWNER_HOST)
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return "unknown"
    if host != _hostname():
        return "unknown"
    if not _pid_exists(pid):
        return "dead"
    token = labels.get(LABEL_OWNER_START, "")
    if token and token != process_start_token(pid):
        return "dead"  # the pid was reused by another process
    return "alive"
