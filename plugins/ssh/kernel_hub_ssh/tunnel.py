"""Local port forwards that survive reconnects: 127.0.0.1:<local> → SSH → remote 127.0.0.1:<port>.

The plugin binds each local listener itself instead of using asyncssh's
``forward_local_port``, because a listener tied to one SSH connection dies
with it: here the listener stays bound while the connection is re-established,
so the kernel's connection info (and every client holding it) stays valid.
A TCP connection accepted during an outage waits for the new SSH connection;
ZeroMQ reconnects the ones that broke.

A TCP connection to a remote port that nobody listens on yet (a kernel still
starting: clients connect as soon as the nanny has answered) is held too, and
the remote end is tried again every few milliseconds, so the stream goes through
the moment the kernel binds. Dropping it instead would leave ZeroMQ to reconnect
after its own back-off, 100 to 200 ms later.

Nothing listens on a non-loopback interface: the local side binds 127.0.0.1,
and the remote side is reached as 127.0.0.1 from the SSH server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

from ._asyncssh import asyncssh

if TYPE_CHECKING:
    from collections.abc import Container, Mapping

    from .connection import HostConnection

__all__ = ["Tunnel", "TunnelSet", "get_tunnels", "open_tunnels"]

log = logging.getLogger("kernel_hub.ssh")

_CHUNK = 256 * 1024
LOOPBACK = "127.0.0.1"

#: Seconds between two tries of a remote port that refused, at first and at most. A refused
#: try costs about 0.1 ms of CPU here and in sshd; the slow pace past the first second is
#: about ZeroMQ's own reconnect rate, so a port that stays closed costs what it did before.
REMOTE_RETRY = 0.01
REMOTE_RETRY_MAX = 0.1
#: Seconds of fast tries before slowing down to ``REMOTE_RETRY_MAX``.
REMOTE_RETRY_FAST = 1.0
#: Seconds a stream is held for a remote port that refuses; then it is dropped (ZeroMQ
#: reconnects and the wait starts again). Well under ZeroMQ's 30 s handshake timeout.
REMOTE_WAIT = 10.0


async def _pump(reader: Any, writer: Any) -> None:
    """Copy *reader* into *writer* until EOF or an error."""
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError, EOFError, asyncio.IncompleteReadError):
        pass
    except Exception as exc:  # noqa: BLE001 - asyncssh raises its own error classes on drops
        log.debug("tunnel pump ended: %r", exc)


class Tunnel:
    """One local listener forwarding to one remote loopback port over a :class:`HostConnection`.

    :param host: the shared SSH connection.
    :param remote_port: the port on the remote loopback.
    :param name: what the port is for (``shell_port``, ``nanny_control_port``, …).
    :param remote_host: the address the SSH server connects to: its own loopback by
        default, or a machine it reaches (a Slurm compute node behind a login node).
    """

    def __init__(
        self, host: HostConnection, remote_port: int, *, name: str = "", remote_host: str = LOOPBACK
    ) -> None:
        self.host = host
        self.remote_port = remote_port
        self.remote_host = remote_host
        self.name = name
        self.local_port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        state = "OPEN" if self._server is not None else "CLOSED"
        return (
            f"<Tunnel {self.name} {LOOPBACK}:{self.local_port} -> "
            f"{self.host.target.label}:{self.remote_port} [{state} streams={len(self._tasks)}]>"
        )

    async def open(self, local_port: int = 0, *, avoid: Container[int] = ()) -> int:
        """Bind 127.0.0.1:*local_port* (0: any free port not in *avoid*); return the bound port.

        :raises OSError: when *local_port* is taken.
        """
        rejected: list[asyncio.Server] = []
        try:
            while True:
                server = await asyncio.start_server(
                    self._accept, LOOPBACK, local_port, family=socket.AF_INET, reuse_address=True
                )
                port = server.sockets[0].getsockname()[1]
                if local_port or port not in avoid:
                    break
                rejected.append(server)  # keep it bound so the OS offers another port
        finally:
            for other in rejected:
                other.close()
        self._server = server
        self.local_port = port
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            try:
                r_reader, r_writer = await self._open_remote()
            except Exception as exc:  # noqa: BLE001 - any failure just drops this TCP stream
                log.debug("%r: cannot open the remote end: %r", self, exc)
                return
            pumps = [
                asyncio.ensure_future(_pump(reader, r_writer)),
                asyncio.ensure_future(_pump(r_reader, writer)),
            ]
            try:
                # When either side ends (EOF, or the SSH link dropped), end both at once: a
                # half-open local socket would let ZeroMQ write its next message into the void.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                r_writer.close()
        except asyncio.CancelledError:
            # Only close() cancels us; asyncio's stream callback would log a cancelled task.
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _open_remote(self) -> tuple[Any, Any]:
        """Open the remote end of a stream, waiting while the remote port refuses.

        :raises asyncssh.ChannelOpenError: when the port still refuses after
            :data:`REMOTE_WAIT`, or the open fails for another reason.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            # During a reconnect this waits for the new connection instead of failing.
            conn = await self.host.connected(self.host.target.reconnect_timeout)
            try:
                return await conn.open_connection(self.remote_host, self.remote_port)
            except asyncssh.ChannelOpenError as exc:
                waited = loop.time() - start
                if exc.code != asyncssh.OPEN_CONNECT_FAILED or waited >= REMOTE_WAIT:
                    raise
            await asyncio.sleep(REMOTE_RETRY if waited < REMOTE_RETRY_FAST else REMOTE_RETRY_MAX)

    async def close(self) -> None:
        """Stop listening and cut every forwarded stream."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class TunnelSet:
    """The tunnels of one remote kernel: its five ports and the nanny's two.

    Shared in this process by every manager of that kernel (reference-counted).
    """

    def __init__(
        self,
        host: HostConnection,
        remote_ports: Mapping[str, int],
        key: Any,
        *,
        remote_host: str = LOOPBACK,
    ) -> None:
        self.host = host
        self.remote_ports = dict(remote_ports)
        self.remote_host = remote_host
        self.key = key
        self.tunnels: dict[str, Tunnel] = {}
        self.refs = 0

    def __repr__(self) -> str:
        return f"<TunnelSet {self.host.target.label} ports={self.local_ports} refs={self.refs}>"

    @property
    def local_ports(self) -> dict[str, int]:
        return {name: t.local_port for name, t in self.tunnels.items()}

    async def open(self, preferred: Mapping[str, int] | None = None) -> None:
        """Open every tunnel, on the *preferred* local ports where they are free.

        :raises OSError: when no local port can be bound at all.
        """
        try:
            for name, remote in self.remote_ports.items():
                tunnel = Tunnel(self.host, remote, name=name, remote_host=self.remote_host)
                want = int((preferred or {}).get(name) or 0)
                try:
                    await tunnel.open(want, avoid=_remote_ports_seen)
                except OSError as exc:
                    if not want or exc.errno != errno.EADDRINUSE:
                        raise
                    # Another process (the launcher, still attached) holds it: take any port.
                    await tunnel.open(0, avoid=_remote_ports_seen)
                self.tunnels[name] = tunnel
        except BaseException:
            await self.close()
            raise

    def connection_info(self, remote_info: Mapping[str, Any]) -> dict[str, Any]:
        """Return *remote_info* with its ports replaced by the local ends, on 127.0.0.1."""
        info = dict(remote_info)
        info["ip"] = LOOPBACK
        info.update(self.local_ports)
        return info

    async def close(self) -> None:
        """Close every tunnel."""
        await asyncio.gather(*(t.close() for t in self.tunnels.values()), return_exceptions=True)
        _sets.pop(self.key, None)

    async def release(self) -> None:
        """Drop one reference; the last one closes the tunnels and releases the connection."""
        self.refs -= 1
        if self.refs > 0:
            return
        await self.close()
        with contextlib.suppress(Exception):
            await self.host.release()


#: Remote ports of the kernels this process tunnels to. When the "remote" host is this very
#: machine (tests, containers sharing the network), a local listener must not take a port that a
#: remote kernel picked but has not bound yet: ipykernel binds only once it has imported.
_remote_ports_seen: set[int] = set()

#: The tunnel sets of this process, by (host key, remote work dir).
_sets: dict[Any, TunnelSet] = {}


def get_tunnels(key: Any) -> TunnelSet | None:
    """Return the open tunnel set of a kernel in this process, if any."""
    return _sets.get(key)


async def open_tunnels(
    host: HostConnection,
    remote_ports: Mapping[str, int],
    *,
    key: Any,
    preferred: Mapping[str, int] | None = None,
    remote_host: str = LOOPBACK,
) -> TunnelSet:
    """Return the tunnels for *key*, opening them if this process has none (runs on the SSH loop).

    *remote_host* is where the SSH server connects the streams to (default: its loopback).
    The returned set holds one more reference; the caller gives it back with
    :meth:`TunnelSet.release`. A new set takes over one reference of *host*;
    a reused one gives the caller's reference back at once.
    """
    existing = _sets.get(key)
    if existing is not None:
        existing.refs += 1
        await host.release()
        return existing
    if len(_remote_ports_seen) > 4096:  # long-lived hosts: old kernels have bound long ago
        _remote_ports_seen.clear()
    _remote_ports_seen.update(remote_ports.values())
    ts = TunnelSet(host, remote_ports, key, remote_host=remote_host)
    await ts.open(preferred)
    ts.refs = 1
    _sets[key] = ts
    return ts
