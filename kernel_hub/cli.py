"""The ``kernel-hub`` command line: list, run, launch, attach, plugins, and plugins' commands.

A plugin adds subcommands through the ``kernel_hub.cli`` entry-point group: each
entry point names a function ``add_commands(subparsers)`` that adds its parsers
and sets ``func`` (called with the parsed args; may return a coroutine) as a
parser default. That keeps the four provider hooks free of CLI concerns, and
the plugin's heavy imports stay inside ``func``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._entrypoints import entry_points
from .errors import KernelHubError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .events import KernelEvent

__all__ = ["CLI_ENTRYPOINT_GROUP", "main"]

#: Entry points of plugin subcommands: ``name = "pkg.module:add_commands"``.
CLI_ENTRYPOINT_GROUP = "kernel_hub.cli"

log = logging.getLogger("kernel_hub.cli")


def _print_progress(event: Any) -> None:
    """Show a provider's slow steps (image pulls, tunnels) on stderr."""
    if event.kind == "progress":
        print(f"kernel-hub: {event.data.get('message', event.describe())}", file=sys.stderr)


def _add_plugin_commands(sub: Any, builtin: set[str]) -> None:
    blocked = {n.strip() for n in os.environ.get("KERNEL_HUB_DISABLE_PLUGINS", "").split(",")}
    for ep in entry_points(CLI_ENTRYPOINT_GROUP):
        if ep.name in builtin or ep.name in blocked:
            continue
        try:
            ep.load()(sub)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            log.warning("kernel-hub: the %r plugin's commands failed to load: %r", ep.name, exc)


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


async def _cmd_list(args: argparse.Namespace) -> int:
    from .hub import KernelHub

    hub = KernelHub()
    types = await hub.find_kernel_types()
    if args.json:
        print(json.dumps([t.to_dict() for t in types], indent=1))
    elif not types:
        print("no kernel types found; install a plugin or a kernelspec (see 'kernel-hub plugins')")
    else:
        _print_table(
            [[t.id, t.provider, t.display_name, t.language] for t in types],
            ["ID", "PROVIDER", "DISPLAY NAME", "LANGUAGE"],
        )
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import HookRelay, make_plugin_manager

    infos = HookRelay(make_plugin_manager()).list_plugins()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=1))
        return 0
    rows = []
    for i in infos:
        what = f"FAILED: {i.error}" if i.error else ", ".join(i.hooks)
        rows.append([i.name, i.distribution or "-", i.version or "-", what])
    _print_table(rows, ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"])
    return 0


async def _cmd_run(args: argparse.Namespace) -> int:
    from .hub import KernelHub

    if args.code is not None:
        code = args.code
    elif args.file is not None:
        code = await asyncio.to_thread(Path(args.file).read_text)
    else:
        code = sys.stdin.read()
    async with KernelHub() as hub:
        hub.events.subscribe(_print_progress)
        kernel = await hub.launch(args.type, cwd=args.cwd)
        async with kernel.client() as client:
            reply = await client.execute_interactive(code, timeout=args.timeout)
    return 0 if reply.content.get("status") == "ok" else 1


async def _cmd_launch(args: argparse.Namespace) -> int:
    from .connection import runtime_dir, write_connection_file
    from .hub import KernelHub
    from .reaper import reap_on_exit

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def on_event(event: KernelEvent) -> None:
        print(event.describe(), file=sys.stderr, flush=True)

    async with KernelHub() as hub:
        unsubscribe = hub.events.subscribe(on_event)
        kernel = await hub.launch(
            args.type, cwd=args.cwd, restart=False if args.no_restart else None
        )
        path = (
            Path(args.connection_file)
            if args.connection_file
            else (runtime_dir() / f"kernel-hub-{kernel.id}.json")
        )

        # The file holds the key: it goes with this process, even one killed by SIGKILL.
        forget_file = reap_on_exit([str(path)])

        def publish() -> None:
            # A restarted kernel has new ports and a new key: rewrite the file, reprint the JSON.
            write_connection_file(kernel.connection_info, path)
            if args.json:
                print(json.dumps({**kernel.describe(), "connection_file": str(path)}), flush=True)

        def on_restart(event: KernelEvent) -> None:
            if event.kernel_id == kernel.id and event.kind == "restarted":
                publish()

        hub.events.subscribe(on_restart)
        publish()
        try:
            if not args.json:
                print(str(path), flush=True)
                print(
                    f"kernel {kernel.type_id} ({kernel.id}) is running; Ctrl-C stops it",
                    file=sys.stderr,
                    flush=True,
                )
            ended = asyncio.ensure_future(kernel.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in (ended, stopped):
                task.cancel()
            # Ended on its own: died without restart, or restarts failed (both printed above).
            return 1 if ended.done() and not ended.cancelled() else 0
        finally:
            path.unlink(missing_ok=True)
            await kernel.shutdown()
            forget_file()
            unsubscribe()


async def _cmd_launch_nanny(args: argparse.Namespace) -> int:
    """``launch --nanny``: ``hub.launch(..., nanny=True)``, then serve until Ctrl-C or death."""
    from .connection import runtime_dir, write_connection_file
    from .hub import KernelHub
    from .reaper import reap_on_exit
    from .remote import NannyManager

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hub = KernelHub()
    kernel = await hub.launch(args.type, cwd=args.cwd, nanny=True, restart=False)
    path = (
        Path(args.connection_file)
        if args.connection_file
        else runtime_dir() / f"kernel-hub-{kernel.id}.json"
    )
    # Killed outright, this process takes its file (the key) and, through SIGTERM, the nanny
    # and kernel along; were the reaper gone too, the nanny's lease would end them.
    nanny_pid = kernel.state.get("nanny_pid")
    forget = reap_on_exit([str(path)], terminate=int(nanny_pid) if nanny_pid else None)
    try:
        if isinstance(kernel.manager, NannyManager):
            # And the nanny removes the file when it ends, however (its lease, if all else is
            # gone).
            with contextlib.suppress(KernelHubError):  # an older nanny: the reaper still does
                await kernel.manager.own_file(str(path))
        write_connection_file(kernel.connection_info, path)
        if args.json:
            print(json.dumps({**kernel.describe(), "connection_file": str(path)}), flush=True)
        else:
            print(str(path), flush=True)
            print(
                f"kernel {kernel.type_id} ({kernel.id}) is running under nanny pid "
                f"{kernel.state.get('nanny_pid')}; Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
        ended = asyncio.ensure_future(kernel.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (ended, stopped):
            task.cancel()
        if stopped.done() and not stopped.cancelled():
            return 0  # the shutdown below: shutdown_request, then the nanny kills what is left
        status = kernel.manager.exit_status
        print(f"kernel {kernel.type_id} died (exit status {status})", file=sys.stderr)
        return 1
    finally:
        await hub.aclose()  # the nanny's shutdown: kernel ended, work dir removed, nanny reaped
        path.unlink(missing_ok=True)
        forget()


def _read_attach_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(connection_info, state)`` from a connection file or ``launch --json`` output."""
    from .connection import read_connection_file

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KernelHubError(f"cannot read {path!r}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("connection_info"), dict):
        return dict(data["connection_info"]), dict(data.get("state") or {})
    try:
        return dict(read_connection_file(path)), {}
    except ValueError as exc:
        raise KernelHubError(str(exc)) from None


async def _cmd_attach(args: argparse.Namespace) -> int:
    """Attach to a running kernel from its connection file; never shut it down on exit."""
    from .client import AsyncKernelClient
    from .hub import KernelHub
    from .remote import NannyManager

    info, state = _read_attach_file(args.file)
    # Without a type id, only a kernel under a nanny can be managed from here; the hub
    # decides (no plugin is needed for that).
    hub = KernelHub(load_entrypoints=False, config={})
    found = await hub.manager_for(info, state)
    manager = found if isinstance(found, NannyManager) else None
    client = AsyncKernelClient(info, manager=manager)
    try:
        if args.kill or args.restart:
            if manager is None:
                raise KernelHubError(
                    f"{args.file} has no nanny ports: --kill and --restart need a kernel "
                    "started with 'kernel-hub launch --nanny'"
                )
            if args.kill:
                await manager.kill()
                print(f"killed (exit status {manager.exit_status})", file=sys.stderr)
            else:
                pid = await manager.restart()
                print(f"restarted (kernel pid {pid})", file=sys.stderr)
            return 0
        if args.interrupt:
            await client.connect()
            await client.interrupt()
            return 0
        async with client:
            if args.code is None:
                reply = await client.kernel_info(timeout=args.timeout)
                print(json.dumps(reply.content, indent=1))
                return 0
            reply = await client.execute_interactive(args.code, timeout=args.timeout)
            return 0 if reply.content.get("status") == "ok" else 1
    finally:
        await client.close()
        if manager is not None:
            manager.close()  # only our sockets: the kernel keeps running


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernel-hub", description="Find, launch and talk to Jupyter kernels through plugins."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
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
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

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

    p = sub.add_parser(
        "attach", help="use a running kernel from its connection file (it keeps running)"
    )
    p.add_argument("file", help="a connection file, or the output of 'launch --json'")
    what = p.add_mutually_exclusive_group()
    what.add_argument("-c", dest="code", metavar="CODE", help="run CODE and print its output")
    what.add_argument("--interrupt", action="store_true", help="interrupt the running code")
    what.add_argument("--kill", action="store_true", help="kill the kernel (nanny only)")
    what.add_argument("--restart", action="store_true", help="restart the kernel (nanny only)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

    _add_plugin_commands(sub, set(sub.choices))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kernel-hub`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="kernel-hub: %(levelname)s: %(message)s")
    commands: dict[str, Any] = {
        "list": _cmd_list,
        "plugins": _cmd_plugins,
        "run": _cmd_run,
        "launch": _cmd_launch,
        "launch-nanny": _cmd_launch_nanny,
        "attach": _cmd_attach,
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
        print(f"kernel-hub: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
