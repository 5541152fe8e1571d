"""``kernel-hub docker ...`` subcommands, added through the ``kernel_hub.cli`` entry points.

This module is imported on every ``kernel-hub`` call, so it imports nothing
heavy: docker-py is loaded only when a docker command runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["add_commands"]


def add_commands(subparsers: Any) -> None:
    """Add ``kernel-hub docker prune`` and ``kernel-hub docker ps``.

    :param subparsers: the ``kernel-hub`` parser's subparsers action.
    """
    p = subparsers.add_parser("docker", help="Docker kernels: list or prune kernel containers")
    sub = p.add_subparsers(dest="docker_command", required=True, metavar="COMMAND")

    prune = sub.add_parser(
        "prune", help="remove kernel containers whose owning host process is gone"
    )
    prune.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    prune.add_argument(
        "--all",
        action="store_true",
        dest="all_owners",
        help="remove every kernel container, of live owners and other hosts too",
    )
    prune.add_argument("--json", action="store_true", help="print JSON")
    prune.set_defaults(func=_cmd_prune)

    ps = sub.add_parser("ps", help="list kernel containers with their owners")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.set_defaults(func=_cmd_ps)


def _print(containers: list[Any], *, as_json: bool, empty: str) -> None:
    if as_json:
        print(json.dumps([vars(c) for c in containers], indent=1))
    elif not containers:
        print(empty)
    else:
        for c in containers:
            print(c)


def _cmd_prune(args: argparse.Namespace) -> int:
    from .prune import prune

    removed = prune(dry_run=args.dry_run, all_owners=args.all_owners)
    what = "would remove" if args.dry_run else "removed"
    if not args.json and removed:
        print(f"{what} {len(removed)} kernel container(s):")
    _print(removed, as_json=args.json, empty="no orphaned kernel containers")
    return 0


def _cmd_ps(args: argparse.Namespace) -> int:
    from .prune import kernel_containers

    _print(kernel_containers(), as_json=args.json, empty="no kernel containers")
    return 0
