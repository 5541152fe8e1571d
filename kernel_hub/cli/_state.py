"""``kernel-hub ps`` and ``stop``: the kernels of every hub state dir of this user here.

Also the program the reaper runs when a hub with a state dir ends
(``python -m kernel_hub.cli._state expire DIR PID TOKEN GRACE``): it waits out the
grace, and ends whatever that process left that no new hub adopted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from ..contract.errors import KernelHubError
from ..lifecycle.state import Owner, Record, StateDir, state_dirs, state_root
from .terminal import EXIT_USAGE, CommandError

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

__all__ = ["cmd_ps", "cmd_stop", "expire"]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _status(record: Record, owner_alive: bool) -> str:
    """``running`` (a live hub owns it), ``spare`` (a spare of a live hub's pool, not handed
    out yet: ``kernel-hub pool``'s), ``orphaned`` (its hub is gone: a new hub on its state
    dir adopts it within the grace, else it ends) or ``dead`` (a recorded local process has
    ended).

    Read from local facts only (pids): nothing is asked of the kernels.
    """
    if record.local_processes_gone():
        return "dead"
    if not owner_alive:
        return "orphaned"
    return "spare" if record.pooled else "running"


def _entries() -> list[tuple[Path, Record, dict[str, Any]]]:
    now = time.time()
    out = []
    for path in state_dirs():
        for record in StateDir(path).records():
            alive = record.owner.alive()
            out.append(
                (
                    path,
                    record,
                    {
                        "kernel_id": record.kernel_id,
                        "type_id": record.type_id,
                        "status": _status(record, alive),
                        "owner_pid": record.owner.pid,
                        "owner_alive": alive,
                        "created": record.created,
                        "age": round(now - record.created, 1),
                        "connection_file": record.connection_file or None,
                        "state_dir": str(path),
                        "grace": record.grace,
                    },
                )
            )
    return out


def cmd_ps(args: argparse.Namespace) -> int:
    """``kernel-hub ps [--json]``."""
    entries = _entries()
    if args.json:
        print(json.dumps([e for _, _, e in entries], indent=1))
        return 0
    if not entries:
        print(f"no recorded kernels (hub state dirs under {state_root()})")
        return 0
    from ._info import print_table

    rows = [
        [
            e["type_id"],
            e["kernel_id"],
            f"{e['owner_pid']} ({'alive' if e['owner_alive'] else 'gone'})",
            e["status"],
            _age(e["age"]),
            e["connection_file"] or "-",
        ]
        for _, _, e in entries
    ]
    print_table(rows, ["TYPE", "ID", "OWNER", "STATUS", "AGE", "CONNECTION FILE"])
    return 0


async def cmd_stop(args: argparse.Namespace) -> int:
    """``kernel-hub stop ID... | --all [--force]``: end recorded kernels, prune stale records."""
    from ..hub import KernelHub

    entries = _entries()
    if args.all:
        chosen = entries
    else:
        if not args.ids:
            raise CommandError("name the kernels to stop (ids from 'kernel-hub ps') or give --all")
        chosen = []
        for wanted in args.ids:
            matches = [e for e in entries if e[1].kernel_id.startswith(wanted)]
            if not matches:
                raise CommandError(
                    f"no recorded kernel {wanted!r}; 'kernel-hub ps' lists them", EXIT_USAGE
                )
            if len(matches) > 1:
                raise CommandError(
                    f"{wanted!r} names {len(matches)} kernels; give more of the id", EXIT_USAGE
                )
            chosen += matches
    skipped = [e for e in chosen if e[2]["owner_alive"] and not args.force]
    todo = [e for e in chosen if e not in skipped]
    hub = KernelHub()

    async def stop(record: Record, entry: dict[str, Any]) -> None:
        if entry["status"] == "dead":
            await hub.end_record(record)
            print(f"pruned {record.type_id} {record.kernel_id} (it had ended)")
        elif await hub.end_record(record):
            print(f"stopped {record.type_id} {record.kernel_id}")
        else:
            print(f"pruned {record.type_id} {record.kernel_id} (it was not running)")

    await asyncio.gather(*(stop(r, e) for _, r, e in todo))
    for _, record, entry in skipped:
        print(
            f"kernel-hub: kept {record.type_id} {record.kernel_id}: its hub (pid "
            f"{entry['owner_pid']}) is alive; shut it down there, or add --force",
            file=sys.stderr,
        )
    if not chosen:
        print("no recorded kernels")
    return 1 if skipped and not args.all else 0


# ---- the reaper's program: end what a dead hub left after its grace ----


def _left(state: StateDir, owner: Owner) -> list[Record]:
    return [r for r in state.records() if r.owner == owner]


def _wait_out(state: StateDir, owner: Owner, grace: float) -> bool:
    """Wait out the grace; return whether *owner* still has records then.

    Until then there is nothing to do but see whether a new hub adopted every
    kernel (it rewrites each record under its own pid), which ends the wait early.
    """
    deadline = time.monotonic() + grace
    while True:
        if not state.path.is_dir() or not _left(state, owner):
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(1.0, left))  # a detached program's own pace, not a test's sync


async def _end_left(state: StateDir, owner: Owner) -> None:
    from ..hub import KernelHub

    hub = KernelHub()
    await asyncio.gather(*(hub.end_record(r) for r in _left(state, owner)))


def expire(argv: list[str]) -> int:
    """``expire DIR PID TOKEN GRACE``: run by the reaper when a hub with a state dir ends.

    After the grace, the kernels that process left and no new hub adopted are
    ended and their records removed, unless a live hub holds the dir (it
    adopts or cleans up itself).
    """
    import socket

    path, pid, token, grace = argv
    owner = Owner(int(pid), "" if token == "-" else token, socket.gethostname())
    state = StateDir(path)
    if not _wait_out(state, owner, float(grace)) or not state.try_lock():
        return 0
    try:
        asyncio.run(_end_left(state, owner))
    except KernelHubError as exc:
        print(f"kernel-hub expire: {exc}", file=sys.stderr)
        return 1
    finally:
        state.unlock()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "expire":
        sys.exit(expire(sys.argv[2:]))
    sys.exit("usage: python -m kernel_hub.cli._state expire DIR PID TOKEN GRACE")
