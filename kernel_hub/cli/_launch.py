"""``kernel-hub run`` and ``kernel-hub launch`` (also ``--nanny``): start kernels from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import cancel_and_wait
from ..contract.errors import KernelDied, KernelHubError, LaunchError
from .terminal import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_TIMEOUT,
    CommandError,
    CtrlC,
    Progress,
    stop_on_signals,
)

if TYPE_CHECKING:
    import argparse

    from ..contract.events import KernelEvent
    from ..hub import KernelHub
    from ..lifecycle.kernel import RunningKernel
    from ..lifecycle.kernel_client import KernelClient
    from ..wire.session import Message

__all__ = ["START_TIMEOUT", "cmd_launch", "cmd_launch_nanny", "cmd_run"]

#: Seconds a kernel may take to answer its first ``kernel_info`` (``--start-timeout``).
START_TIMEOUT = 60.0


def _cli_words(exc: LaunchError) -> str:
    """Return *exc*'s one-line message with the Python API's advice put in command-line words."""
    return re.sub(r"raise ready_timeout=(?: \([^)]*\))?", "raise --start-timeout", exc.summary)


async def _launch(
    hub: KernelHub, args: argparse.Namespace, *, progress: bool = True, **kwargs: Any
) -> RunningKernel:
    """Launch ``args.type``, showing progress; failures become one-line command errors."""
    display = Progress()
    unsubscribe = hub.events.subscribe(display.on_event) if progress else lambda: None
    try:
        return await hub.launch(args.type, cwd=args.cwd, ready_timeout=args.start_timeout, **kwargs)
    except LaunchError as exc:
        status = EXIT_TIMEOUT if isinstance(exc.__cause__, TimeoutError) else EXIT_NOT_RUNNING
        raise CommandError(_cli_words(exc), status, output=exc.output) from exc
    finally:
        unsubscribe()
        display.close()


async def _take_or_launch(hub: KernelHub, args: argparse.Namespace) -> RunningKernel:
    """A ready kernel from the pool for ``args.type`` if one serves this request, else a launch."""
    if not args.no_pool:
        from ._pool import take_from_pool

        kernel = await take_from_pool(hub, args.type, cwd=args.cwd)
        if kernel is not None:
            return kernel
    return await _launch(hub, args)


async def _read_code(args: argparse.Namespace) -> str:
    if args.code is not None:
        return str(args.code)
    if args.file is None:
        return await asyncio.to_thread(sys.stdin.read)
    try:
        return await asyncio.to_thread(Path(args.file).read_text)
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError.unreadable(
            f"the code file {args.file!r}",
            exc,
            hint="give a readable file with -f, or the code itself with -c",
        ) from None


async def cmd_run(args: argparse.Namespace) -> int:
    """Launch (or take from a pool), run the code like a console, shut down.

    Ctrl-C interrupts, twice stops.
    """
    from ..hub import KernelHub

    code = await _read_code(args)
    async with KernelHub() as hub:
        launching = asyncio.ensure_future(_take_or_launch(hub, args))
        run = _CodeRun(launching)
        # One handler from the start to the end: a press while the client connects is not
        # left to Python's default handler (a traceback).
        with CtrlC(run.pressed) as presses:
            try:
                kernel = await launching
            except asyncio.CancelledError:
                return EXIT_INTERRUPTED
            if presses.presses:  # pressed as the start ended: the code never ran
                await kernel.shutdown(now=True)
                return EXIT_INTERRUPTED
            run.running = asyncio.ensure_future(run.run(kernel, code, args.timeout))
            try:
                reply = await run.running
            except asyncio.CancelledError:
                await kernel.shutdown(now=True)
                return EXIT_INTERRUPTED
            except TimeoutError:
                await kernel.shutdown(now=True)
                raise CommandError(
                    f"the code did not finish within --timeout {args.timeout:g} s; the "
                    "kernel was stopped. Raise --timeout, or leave it out to wait",
                    EXIT_TIMEOUT,
                ) from None
            except KernelDied as exc:
                raise CommandError(
                    f"the kernel {kernel.type_id} died while running the code ({exc})",
                    EXIT_FAILED,
                ) from None
            except KernelHubError as exc:
                if not presses.presses:
                    raise
                print(f"kernel-hub: {exc}", file=sys.stderr, flush=True)  # interrupted anyway
                return EXIT_INTERRUPTED
        if presses.presses:
            return EXIT_INTERRUPTED
    return EXIT_OK if reply.content.get("status") == "ok" else EXIT_FAILED


class _CodeRun:
    """What Ctrl-C does in ``run``: end the start; then interrupt the code; then stop the kernel.

    Until the kernel says the code runs (its ``execute_input``, or first output), a
    press stops the kernel instead of interrupting it: the code has not begun, and an
    interrupt then is lost (a kernel ignores SIGINT between requests; ipykernel from
    its busy status until its handler for the code is in place), so the code would
    run to its end after all.
    """

    def __init__(self, launching: asyncio.Future[Any]) -> None:
        self.launching = launching
        self.running: asyncio.Future[Any] | None = None
        self.client: KernelClient | None = None
        self.started = False

    def pressed(self, n: int) -> None:
        if not self.launching.done():
            self.launching.cancel()
        elif self.running is None:
            return  # pressed as the start ended: cmd_run sees the press and stops
        elif n > 1 or not self.started or self.client is None:
            if n == 1:
                print(
                    "\nkernel-hub: stopping the kernel before the code started",
                    file=sys.stderr,
                    flush=True,
                )
            self.running.cancel()
        else:
            print(
                "\nkernel-hub: interrupting the kernel (Ctrl-C again to shut it down)",
                file=sys.stderr,
                flush=True,
            )
            interrupting = asyncio.ensure_future(self.client.interrupt())
            interrupting.add_done_callback(_log_failure)

    async def run(self, kernel: RunningKernel, code: str, timeout: float | None) -> Message:
        from ..client.console import console_output_hook

        async with kernel.client() as client:
            self.client = client

            def output(msg: Message) -> None:
                self.started = True
                console_output_hook(msg, drops=client.drops)

            return await client.execute_interactive(code, timeout=timeout, output_hook=output)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"kernel-hub: error: cannot interrupt: {task.exception()}", file=sys.stderr)


def _print_event(event: KernelEvent) -> None:
    print(event.describe(), file=sys.stderr, flush=True)


def _launch_encryption(hub: KernelHub, args: argparse.Namespace) -> str | None:
    """``launch``'s CurveZMQ policy: the option's, else the config's, else ``"disabled"``.

    ``launch`` writes a connection file for jupyter console and qtconsole, whose
    client (jupyter_client's ``JupyterConsoleApp``) does not read Curve keys yet.
    """
    if args.transport_encryption is not None:
        return str(args.transport_encryption)
    return None if hub.configured_encryption(args.type or "") is not None else "disabled"


async def _launch_unless_stopped(
    hub: KernelHub, args: argparse.Namespace, stop: asyncio.Event, **kwargs: Any
) -> RunningKernel | None:
    """Launch like ``run`` does, but a SIGINT or SIGTERM meanwhile ends the start at once.

    The start is cancelled, which kills and cleans up whatever it made so far.

    :returns: the kernel, or ``None`` when *stop* was set first (a kernel that got
        ready in the same loop turn is left to the hub's shutdown).
    """
    launching = asyncio.ensure_future(_launch(hub, args, progress=False, **kwargs))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({launching, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not launching.done():
            await cancel_and_wait(launching)
    if stop.is_set():
        return None
    return launching.result()


async def _ended_before_stop(kernel: RunningKernel, stop: asyncio.Event) -> bool:
    """Wait until *kernel* ends for good or *stop* is set; return whether the kernel ended.

    Both in one loop turn count as an end: the exit status then tells the truth.
    """
    ended = asyncio.ensure_future(kernel.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ended, stopped):
            task.cancel()
    return ended.done() and not ended.cancelled()


async def cmd_launch(args: argparse.Namespace) -> int:
    from ..hub import KernelHub
    from ..managers.liveness import RECORD_KEY, launcher_record
    from ..managers.reaper import reap_on_exit
    from ..managers.subproc import SubprocessManager
    from ..wire.connection import runtime_dir, write_connection_file

    stop = stop_on_signals()
    async with KernelHub() as hub:
        unsubscribe = hub.events.subscribe(_print_event)
        kernel = await _launch_unless_stopped(
            hub,
            args,
            stop,
            restart=False if args.no_restart else None,
            transport_encryption=_launch_encryption(hub, args),
        )
        if kernel is None:  # Ctrl-C (or SIGTERM) during the start, which is undone
            unsubscribe()
            return EXIT_INTERRUPTED
        path = (
            Path(args.connection_file)
            if args.connection_file
            else (runtime_dir() / f"kernel-hub-{kernel.id}.json")
        )
        # The file holds the key: it goes with this process, even one killed by SIGKILL.
        forget_file = reap_on_exit([str(path)])

        def publish() -> None:
            # A restarted kernel keeps its ports and key (the file stays valid for clients that
            # read it once); rewritten (atomically) for the new launcher record, or new ports if
            # one was taken meanwhile; the JSON is printed again.
            # The record lets 'attach' tell a stale file (its launcher killed outright) at once.
            manager = kernel.manager
            pid = manager.pid if isinstance(manager, SubprocessManager) else None
            record = launcher_record(pid, type_id=kernel.type_id, kernel_id=kernel.id)
            write_connection_file({**kernel.connection_info, RECORD_KEY: record}, path)
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
            # Ended on its own: died without restart, or restarts failed (both printed above).
            return 1 if await _ended_before_stop(kernel, stop) else 0
        finally:
            path.unlink(missing_ok=True)
            await kernel.shutdown()
            forget_file()
            unsubscribe()


async def cmd_launch_nanny(args: argparse.Namespace) -> int:
    """``launch --nanny``: ``hub.launch(..., nanny=True)``, then serve until Ctrl-C or death."""
    from ..hub import KernelHub
    from ..managers.liveness import RECORD_KEY, launcher_record
    from ..managers.reaper import reap_on_exit
    from ..managers.remote import NannyManager
    from ..wire.connection import runtime_dir, write_connection_file

    stop = stop_on_signals()
    hub = KernelHub()
    unsubscribe = hub.events.subscribe(_print_event)  # the start's events, as 'launch' shows
    try:
        encryption = _launch_encryption(hub, args)
        kernel = await _launch_unless_stopped(
            hub, args, stop, nanny=True, restart=False, transport_encryption=encryption
        )
    except BaseException:
        await hub.aclose()
        raise
    finally:
        unsubscribe()  # a death is told below, in its own words
    if kernel is None:  # Ctrl-C (or SIGTERM) during the start, which is undone
        await hub.aclose()
        return EXIT_INTERRUPTED
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
        record = launcher_record(None, type_id=kernel.type_id, kernel_id=kernel.id)
        write_connection_file({**kernel.connection_info, RECORD_KEY: record}, path)
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
        if not await _ended_before_stop(kernel, stop):
            return 0  # the shutdown below: shutdown_request, then the nanny kills what is left
        status = kernel.manager.exit_status
        print(f"kernel {kernel.type_id} died (exit status {status})", file=sys.stderr)
        return 1
    finally:
        await hub.aclose()  # the nanny's shutdown: kernel ended, work dir removed, nanny reaped
        path.unlink(missing_ok=True)
        forget()
