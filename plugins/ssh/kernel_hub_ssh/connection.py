"""Shared SSH connections: one per host, reference-counted, reconnected when they drop.

All SSH I/O of this plugin runs on one private event loop in a daemon thread
(:class:`SSHLoop`). Tunnels must keep carrying kernel traffic whatever the
host's own loop is doing (a notebook cell blocking in a blocking client, a
test's short-lived loop), and a connection must outlive the loop of the
launch that opened it, because every kernel on that host shares it.

A :class:`HostConnection` owns one :class:`asyncssh.SSHClientConnection`.
When it drops while kernels still use it, the connection is re-established
with exponential backoff; subscribers hear ``connection_lost`` and
``connection_restored``, or ``gone`` once ``reconnect_timeout`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kernel_hub.provider import LaunchError, LoopThread, cancel_and_wait

from ._asyncssh import asyncssh, quiet_logging
from .config import SSHHostConfig

__all__ = [
    "HostConnection",
    "SSHLoop",
    "acquire",
    "connect_error",
    "open_connection",
    "pool_snapshot",
]

log = logging.getLogger("kernel_hub.ssh")

T = TypeVar("T")

#: ``(kind, data)``: kind is ``connection_lost``, ``connection_restored`` or ``gone``.
Listener = Callable[[str, dict[str, Any]], None]

#: Seconds between SSH keepalives, and how many may go unanswered before the link counts as lost.
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3
#: Reconnect backoff: the first delay, doubled each attempt up to the cap.
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 5.0


class SSHLoop(LoopThread):
    """The private event loop, in a daemon thread, that runs every SSH connection and tunnel.

    Use ``await SSHLoop.get().submit(coro)`` from any loop.
    """

    _instance = None
    thread_name = "kernel-hub-ssh"


def _parse_jump(spec: str) -> tuple[str, int | None, str | None]:
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port: int | None = None
    if spec.count(":") == 1:
        spec, port_s = spec.split(":")
        port = int(port_s)
    return spec, port, user


def _options(target: SSHHostConfig) -> dict[str, Any]:
    """Return the asyncssh.connect options shared by the host and its jump host."""
    opts: dict[str, Any] = {
        "connect_timeout": target.connect_timeout,
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
    }
    if target.identity_file:
        opts["client_keys"] = [target.identity_file]
    if target.insecure_no_host_key_check:
        opts["known_hosts"] = None
    elif target.known_hosts:
        opts["known_hosts"] = target.known_hosts
    if target.config is not None:
        opts["config"] = list(target.config)
    return opts


async def open_connection(target: SSHHostConfig) -> asyncssh.SSHClientConnection:
    """Open one SSH connection to *target* (through its jump host, if any).

    :raises LaunchError: naming the host and the fix (see :func:`connect_error`).
    """
    quiet_logging()  # debug logging may have been turned on since the import
    opts = _options(target)
    jump: asyncssh.SSHClientConnection | None = None
    try:
        async with asyncio.timeout(target.connect_timeout * (2 if target.jump_host else 1) + 1):
            if target.jump_host:
                jhost, jport, juser = _parse_jump(target.jump_host)
                jopts = dict(opts)
                if jport:
                    jopts["port"] = jport
                if juser:
                    jopts["username"] = juser
                try:
                    jump = await asyncssh.connect(jhost, **jopts)
                except (OSError, asyncssh.Error, TimeoutError) as exc:
                    raise connect_error(
                        SSHHostConfig(
                            host=jhost, port=jport, user=juser, known_hosts=target.known_hosts
                        ),
                        exc,
                        via=f"jump host of {target.label}",
                    ) from None
                opts["tunnel"] = jump
            if target.port:
                opts["port"] = target.port
            if target.user:
                opts["username"] = target.user
            conn = await asyncssh.connect(target.host, **opts)
    except LaunchError:
        raise
    except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
        if jump is not None:
            jump.close()
        raise connect_error(target, exc) from None
    except BaseException:
        if jump is not None:
            jump.close()
        raise
    if jump is not None:
        # Closing the main connection then closes the jump connection too.
        conn.set_tunnel(jump)
    return conn


def _known_key_for(target: SSHHostConfig) -> bool:
    """Return whether the known_hosts file already holds a key for *target* (a mismatch)."""
    path = target.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    try:
        known = asyncssh.read_known_hosts(path)
    except (OSError, ValueError, asyncssh.Error):
        return False
    try:
        addr: str | None = str(socket.getaddrinfo(target.host, None)[0][4][0])
    except OSError:
        addr = None
    port = target.port if target.port not in (None, 22) else None
    trusted = known.match(target.host, addr or "", port)[0]
    return bool(trusted)


def connect_error(target: SSHHostConfig, exc: BaseException, *, via: str = "") -> LaunchError:
    """Translate a connection failure into a :class:`LaunchError` that says what to fix."""
    where = f"ssh host {target.label!r}" + (f" ({via})" if via else "")
    kh = target.known_hosts or "~/.ssh/known_hosts"
    port_opt = f"-p {target.port} " if target.port else ""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if _known_key_for(target):
            return LaunchError(
                f"the host key of {where} does NOT match the one in {kh}: someone may be "
                "intercepting the connection, or the host was reinstalled. If you know the key "
                f"changed, remove the old one with 'ssh-keygen -f {kh} -R {target.host}' and add "
                f"the new one after checking its fingerprint. ({exc.reason})"
            )
        return LaunchError(
            f"the host key of {where} is unknown: it is not in {kh}. Check its fingerprint, then "
            f"add it, e.g. 'ssh-keyscan {port_opt}{target.host} >> {kh}' or connect once with "
            "'ssh'. (To skip the check at your own risk, set insecure_no_host_key_check = true.)"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        who = target.user or "the default user"
        return LaunchError(
            f"{where} refused authentication as {who}: set identity_file to a key whose public "
            "half is in that user's ~/.ssh/authorized_keys there, or load it into your agent "
            "(ssh-add); check 'user' too."
        )
    if isinstance(exc, TimeoutError):
        return LaunchError(
            f"cannot reach {where}: no answer within {target.connect_timeout} s. Check the host "
            "name, port and network (VPN, firewall), or raise connect_timeout."
        )
    if isinstance(exc, asyncssh.KeyImportError) or (
        isinstance(exc, (OSError, ValueError))
        and target.identity_file
        and target.identity_file in str(exc)
    ):
        return LaunchError(
            f"cannot use identity_file {target.identity_file!r} for {where}: {exc}. Check the "
            "path, its permissions, and that it is not passphrase-protected (use an agent then)."
        )
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return LaunchError(
            f"cannot reach {where}: {reason}. Check the host name and port, and that sshd "
            "runs there and the network allows the connection."
        )
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    return LaunchError(f"SSH connection to {where} failed: {reason}")


def _pool_key(target: SSHHostConfig) -> tuple[Any, ...]:
    return (target.host, target.port, target.user, target.jump_host)


#: The open host connections of this process, by (host, port, user, jump host).
_pool: dict[tuple[Any, ...], HostConnection] = {}


class HostConnection:
    """One SSH connection to a host, shared by every kernel there.

    Only touched on the :class:`SSHLoop`. Get one with :func:`acquire`, give it
    back with :meth:`release`; the last release closes it.
    """

    def __init__(self, target: SSHHostConfig) -> None:
        self.target = target
        self.key = _pool_key(target)
        self.conn: asyncssh.SSHClientConnection | None = None
        self.refs = 0
        #: ``CONNECTING``, ``CONNECTED``, ``RECONNECTING``, ``GONE`` or ``CLOSED``.
        self.state = "CONNECTING"
        #: How many SSH connections this object has opened (1 + reconnects).
        self.connects = 0
        #: Bumped on every loss and every restore, so waiters can tell changes apart.
        self.generation = 0
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<HostConnection {self.target.label} [{self.state} refs={self.refs} "
            f"connects={self.connects}]>"
        )

    async def open(self) -> None:
        self.conn = await open_connection(self.target)
        self.connects += 1
        self.state = "CONNECTED"
        self._ready.set()
        self._watcher = asyncio.ensure_future(self._watch(self.conn))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call *listener* on loss, restore and final loss; return an unsubscriber."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, kind: str, **data: Any) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in list(self._listeners):
            try:
                listener(kind, dict(data))
            except Exception:
                log.exception("ssh connection listener %r failed on %s", listener, kind)

    async def wait_change(self, generation: int) -> str:
        """Wait until the state moves past *generation*; return the new state."""
        while self.generation == generation and self.state not in ("GONE", "CLOSED"):
            await self._changed.wait()
        return self.state

    async def connected(self, timeout: float | None = None) -> asyncssh.SSHClientConnection:
        """Return the live connection, waiting through a reconnect if one is under way.

        :raises ConnectionError: when the host is gone for good or the connection closed.
        """
        if self.state in ("GONE", "CLOSED"):
            raise ConnectionError(f"ssh connection to {self.target.label} is {self.state.lower()}")
        if not self._ready.is_set():
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        if self.conn is None or self.state != "CONNECTED":
            raise ConnectionError(f"ssh connection to {self.target.label} is {self.state.lower()}")
        return self.conn

    async def _watch(self, conn: asyncssh.SSHClientConnection) -> None:
        """Reconnect with backoff when *conn* drops while kernels still use it."""
        await conn.wait_closed()
        if self.state == "CLOSED" or self.conn is not conn:
            return
        self._ready.clear()
        self.state = "RECONNECTING"
        lost_at = time.monotonic()
        log.warning("ssh connection to %s lost; reconnecting", self.target.label)
        self._notify("connection_lost", host=self.target.label)
        deadline = lost_at + self.target.reconnect_timeout
        delay = BACKOFF_INITIAL
        last_error: BaseException | None = None
        while self.state == "RECONNECTING":
            try:
                new = await open_connection(self.target)
            except LaunchError as exc:
                last_error = exc
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if self.state != "RECONNECTING":  # released meanwhile
                new.close()
                return
            self.conn = new
            self.connects += 1
            self.state = "CONNECTED"
            self._ready.set()
            self._watcher = asyncio.ensure_future(self._watch(new))
            downtime = round(time.monotonic() - lost_at, 3)
            log.warning("ssh connection to %s restored after %.1f s", self.target.label, downtime)
            self._notify("connection_restored", host=self.target.label, downtime=downtime)
            return
        if self.state == "RECONNECTING":
            self.state = "GONE"
            self._ready.set()  # wake waiters; connected() then raises
            reason = f"unreachable for {self.target.reconnect_timeout} s ({last_error})"
            log.error("ssh host %s is gone: %s", self.target.label, reason)
            if _pool.get(self.key) is self:
                del _pool[self.key]  # the next launch there starts afresh
            self._notify("gone", host=self.target.label, reason=reason)

    async def run(
        self, command: str, *, timeout: float | None = None
    ) -> asyncssh.SSHCompletedProcess:
        """Run a short *command* on the host and return its completed process."""
        conn = await self.connected(timeout)
        async with asyncio.timeout(timeout):
            return await conn.run(command, check=False)

    async def release(self) -> None:
        """Drop one reference; the last one closes the connection."""
        self.refs -= 1
        if self.refs > 0:
            return
        if _pool.get(self.key) is self:
            del _pool[self.key]
        await self._close()

    async def _close(self) -> None:
        self.state = "CLOSED"
        self._ready.set()
        self._changed.set()
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(Exception):
                await self.conn.wait_closed()


_locks: dict[tuple[Any, ...], asyncio.Lock] = {}


async def acquire(target: SSHHostConfig) -> HostConnection:
    """Return the shared connection to *target*, opening it if needed (runs on the SSH loop).

    Each call takes one reference; give it back with :meth:`HostConnection.release`.

    :raises LaunchError: when the host cannot be reached or refuses the login.
    """
    key = _pool_key(target)
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        hc = _pool.get(key)
        if hc is None or hc.state in ("GONE", "CLOSED"):
            hc = HostConnection(target)
            await hc.open()
            _pool[key] = hc
        hc.refs += 1
        return hc


def pool_snapshot() -> list[HostConnection]:
    """Return the open host connections of this process (for tests and diagnostics)."""
    return list(_pool.values())
