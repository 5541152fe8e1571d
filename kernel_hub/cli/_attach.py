"""``kernel-hub attach FILE``: use a kernel another process started, from its connection file."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .terminal import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_TIMEOUT, CommandError

if TYPE_CHECKING:
    import argparse

__all__ = ["cmd_attach"]


def _read_attach_file(path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return ``(connection_info, state, record)`` from a connection file or ``launch --json``."""
    from ..managers.liveness import RECORD_KEY
    from ..wire.connection import read_connection_file

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CommandError.unreadable(
            repr(path),
            exc,
            hint="give the connection file that 'kernel-hub launch' printed (or its --json output)",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("connection_info"), dict):
        info, state = dict(data["connection_info"]), dict(data.get("state") or {})
    else:
        try:
            info, state = dict(read_connection_file(path)), {}
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    record = info.pop(RECORD_KEY, None)
    return info, state, record if isinstance(record, dict) else {}


async def cmd_attach(args: argparse.Namespace) -> int:
    """Attach to a running kernel from its connection file; never shut it down on exit."""
    from ..client import AsyncKernelClient
    from ..hub import KernelHub
    from ..managers.liveness import not_running_reason
    from ..managers.remote import NannyManager, is_nanny_info

    info, state, record = _read_attach_file(args.file)
    nanny = is_nanny_info(info)
    if (args.kill or args.restart) and not nanny:
        raise CommandError(
            f"{args.file} has no nanny ports, so kernel-hub cannot kill or restart its "
            "kernel; start kernels with 'kernel-hub launch --nanny' to control them "
            "from other processes"
        )
    if args.interrupt and not (nanny or args.message):
        raise CommandError(
            f"{args.file} has no nanny ports, so kernel-hub cannot signal its kernel; "
            "add --message if the kernel handles interrupt_request (kernelspec "
            "interrupt_mode 'message'), or start it with 'kernel-hub launch --nanny'"
        )
    probe = args.timeout if args.timeout is not None else args.start_timeout
    reason = await asyncio.to_thread(
        not_running_reason, args.file, info, record, timeout=min(probe, 10.0)
    )
    if reason is not None:
        raise CommandError(reason, EXIT_NOT_RUNNING)
    # Without a type id, only a kernel under a nanny can be managed from here; the hub
    # decides (no plugin is needed for that).
    hub = KernelHub(load_entrypoints=False, config={})
    found = await hub.manager_for(info, state)
    manager = found if isinstance(found, NannyManager) else None
    interrupt_mode = "message" if args.message else "signal"
    client = AsyncKernelClient(
        info, manager=manager, interrupt_mode=interrupt_mode, ready_timeout=probe
    )
    try:
        if manager is not None and (args.kill or args.restart):
            if args.kill:
                await manager.kill()
                print(f"killed (exit status {manager.exit_status})", file=sys.stderr)
            else:
                pid = await manager.restart()
                print(f"restarted (kernel pid {pid})", file=sys.stderr)
            return EXIT_OK
        if args.interrupt:
            await client.connect()
            await client.interrupt(timeout=probe)
            return EXIT_OK
        try:
            async with client:
                if args.code is None:
                    reply = await client.kernel_info(timeout=args.timeout)
                    print(json.dumps(reply.content, indent=1))
                    return EXIT_OK
                reply = await client.execute_interactive(args.code, timeout=args.timeout)
                return EXIT_OK if reply.content.get("status") == "ok" else EXIT_FAILED
        except TimeoutError as exc:
            raise CommandError(
                f"the kernel of {args.file} did not answer in time ({exc}); raise --timeout",
                EXIT_TIMEOUT,
            ) from None
    finally:
        await client.close()
        if manager is not None:
            manager.close()  # only our sockets: the kernel keeps running
