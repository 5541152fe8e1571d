"""The ``kernel-hub`` command line: list, run, launch, attach, plugins, and plugins' commands.

A plugin adds subcommands through the ``kernel_hub.cli`` entry-point group: each
entry point names a function ``add_commands(subparsers)`` that adds its parsers
and sets ``func`` (called with the parsed args; may return a coroutine) as a
parser default. That keeps the four provider hooks free of CLI concerns, and
the plugin's heavy imports stay inside ``func``.

This module holds the parser and :func:`main` (exit codes, one-line errors);
the commands live beside it: ``_launch`` (``run``, ``launch``, ``launch
--nanny``), ``_pool`` (``pool``, and what ``run`` takes from one), ``_attach``,
``_info`` (``list``, ``plugins``, ``config check``) and ``_state`` (``ps``, ``stop``).
What a person sees (progress, Ctrl-C, exit codes) is :mod:`kernel_hub.cli.terminal`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from ..contract.errors import ConfigError, KernelDied, KernelHubError, LaunchError, NoSuchKernelType
from ..plugins.entrypoints import entry_points
from ._attach import cmd_attach
from ._info import cmd_config, cmd_list, cmd_plugins
from ._launch import START_TIMEOUT, cmd_launch, cmd_launch_nanny, cmd_run
from ._pool import DEFAULT_GRACE, cmd_pool
from ._state import cmd_ps, cmd_stop
from .terminal import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    CommandError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CLI_ENTRYPOINT_GROUP", "main"]

#: Entry points of plugin subcommands: ``name = "pkg.module:add_commands"``.
CLI_ENTRYPOINT_GROUP = "kernel_hub.cli"

log = logging.getLogger("kernel_hub.cli")


def _add_plugin_commands(sub: Any, builtin: set[str]) -> None:
    blocked = {n.strip() for n in os.environ.get("KERNEL_HUB_DISABLE_PLUGINS", "").split(",")}
    for ep in entry_points(CLI_ENTRYPOINT_GROUP):
        if ep.name in builtin or ep.name in blocked:
            continue
        try:
            ep.load()(sub)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            log.warning("kernel-hub: the %r plugin's commands failed to load: %r", ep.name, exc)


class _Parser(argparse.ArgumentParser):
    """An argument parser that remembers which (sub)command parser read the arguments.

    argparse reports an unknown option of a subcommand with the top-level usage;
    :func:`main` uses the remembered parser to show the subcommand's instead.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if not hasattr(ns, "kh_parser"):  # the innermost subcommand's parser sets it first
            ns.kh_parser = self
        return ns, extras


def _timeouts(p: argparse.ArgumentParser, timeout: str | None = None) -> None:
    """Add ``--start-timeout``, and ``--timeout`` (no default) with help *timeout* if given."""
    if timeout is not None:
        p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help=timeout)
    p.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT,
        metavar="SECONDS",
        help=f"give up when the kernel has not answered within SECONDS (default {START_TIMEOUT:g})",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kernel-hub",
        description="Find, launch and talk to Jupyter kernels through plugins.",
        epilog="Exit codes: 0 ok, 1 the code raised or the kernel ended, 2 usage or config "
        "error, 3 kernel not started or not running, 4 timed out, 130 interrupted.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more, show tracebacks (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the kernel types of all installed plugins")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("plugins", help="list installed plugins, their versions and hooks")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("run", help="launch a kernel, run code, print its output, shut it down")
    p.add_argument("type", nargs="?", default=None, help="kernel type id (default: this Python)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("-c", dest="code", metavar="CODE", help="the code to run")
    src.add_argument("-f", "--file", metavar="FILE", help="a file of code to run (default: stdin)")
    p.add_argument("--cwd", help="the kernel's working directory")
    p.add_argument(
        "--no-pool",
        action="store_true",
        help="start a kernel even when a 'kernel-hub pool' serves this type",
    )
    _timeouts(p, "stop the kernel when the code has not finished within SECONDS (default: wait)")

    p = sub.add_parser("launch", help="start a kernel and keep it running until Ctrl-C/SIGTERM")
    p.add_argument("type", nargs="?", default=None, help="kernel type id (default: this Python)")
    p.add_argument("--json", action="store_true", help="print the connection info as JSON")
    p.add_argument("--cwd", help="the kernel's working directory")
    p.add_argument("--connection-file", help="where to write the connection file")
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="do not restart the kernel when it dies (default: the kernel type's restart policy)",
    )
    p.add_argument(
        "--nanny",
        action="store_true",
        help="run the kernel under a nanny; the connection info gains nanny ports, so other "
        "processes can interrupt, restart and kill it ('kernel-hub attach')",
    )
    p.add_argument(
        "--transport-encryption",
        choices=("disabled", "auto", "required"),
        default=None,
        help="CurveZMQ for the kernel's sockets (default: the config's [transport] "
        "encryption, else disabled: jupyter console and qtconsole, which read the file, "
        "cannot speak it yet; 'auto': where the kernel can)",
    )
    _timeouts(p)

    p = sub.add_parser(
        "pool",
        help="keep ready kernels of TYPE that 'kernel-hub run' takes, until Ctrl-C/SIGTERM",
    )
    p.add_argument("type", help="kernel type id")
    p.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        metavar="N",
        help='how many ready kernels to keep (default: the config\'s [pool."TYPE"] size, else 1)',
    )
    p.add_argument("--cwd", help="the kernels' working directory (default: this one)")
    p.add_argument(
        "--grace",
        type=_positive_float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="how long a spare outlives this process when it is killed outright, and how "
        f"long a taker has to attach a kernel handed to it (default {DEFAULT_GRACE:g})",
    )
    _timeouts(p)

    p = sub.add_parser(
        "attach", help="use a running kernel from its connection file (it keeps running)"
    )
    p.add_argument("file", help="a connection file, or the output of 'launch --json'")
    what = p.add_mutually_exclusive_group()
    what.add_argument("-c", dest="code", metavar="CODE", help="run CODE and print its output")
    what.add_argument("--interrupt", action="store_true", help="interrupt the running code")
    what.add_argument("--kill", action="store_true", help="kill the kernel (nanny only)")
    what.add_argument("--restart", action="store_true", help="restart the kernel (nanny only)")
    p.add_argument(
        "--message",
        action="store_true",
        help="interrupt with an interrupt_request message (kernels with interrupt_mode "
        "'message'), which needs no nanny",
    )
    _timeouts(p, "give up when the kernel has not answered within SECONDS")

    p = sub.add_parser(
        "ps", help="list the kernels recorded by hubs with a state dir (this user, this machine)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "stop", help="shut down recorded kernels ('ps' lists them); prune stale ones"
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="kernel ids (or unique prefixes)")
    p.add_argument("--all", action="store_true", help="every recorded kernel of a hub that is gone")
    p.add_argument(
        "--force", action="store_true", help="also the kernels of hubs that are still running"
    )

    p = sub.add_parser("config", help="check the config file")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    c = csub.add_parser(
        "check", help="validate every table through its plugin; show effective values and sources"
    )
    c.add_argument("--json", action="store_true", help="print JSON")

    _add_plugin_commands(sub, set(sub.choices))
    return parser


def _report(exc: BaseException, verbose: int) -> None:
    """Print the one error line; a kernel's last output follows it, each line marked ``| ``."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    message = exc.summary if isinstance(exc, LaunchError) else str(exc)
    print(f"kernel-hub: error: {message}", file=sys.stderr)
    output = exc.output if isinstance(exc, LaunchError | CommandError) else ""
    if output:
        lines = "".join(f"  | {line}\n" for line in output.splitlines())
        print(f"kernel-hub: the kernel's last output:\n{lines}", end="", file=sys.stderr)


def _exit_status(exc: KernelHubError) -> int:
    if isinstance(exc, CommandError):
        return exc.exit_status
    if isinstance(exc, NoSuchKernelType | ConfigError):
        return EXIT_USAGE
    if isinstance(exc, LaunchError | KernelDied):
        return EXIT_NOT_RUNNING
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kernel-hub`` command; return its exit status (``cli.terminal`` lists them)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        args.kh_parser.error(f"unrecognized arguments: {' '.join(extras)}")
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="kernel-hub: %(levelname)s: %(message)s")
    commands: dict[str, Any] = {
        "list": cmd_list,
        "plugins": cmd_plugins,
        "run": cmd_run,
        "launch": cmd_launch,
        "launch-nanny": cmd_launch_nanny,
        "pool": cmd_pool,
        "attach": cmd_attach,
        "config": cmd_config,
        "ps": cmd_ps,
        "stop": cmd_stop,
    }
    try:
        command = args.command
        if command == "launch" and args.nanny:
            command = "launch-nanny"
        result = (getattr(args, "func", None) or commands[command])(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except KernelHubError as exc:
        _report(exc, args.verbose)
        return _exit_status(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug still ends in one line, unless -v
        _report(exc, args.verbose)
        if not args.verbose:
            print("kernel-hub: this is a bug; run again with -v for the traceback", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
