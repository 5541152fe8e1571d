"""``kernel-hub pool TYPE``: ready kernels for other ``kernel-hub`` processes, over a Unix socket.

A pool process is a hub with a state dir of its own, ``pool-<type>-<hash>`` under
:func:`~kernel_hub.lifecycle.state.state_root`, and the state dir's machinery does
the lifetimes: its launches carry ``LaunchRequest.outlive`` = ``--grace`` (a local
kernel runs under a nanny whose lease is the grace), so a spare handed out
survives the pool; its lock makes it the only pool of its type; its records
let ``kernel-hub ps`` list the spares; and what a pool killed outright left is
ended by the nanny's lease, by the reaper's ``expire`` program after the grace,
or by the next pool's adoption, whichever comes first.

It serves on :data:`SOCKET_NAME` in that dir (0700 dir, 0600 socket; the peer's
uid is checked with ``SO_PEERCRED`` on both ends). One hand-out is one
connection, one JSON line each way and an acknowledgement::

    taker -> pool   {"op": "take", "request": {...}}     what the taker would launch
    pool -> taker   {"served": false, "reason": "..."}   another request, or no spare ready
    pool -> taker   {"served": true, "kernel": {...}}    the spare's describe(), with its key
    taker -> pool   {"attached": true}                   hub.attach(**kernel) worked

Before it answers ``served``, the pool has released the kernel
(:meth:`KernelHub.hand_off`). A taker that goes away before it acknowledges
leaves the kernel to the pool, which attaches again and shuts it down.

The request both sides compare is :func:`launch_request`; the rule is in
docs/cli.md ("`pool`").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any

from ..contract.errors import KernelHubError, LaunchError
from ..lifecycle.state import LOCK_FILE, StateDir, default_state_dir
from .terminal import EXIT_NOT_RUNNING, EXIT_OK, EXIT_TIMEOUT, CommandError, stop_on_signals

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from ..contract.events import KernelEvent
    from ..contract.types import KernelType
    from ..hub import KernelHub
    from ..lifecycle.kernel import RunningKernel
    from ..lifecycle.pool import KernelPool

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_SIZE",
    "IGNORED_ENV",
    "SOCKET_NAME",
    "cmd_pool",
    "launch_request",
    "mismatch",
    "peer_credentials",
    "pool_state_dir",
    "take_from_pool",
]

log = logging.getLogger("kernel_hub.cli")

#: Spares a pool keeps when ``--size`` is not given.
DEFAULT_SIZE = 1
#: Seconds a spare outlives a pool killed outright, and a taker has to attach (``--grace``).
DEFAULT_GRACE = 30.0
#: The pool's socket, a dotfile in its state dir (state-dir readers skip dotfiles).
SOCKET_NAME = ".pool.sock"
#: Environment variables every shell sets per directory, nesting depth or command: a
#: kernel does not depend on them, so a taker and a pool need not agree on them.
IGNORED_ENV = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
#: Seconds a taker waits for the pool's answer before it starts a kernel itself.
ANSWER_TIMEOUT = 10.0
#: The longest request line a pool reads (a request is a few KiB: one digest per variable).
MAX_LINE = 1 << 20


# ---- where a pool lives, and what it serves ----


def pool_state_dir(type_id: str) -> Path:
    """Return the state dir of the pool for *type_id*: one well-known place per type id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", type_id).strip("._-")[:40] or "type"
    digest = hashlib.sha256(type_id.encode()).hexdigest()[:8]
    return default_state_dir(f"pool-{slug}-{digest}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def launch_request(
    kernel_type: KernelType, *, plugin: str, cwd: str | None, transport_encryption: str
) -> dict[str, Any]:
    """Return what a kernel started here for *kernel_type* would be; pool and taker compare it.

    The type as this process sees it (its owner and definition: argv, env, ...),
    the working directory resolved (``cwd``, else this process's), this process's
    environment but :data:`IGNORED_ENV` (values as digests: the pool needs to
    compare them, not to know them), the transport encryption, and the params
    (the command line gives none).
    """
    definition = {"plugin": plugin, **kernel_type.to_dict()}
    text = json.dumps(definition, sort_keys=True, default=str)
    return {
        "type_id": kernel_type.id,
        "type": _digest(text),
        "cwd": os.path.realpath(cwd or os.getcwd()),
        "env": {k: _digest(v) for k, v in os.environ.items() if k not in IGNORED_ENV},
        "transport_encryption": transport_encryption,
        "params": {},
    }


def mismatch(pool: Mapping[str, Any], taker: Mapping[str, Any]) -> str:
    """Return why the *taker*'s request is not the *pool*'s, or ``""`` when it is."""
    if taker.get("type_id") != pool["type_id"]:
        return f"it serves {pool['type_id']}, not {taker.get('type_id')}"
    if taker.get("type") != pool["type"]:
        return f"{pool['type_id']} is defined differently there (another Python or kernelspec)"
    if taker.get("cwd") != pool["cwd"]:
        return f"its kernels start in {pool['cwd']}, not in {taker.get('cwd')}"
    theirs, mine = taker.get("env") or {}, pool["env"]
    names = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return f"the environment differs ({shown})"
    if taker.get("transport_encryption") != pool["transport_encryption"]:
        return f"its kernels have transport encryption {pool['transport_encryption']!r}"
    if (taker.get("params") or {}) != pool["params"]:
        return "the params differ"
    return ""


# ---- the socket ----


def peer_credentials(sock: Any) -> tuple[int, int]:
    """Return the ``(pid, uid)`` of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """Yield an address for *path* that fits a ``sockaddr_un`` (108 bytes with its NUL).

    A longer path (a deep state dir) is reached through a descriptor of its folder.
    """
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


async def _read_json(reader: asyncio.StreamReader, timeout: float | None) -> dict[str, Any]:
    """Read one JSON object line; ``{}`` at end of file, on a bad line or after *timeout*."""
    try:
        async with asyncio.timeout(timeout):
            line = await reader.readline()
        data = json.loads(line) if line else {}
    except (TimeoutError, ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _send(writer: asyncio.StreamWriter, data: Mapping[str, Any]) -> None:
    writer.write(json.dumps(data).encode() + b"\n")


# ---- the taker: kernel-hub run ----


async def take_from_pool(
    hub: KernelHub, type_id: str | None, *, cwd: str | None
) -> RunningKernel | None:
    """Take a ready kernel from the pool that serves *type_id*, attached to *hub*; or ``None``.

    ``None`` (and not a single connection attempt) when no pool socket exists;
    ``None`` after one line at INFO when the pool does not serve this request,
    has no spare ready, or cannot be reached (a stale socket is removed). The
    kernel is this process's from then on: should this process be killed
    outright, its nanny is ended (through the reaper), as a fresh kernel would be.
    """
    kt = await (hub.get_kernel_type(type_id) if type_id else hub.default_kernel_type())
    path = pool_state_dir(kt.id) / SOCKET_NAME
    if not os.path.exists(path):  # noqa: ASYNC240 - one stat, the whole cost without a pool
        return None
    request = launch_request(
        kt, plugin=hub.owner_of(kt.id), cwd=cwd, transport_encryption=hub.encryption_for(kt.id)
    )
    try:
        with _address(path) as address:
            reader, writer = await asyncio.open_unix_connection(address, limit=MAX_LINE)
    except (ConnectionRefusedError, FileNotFoundError):
        _remove_stale(path)
        return None
    except OSError as exc:
        log.info("cannot reach the pool for %s at %s (%s); starting a kernel", kt.id, path, exc)
        return None
    try:
        pid, uid = peer_credentials(writer.get_extra_info("socket"))
        if uid != os.getuid():
            log.warning("ignored the pool socket %s: its process runs as uid %s", path, uid)
            return None
        _send(writer, {"op": "take", "request": request})
        reply = await _read_json(reader, ANSWER_TIMEOUT)
        if not reply.get("served") or not isinstance(reply.get("kernel"), dict):
            why = reply.get("reason") or "no answer"
            log.info("the pool for %s (pid %s) did not serve this run: %s", kt.id, pid, why)
            return None
        return await _attach_taken(hub, reply["kernel"], writer, pool_pid=pid)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _attach_taken(
    hub: KernelHub, described: dict[str, Any], writer: asyncio.StreamWriter, *, pool_pid: int
) -> RunningKernel | None:
    """Attach a kernel the pool handed out; acknowledge it; end it with this process."""
    forget = _end_with_this_process(described)
    try:
        # Not restarted: run reports a death during the code as for a fresh kernel.
        kernel = await hub.attach(**described, restart=False)
    except Exception as exc:  # noqa: BLE001 - no kernel from the pool: the pool ends it, we launch
        forget()
        log.info("could not attach the kernel from the pool (%s); starting a kernel", exc)
        return None
    _send(writer, {"attached": True})
    with contextlib.suppress(OSError):
        await writer.drain()

    def on_event(event: KernelEvent) -> None:
        if event.kernel_id == kernel.id and event.kind == "shutdown":
            forget()  # ended the normal way: the reaper need not end its nanny

    hub.events.subscribe(on_event)
    log.info(
        "took kernel %s (pid %s) from the pool for %s (pid %s)",
        kernel.id[:8],
        kernel.state.get("kernel_pid", "?"),
        kernel.type_id,
        pool_pid,
    )
    return kernel


def _end_with_this_process(described: Mapping[str, Any]) -> Callable[[], None]:
    """Have the reaper SIGTERM the kernel's nanny when this process ends, even by SIGKILL."""
    nanny_pid = (described.get("state") or {}).get("nanny_pid")
    if not isinstance(nanny_pid, int):
        return lambda: None  # another provider: its lease (the pool's grace) ends it
    from ..managers.reaper import reap_on_exit

    return reap_on_exit(terminate=nanny_pid)


def _remove_stale(path: Path) -> None:
    """Remove a pool socket nobody listens on, if no pool holds its state dir's lock."""
    state = StateDir(path.parent)
    if not state.try_lock():
        log.info("the pool at %s does not answer yet; starting a kernel", path)
        return
    try:
        path.unlink(missing_ok=True)
        log.info("removed the stale pool socket %s (its pool is gone)", path)
    finally:
        state.unlock()


# ---- the pool process: kernel-hub pool ----


class _Server:
    """Hand the pool's spares to the takers that connect, one connection per hand-out."""

    def __init__(
        self, hub: KernelHub, pool: KernelPool, request: dict[str, Any], grace: float
    ) -> None:
        self.hub = hub
        self.pool = pool
        self.request = request
        self.grace = grace
        self.tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<pool server {self.pool!r} connections={len(self.tasks)}>"

    async def connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self._serve(reader, writer)
        except Exception:  # a bug in one hand-out must not end the pool
            log.exception("kernel-hub pool: a hand-out failed")
        finally:
            if task is not None:
                self.tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid, uid = peer_credentials(writer.get_extra_info("socket"))
        if uid != os.getuid():
            _say(f"refused a connection from uid {uid} (pid {pid}): not this user")
            return
        ask = await _read_json(reader, ANSWER_TIMEOUT)
        if ask.get("op") != "take":
            return
        theirs = ask.get("request")
        why = mismatch(self.request, theirs) if isinstance(theirs, dict) else "a bad request"
        kernel = None if why else self.pool.take()
        if kernel is None and not why:
            why = f"no spare ready ({self.pool.starting} starting)"
        if kernel is None:
            _send(writer, {"served": False, "reason": why})
            _say(f"did not serve pid {pid}: {why}")
            return
        try:
            described = await self.hub.hand_off(kernel)
        except BaseException:
            await kernel.shutdown()  # taken from the pool: nobody else would end it
            raise
        _send(writer, {"served": True, "kernel": described})
        with contextlib.suppress(OSError):
            await writer.drain()
        what = f"spare {kernel.id[:8]} (kernel pid {kernel.state.get('kernel_pid', '?')})"
        if (await _read_json(reader, self.grace)).get("attached"):
            _say(f"handed {what} to pid {pid}")
            return
        _say(f"pid {pid} went away before it attached {what}; shutting it down")
        try:
            again = await self.hub.attach(**described, restart=False)
            await again.shutdown()
        except Exception as exc:  # noqa: BLE001 - gone already; else its lease ends it
            log.info("kernel-hub pool: %s ended already (%s)", kernel.id[:8], exc)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _nothing() -> None:
    pass


def _say(message: str) -> None:
    print(f"kernel-hub pool: {message}", file=sys.stderr, flush=True)


def _size(args: argparse.Namespace, hub: KernelHub, type_id: str) -> int:
    """How many spares to keep: ``--size``, else the config's ``[pool."<type id>"] size``,
    else :data:`DEFAULT_SIZE`."""
    if args.size is not None:
        return int(args.size)
    if "pool" in hub.config:
        from ..plugins.pools import configured_pools

        table = configured_pools(hub).get(type_id)
        if table is not None:
            return int(table.size)
    return DEFAULT_SIZE


def _holder(state: Path) -> str:
    with contextlib.suppress(OSError):
        return (state / LOCK_FILE).read_text().strip()
    return "?"


async def cmd_pool(args: argparse.Namespace) -> int:
    """``kernel-hub pool TYPE [--size N]``: keep N ready kernels for ``run``, until a signal."""
    from ..contract.errors import StateInUse
    from ..hub import KernelHub
    from ..managers.reaper import reap_on_exit

    if not hasattr(socket, "SO_PEERCRED"):
        raise CommandError("kernel-hub pool needs Linux (it checks its peers with SO_PEERCRED)")
    cwd = os.path.realpath(args.cwd or os.getcwd())  # noqa: ASYNC240 - a few stats, local
    if not os.path.isdir(cwd):  # noqa: ASYNC240 - one stat
        raise CommandError(f"--cwd {args.cwd!r} is not a directory; give an existing directory")
    stop = stop_on_signals()
    state = pool_state_dir(args.type)
    path = state / SOCKET_NAME
    hub = KernelHub(state_dir=state, grace=args.grace)
    kt = await hub.get_kernel_type(args.type)  # an unknown type: a usage error, no state dir
    try:
        await hub.adopt()  # the lock: one pool per type; ends the spares a killed pool left
    except StateInUse:
        raise CommandError(
            f"a pool for {args.type} is already serving (pid {_holder(state)}) on {path}; "
            "use it, or stop it first (Ctrl-C or SIGTERM)"
        ) from None
    server: asyncio.AbstractServer | None = None
    handler: _Server | None = None
    forget_socket: Callable[[], None] = _nothing
    try:
        pool = await hub.pool(
            kt.id, size=_size(args, hub, kt.id), cwd=cwd, ready_timeout=args.start_timeout
        )
        request = launch_request(
            kt, plugin=hub.owner_of(kt.id), cwd=cwd, transport_encryption=hub.encryption_for(kt.id)
        )
        handler = _Server(hub, pool, request, args.grace)
        path.unlink(missing_ok=True)  # a stale one: we hold the lock, no pool serves there
        with _address(path) as address:
            server = await asyncio.start_unix_server(handler.connected, address, limit=MAX_LINE)
        os.chmod(path, 0o600)  # in a 0700 dir: nobody else could reach it meanwhile
        forget_socket = reap_on_exit([str(path)])  # gone with this process, even by SIGKILL
        announce = _announcer(hub, pool)
        print(str(path), flush=True)
        _say(f"serving {kt.id} (size {pool.size}) on {path}; Ctrl-C stops it")
        return await _until_stopped(pool, stop, announce)
    finally:
        if server is not None:
            server.close()
        if handler is not None:
            await handler.close()
        path.unlink(missing_ok=True)
        await hub.aclose()  # every spare it holds ends; handed-out kernels are not its own
        forget_socket()


def _announcer(hub: KernelHub, pool: KernelPool) -> Callable[[], None]:
    """Print each spare that gets ready, and the events of the spares; return the unsubscriber."""
    loop = asyncio.get_running_loop()

    def ready(kernel_id: str) -> None:
        for spare in pool.spares:
            if spare.id == kernel_id:
                pid = spare.state.get("kernel_pid", "?")
                _say(
                    f"spare {kernel_id[:8]} ready (kernel pid {pid}); "
                    f"{len(pool.spares)} of {pool.size} ready"
                )

    def on_event(event: KernelEvent) -> None:
        if event.kind == "ready" and event.data.get("pool"):
            # The pool takes it in once its start returns, in this same loop turn.
            loop.call_soon(ready, event.kernel_id)
        elif event.kind in ("died", "restarting", "restarted"):
            _say(event.describe())  # a failed start is the pool's own WARNING line

    return hub.events.subscribe(on_event)


async def _until_stopped(
    pool: KernelPool, stop: asyncio.Event, unsubscribe: Callable[[], None]
) -> int:
    """Serve until Ctrl-C or SIGTERM; a first fill that fails ends the pool with its error."""
    first = asyncio.ensure_future(pool.wait_full())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set() and first.exception() is not None:
            exc = first.exception()
            if isinstance(exc, LaunchError):
                timed_out = isinstance(exc.__cause__, TimeoutError)
                raise CommandError(
                    f"the pool's first kernel did not start: {exc.summary}",
                    EXIT_TIMEOUT if timed_out else EXIT_NOT_RUNNING,
                    output=exc.output,
                ) from exc
            raise KernelHubError(f"the pool's first kernel did not start: {exc}") from exc
        await stopped  # later failures are logged; the pool backs off and tries again
        return EXIT_OK
    finally:
        unsubscribe()
        for task in (first, stopped):
            task.cancel()
