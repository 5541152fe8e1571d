"""The reaper: remove kernel containers whose owning host process is gone.

Every kernel container carries owner labels (host name, pid, start token; see
:mod:`kernel_hub_docker.owner`). A host process that crashed cannot remove its
containers; :func:`prune` (``kernel-hub docker prune``) does, and the plugin
calls it once per process before its first launch, so a host starting up
reconciles on its own.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from .engine import engine_errors, get_client
from .owner import (
    LABEL_KERNEL_ID,
    LABEL_OUTLIVE,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_TEMP_DIR,
    LABEL_TYPE_ID,
    owner_state,
)

__all__ = ["KernelContainer", "kernel_containers", "prune"]

log = logging.getLogger("kernel_hub.docker")


@dataclass(frozen=True)
class KernelContainer:
    """One kernel container as the reaper sees it."""

    id: str
    name: str
    kernel_id: str
    type_id: str
    owner: str
    owner_state: str
    status: str
    temp_dir: str | None
    #: Made to outlive its owner (a hub with a state dir): left to the core, not pruned.
    outlive: bool = False

    def __str__(self) -> str:
        return (
            f"{self.id[:12]} {self.name} {self.type_id} kernel={self.kernel_id[:8]} "
            f"owner={self.owner} ({self.owner_state}) {self.status}"
        )


def kernel_containers() -> list[KernelContainer]:
    """Return every container a kernel_hub launch made (running or not). Blocking."""
    api = get_client().api
    with engine_errors():
        found = api.containers(all=True, filters={"label": LABEL_KERNEL_ID})
    out = []
    for c in found:
        labels = c.get("Labels") or {}
        out.append(
            KernelContainer(
                id=c["Id"],
                name=(c.get("Names") or ["?"])[0].lstrip("/"),
                kernel_id=labels.get(LABEL_KERNEL_ID, ""),
                type_id=labels.get(LABEL_TYPE_ID, ""),
                owner=f"{labels.get(LABEL_OWNER_HOST, '?')}:{labels.get(LABEL_OWNER_PID, '?')}",
                owner_state=owner_state(labels),
                status=c.get("State", ""),
                temp_dir=labels.get(LABEL_TEMP_DIR),
                outlive=bool(labels.get(LABEL_OUTLIVE)),
            )
        )
    return out


def prune(*, dry_run: bool = False, all_owners: bool = False) -> list[KernelContainer]:
    """Remove kernel containers whose owning process is gone, with their temp dirs. Blocking.

    :param dry_run: only return what would be removed.
    :param all_owners: also remove containers of live owners and of other hosts,
        and those made to outlive their owner (everything kernel_hub started on
        this engine). Without it, a container of a dead owner that was made to
        outlive it (a hub with a state dir) is left to the core: a new hub adopts
        it or ends it after the grace (``kernel-hub stop`` ends it at once).
    :returns: the containers removed (or that would be).
    :raises ~kernel_hub_docker.engine.EngineUnavailable: when the engine does not answer.
    """
    from docker.errors import NotFound

    api = get_client().api
    doomed = [
        c for c in kernel_containers() if all_owners or (c.owner_state == "dead" and not c.outlive)
    ]
    if dry_run:
        return doomed
    for c in doomed:
        log.info("removing kernel container %s", c)
        with engine_errors():
            try:
                api.remove_container(c.id, force=True)
            except NotFound:
                pass
        # Only a directory this plugin made: its name is the proof.
        if c.temp_dir and os.path.basename(c.temp_dir).startswith("kernel-hub-docker-"):
            shutil.rmtree(c.temp_dir, ignore_errors=True)
    return doomed
