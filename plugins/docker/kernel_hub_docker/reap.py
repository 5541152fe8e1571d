"""Remove the kernel containers of one host process once it has ended, even by SIGKILL.

The first launch of a process registers ``python -m kernel_hub_docker.reap
<pid> <start token>`` with kernel_hub's reaper (:func:`kernel_hub.provider.reap_on_exit`),
before any container exists; the reaper runs it, detached, when the process
ends. It removes every container whose owner labels (see
:mod:`kernel_hub_docker.owner`) name that process, running or only "Created",
with its temp dir, and looks once more a moment later for a container whose
create request was still on its way to the engine when the host died.
:func:`~kernel_hub_docker.prune.prune` (``kernel-hub docker prune``) stays the
catch-all for engines that were down at that moment.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from typing import TYPE_CHECKING

from .owner import (
    LABEL_OUTLIVE,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_OWNER_START,
    LABEL_TEMP_DIR,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["main", "reap_command", "register", "remove_containers_of"]

log = logging.getLogger("kernel_hub.docker")

#: Seconds after the first pass to look again for a container created late.
SECOND_LOOK = 3.0

_registered_pid = 0


def reap_command(pid: int, token: str) -> list[str]:
    """Return the command that removes the containers of process *pid* (*token*: its start)."""
    return [sys.executable, "-m", "kernel_hub_docker.reap", str(pid), token]


def register() -> Callable[[], None] | None:
    """Have the reaper remove this process's containers when it ends; once per process.

    :returns: the unregister function the first time, ``None`` afterwards.
    """
    global _registered_pid
    from kernel_hub.provider import process_token, reap_on_exit

    pid = os.getpid()
    if _registered_pid == pid:
        return None
    _registered_pid = pid
    return reap_on_exit(command=reap_command(pid, process_token(pid)))


def remove_containers_of(pid: int, token: str, host: str) -> list[str]:
    """Remove every kernel container (any state) owned by process *pid* of *host*. Blocking.

    :returns: the ids of the containers removed.
    """
    from docker.errors import NotFound

    from .engine import get_client

    api = get_client().api
    found = api.containers(all=True, filters={"label": f"{LABEL_OWNER_PID}={pid}"})
    removed = []
    for c in found:
        labels = c.get("Labels") or {}
        if labels.get(LABEL_OWNER_HOST) != host or labels.get(LABEL_OWNER_START, "") != token:
            continue  # another process that had the same pid, or another machine
        if labels.get(LABEL_OUTLIVE):
            continue  # it outlives its host on purpose: the core ends it after the grace
        try:
            api.remove_container(c["Id"], force=True)
        except NotFound:
            pass
        removed.append(c["Id"])
        temp_dir = labels.get(LABEL_TEMP_DIR) or ""
        if os.path.basename(temp_dir).startswith("kernel-hub-docker-"):
            shutil.rmtree(temp_dir, ignore_errors=True)
    return removed


def main(argv: list[str] | None = None) -> int:
    """``python -m kernel_hub_docker.reap PID TOKEN``: run by the reaper, not by people."""
    args = sys.argv[1:] if argv is None else argv
    pid, token = int(args[0]), args[1] if len(args) > 1 else ""
    host = socket.gethostname()  # as in the owner labels
    try:
        removed = remove_containers_of(pid, token, host)
        time.sleep(SECOND_LOOK)  # a create request may still have been on its way to the engine
        removed += remove_containers_of(pid, token, host)
    except Exception as exc:  # noqa: BLE001 - nobody reads this; prune is the fallback
        print(f"kernel-hub docker reap: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
