"""``kernel-hub jupyter install | uninstall | list``, added through ``kernel_hub.cli`` entry points.

This module is imported on every ``kernel-hub`` call, so it imports nothing
heavy at the top: jupyter_client loads only when a jupyter command runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["add_commands"]


def _add_location(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="the user's Jupyter data dir")
    where.add_argument(
        "--sys-prefix", action="store_true", help="this environment (sys.prefix/share/jupyter)"
    )
    where.add_argument("--prefix", metavar="P", help="P/share/jupyter/kernels")


def add_commands(subparsers: Any) -> None:
    """Add ``kernel-hub jupyter install``, ``uninstall`` and ``list``.

    :param subparsers: the ``kernel-hub`` parser's subparsers action.
    """
    p = subparsers.add_parser(
        "jupyter", help="kernelspecs that put kernel_hub types into Jupyter's launchers"
    )
    sub = p.add_subparsers(dest="jupyter_command", required=True, metavar="COMMAND")
    install = sub.add_parser(
        "install",
        help="write one kernelspec per kernel_hub type (updates and prunes earlier ones); "
        "default location: system-wide, as 'jupyter kernelspec install'",
    )
    _add_location(install)
    install.add_argument("--json", action="store_true", help="print JSON")
    install.set_defaults(func=_cmd_install)
    uninstall = sub.add_parser("uninstall", help="remove the kernelspecs 'install' wrote there")
    _add_location(uninstall)
    uninstall.set_defaults(func=_cmd_uninstall)
    ls = sub.add_parser("list", help="the installed kernel_hub kernelspecs on Jupyter's path")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_list)


def _directory(args: argparse.Namespace) -> Any:
    from .kernelspecs import kernels_dir

    return kernels_dir(user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix)


async def _cmd_install(args: argparse.Namespace) -> int:
    from kernel_hub import KernelHub

    from .kernelspecs import install

    async with KernelHub() as hub:
        types = await hub.find_kernel_types()
    try:
        report = install(types, _directory(args))
    except (FileExistsError, PermissionError) as exc:
        print(f"kernel-hub jupyter install: {exc}")
        return 1
    if args.json:
        print(json.dumps({k: str(v) if k == "directory" else v for k, v in vars(report).items()}))
        return 0
    print(f"kernelspecs in {report.directory}:")
    for label in ("added", "updated", "unchanged", "removed"):
        for name in getattr(report, label):
            print(f"  {label:9} {name}")
    if not any((report.added, report.updated, report.unchanged, report.removed)):
        print("  (no kernel_hub types besides spec/* ones: nothing to install)")
    return 0


def _cmd_uninstall(args: argparse.Namespace) -> int:
    from .kernelspecs import uninstall

    directory = _directory(args)
    removed = uninstall(directory)
    print(
        f"removed {len(removed)} kernelspec(s) from {directory}"
        + "".join(f"\n  {name}" for name in removed)
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .kernelspecs import installed_specs

    specs = installed_specs()
    if args.json:
        print(json.dumps([{**vars(s), "path": str(s.path)} for s in specs], indent=1))
    elif not specs:
        print("no kernel_hub kernelspecs installed; run 'kernel-hub jupyter install --user'")
    else:
        for spec in specs:
            print(spec)
    return 0
