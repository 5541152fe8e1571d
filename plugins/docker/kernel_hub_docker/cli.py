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
    """Add ``kernel-hub docker prune``, ``ps`` and ``label``.

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

    label = sub.add_parser(
        "label",
        help="make an existing image a kernel type (adds the org.kernel-hub.kernel label)",
        description="Build a new image FROM IMAGE with the org.kernel-hub.kernel label "
        "(nothing is downloaded) and tag it IMAGE, or --tag.",
    )
    label.add_argument("image", help="the image (name:tag or id); it needs python3 with ipykernel")
    label.add_argument("--name", help="the type's name: docker/NAME (default: the repository)")
    label.add_argument("--display-name", help="the name shown to users")
    label.add_argument("--language", help="the kernel's language (default: python)")
    label.add_argument(
        "--argv",
        help='the kernel command as JSON, e.g. \'["python3", "-m", "ipykernel_launcher", '
        '"-f", "{connection_file}"]\' (default: that)',
    )
    label.add_argument(
        "--supported-encryption",
        choices=["curve", "none"],
        help="curve: the image's kernel speaks CurveZMQ (ipykernel >= 7.4), so its kernels are "
        "encrypted; none: declare nothing. Default: ask the image for its ipykernel version "
        "(one throwaway container with no network)",
    )
    label.add_argument("-t", "--tag", help="tag the labelled image TAG instead of IMAGE")
    label.set_defaults(func=_cmd_label)


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


def _cmd_label(args: argparse.Namespace) -> int:
    from kernel_hub.provider import ConfigError

    from .images import CURVE
    from .labelling import label_image, label_value, require_image

    argv = None
    if args.argv:
        try:
            argv = json.loads(args.argv)
        except ValueError as exc:
            raise ConfigError(f"--argv must be a JSON list of strings ({exc})") from None
    require_image(args.image)
    encryption = args.supported_encryption
    note = ""
    if encryption is None:
        encryption, note = _probe_curve(args.image, argv)
    data = label_value(
        name=args.name,
        display_name=args.display_name,
        language=args.language,
        argv=argv,
        supported_encryption=[CURVE] if encryption == CURVE else None,
    )
    ref = label_image(args.image, data, tag=args.tag)
    name = args.name or ref.rsplit("/", 1)[-1].split(":", 1)[0]
    print(f"{ref} is the kernel type docker/{name}; 'kernel-hub list' shows it")
    if note:
        print(note)
    return 0


def _probe_curve(image: str, argv: Any) -> tuple[str, str]:
    """Return ``("curve" or "none", a line saying why)`` from the image's ipykernel version."""
    from .images import DEFAULT_ARGV
    from .labelling import CURVE_SINCE, ipykernel_version

    python = argv[0] if isinstance(argv, list) and argv and isinstance(argv[0], str) else None
    found = ipykernel_version(image, python=python or DEFAULT_ARGV[0])
    since = ".".join(map(str, CURVE_SINCE))
    if isinstance(found, str):
        return "none", (
            f"CurveZMQ not declared: {found}; if its kernel speaks CurveZMQ (ipykernel >= "
            f"{since}), label it again with --supported-encryption curve"
        )
    text, version = found
    if version >= CURVE_SINCE:
        return "curve", f"ipykernel {text} in the image: CurveZMQ declared (encrypted kernels)"
    return "none", (
        f"ipykernel {text} in the image has no CurveZMQ ({since} or later has): its kernels run "
        "unencrypted"
    )
