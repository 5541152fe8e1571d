"""Slurm through a login node over SSH: commands on the ssh plugin's connection, files over SFTP.

``[slurm.<name>] login = "<ssh table or host>"`` makes the plugin submit from
wherever it runs (a laptop, a JupyterHub outside the cluster): ``sbatch``,
``squeue``, ``scontrol`` and ``scancel`` run on the login node over one SSH
connection, and the job's files (the nanny, the 0600 registration file) go
over SFTP on that same connection. Nothing runs on this machine: a
:class:`LoginRunner` has no local fallback.

The SSH side is the ssh plugin's, not a second stack: its host configuration
(``~/.ssh/config`` aliases, ``known_hosts`` checks, jump hosts, identity
files), its shared and reconnecting :class:`~kernel_hub_ssh.connection.HostConnection`
and its private event loop. The ssh plugin is an optional dependency
(``pip install 'kernel-hub-slurm[ssh]'``), imported only when a table has ``login``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import posixpath
import secrets
import shlex
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import ConfigError, LaunchError

from .cluster import CommandResult, SlurmUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence
    from types import ModuleType

    from kernel_hub.provider import HubContext

__all__ = ["LoginRunner", "login_target", "ssh_plugin"]

#: What to install when a table has ``login`` and the ssh plugin is missing.
EXTRA = "kernel-hub-slurm[ssh]"


def ssh_plugin(what: str) -> ModuleType:
    """Import the ssh plugin's connection module, or say in one line which extra installs it.

    :param what: what needs it, for the message (``"[slurm.gpu] login = 'hpc'"``).
    :raises LaunchError: when ``kernel-hub-ssh`` is not installed.
    """
    try:
        import kernel_hub_ssh.connection
    except ImportError as exc:
        raise LaunchError(
            f"{what} submits through a login node over SSH, which needs the ssh plugin "
            f"({exc.name} is not installed): pip install '{EXTRA}'"
        ) from None
    return kernel_hub_ssh.connection


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _split_host(spec: str) -> tuple[str, int | None, str | None]:
    """Split ``[user@]host[:port]``."""
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port: int | None = None
    if spec.count(":") == 1:
        spec, port_text = spec.split(":")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{port_text!r} is not a port number in login {spec!r}") from None
    return spec, port, user


def login_target(hub: HubContext | None, login: str, *, table: str) -> Any:
    """Return the ssh plugin's ``SSHHostConfig`` for a table's ``login`` field.

    ``ssh/<name>`` or ``<name>`` names an ``[ssh.<name>]`` table (its host, port,
    user, identity file, known_hosts, jump host and timeouts apply); anything
    else is ``[user@]host[:port]`` (an ``~/.ssh/config`` alias works).

    :raises LaunchError: without the ssh plugin.
    :raises ConfigError: for an ``ssh/<name>`` with no good table.
    """
    what = f"[slurm.{table}] login = {login!r}"
    ssh_plugin(what)
    from kernel_hub_ssh.config import SCHEMA, SSHHostConfig

    name = login.removeprefix("ssh/")
    parsed = SCHEMA.load(hub) if hub is not None else None
    if parsed is not None and name in parsed.types:
        return parsed.types[name].kernel_config().target
    if parsed is not None and name in parsed.rejected:
        raise ConfigError(f"{what} names a bad table: {parsed.rejected[name]}")
    if login.startswith("ssh/"):
        raise ConfigError(
            f"{what} names no [ssh.{name}] table; add one, or give the login node as "
            "[user@]host[:port]"
        )
    host, port, user = _split_host(login)
    return SSHHostConfig(host=host, port=port, user=user)


class LoginRunner:
    """Run Slurm's commands on a login node over SSH, and handle job files there over SFTP.

    Takes one reference on the ssh plugin's shared connection to the login node
    at first use and gives it back in :meth:`close`. Every SSH operation runs on
    the ssh plugin's private loop, whatever loop calls.

    :param target: the ssh plugin's ``SSHHostConfig`` of the login node.
    """

    def __init__(self, target: Any) -> None:
        self._ssh = ssh_plugin(f"the login node {target.label}")
        self.target = target
        self.label = f"login node {target.label}"
        self._host: Any = None  # HostConnection, once acquired
        self._sftp: Any = None
        self._sftp_conn: Any = None
        self._home: str | None = None
        self._closed = False
        #: How many commands this runner ran on the login node (tests, diagnostics).
        self.commands = 0

    def __repr__(self) -> str:
        state = "CLOSED" if self._closed else (self._host.state if self._host else "IDLE")
        return f"<LoginRunner {self.target.label} [{state}]>"

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LoginRunner:
        """Rebuild from :meth:`to_state` (a re-attach in another process reconnects)."""
        ssh_plugin("a Slurm kernel submitted through a login node")
        from kernel_hub_ssh.config import SSHHostConfig

        return cls(SSHHostConfig.from_state(state["ssh"]))

    def to_state(self) -> dict[str, Any]:
        return {"kind": "ssh", "ssh": self.target.to_state()}

    # ---- the connection (on the ssh plugin's loop) ----

    async def _on_ssh(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await self._ssh.SSHLoop.get().submit(coro)

    async def _connection(self) -> Any:
        if self._closed:
            raise SlurmUnavailable(f"{self!r} is closed")
        if self._host is None or self._host.state in ("GONE", "CLOSED"):
            if self._host is not None:
                with contextlib.suppress(Exception):
                    await self._host.release()
            self._host = None
            self._host = await self._ssh.acquire(self.target)
        try:
            return await self._host.connected(self.target.reconnect_timeout)
        except (ConnectionError, TimeoutError) as exc:
            raise SlurmUnavailable(f"the {self.label} cannot be reached: {exc}") from None

    async def host_connection(self) -> Any:
        """Return the ssh plugin's ``HostConnection`` to the login node (connecting if needed)."""
        await self._on_ssh(self._connection())
        return self._host

    async def _sftp_client(self) -> Any:
        conn = await self._connection()
        if self._sftp is None or self._sftp_conn is not conn:
            try:
                self._sftp = await conn.start_sftp_client()
            except (self._ssh.asyncssh.Error, OSError) as exc:
                raise SlurmUnavailable(
                    f"cannot open SFTP on the {self.label} ({exc}): the job's files go over "
                    "SFTP; its sshd needs the sftp subsystem (Subsystem sftp ...)"
                ) from None
            self._sftp_conn = conn
        return self._sftp

    # ---- CommandRunner ----

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30.0
    ) -> CommandResult:
        return await self._on_ssh(self._run(argv, input, timeout))

    async def _run(self, argv: Sequence[str], input: bytes | None, timeout: float) -> CommandResult:
        asyncssh = self._ssh.asyncssh
        conn = await self._connection()
        self.commands += 1
        try:
            async with asyncio.timeout(timeout):
                # The command line holds Slurm's options and paths, never a key: the key
                # is only in the 0600 registration file, which went over SFTP.
                proc = await conn.run(shlex.join(argv), input=input, check=False, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise SlurmUnavailable(
                f"running {argv[0]} on the {self.label} failed: {exc}; check the SSH link"
            ) from None
        if proc.exit_status is None:  # the channel closed before the command ended
            raise SlurmUnavailable(
                f"{argv[0]} on the {self.label} ended without an exit status "
                f"({proc.exit_signal or 'the SSH channel closed'})"
            )
        status = proc.exit_status
        out = bytes(proc.stdout or b"").decode(errors="replace")
        err = bytes(proc.stderr or b"").decode("utf-8", "replace")
        if status == 127:
            raise SlurmUnavailable(
                f"Slurm's {argv[0]!r} is not on PATH on the {self.label}: install Slurm's "
                "client tools there, or add them to the PATH of your login shell (non-"
                f"interactive: ~/.bashrc) ({err.strip() or 'command not found'})"
            )
        return CommandResult(status, out, err)

    async def expand_user(self, path: str) -> str:
        return await self._on_ssh(self._expand(path))

    async def _expand(self, path: str) -> str:
        if path != "~" and not path.startswith("~/"):
            return path
        if self._home is None:
            sftp = await self._sftp_client()
            self._home = str(await sftp.realpath("."))  # SFTP starts in the home directory
        return self._home + path[1:]

    async def make_private_dir(self, base: str, prefix: str) -> str:
        return await self._on_ssh(self._make_private_dir(base, prefix))

    async def _make_private_dir(self, base: str, prefix: str) -> str:
        asyncssh = self._ssh.asyncssh
        base = await self._expand(base)
        sftp = await self._sftp_client()
        private = asyncssh.SFTPAttrs(permissions=0o700)
        try:
            await sftp.makedirs(base, attrs=private, exist_ok=True)
            for _ in range(10):
                path = posixpath.join(base, prefix + secrets.token_hex(4))
                if await sftp.exists(path):
                    continue
                await sftp.mkdir(path, attrs=private)  # 0700 (umask can only take bits away)
                return path
        except (asyncssh.Error, OSError) as exc:
            raise SlurmUnavailable(
                f"cannot make a job directory under {base!r} on the {self.label} over SFTP: "
                f"{exc}; check job_dir"
            ) from None
        raise SlurmUnavailable(f"no free job directory name under {base!r} on the {self.label}")

    async def write_private_file(self, path: str, data: bytes) -> None:
        await self._on_ssh(self._write(path, data))

    async def _write(self, path: str, data: bytes) -> None:
        asyncssh = self._ssh.asyncssh
        sftp = await self._sftp_client()
        try:
            # "x": created here (never an existing file), 0600 from its first byte.
            async with sftp.open(path, "xb", asyncssh.SFTPAttrs(permissions=0o600)) as f:
                await f.write(data)
        except (asyncssh.Error, OSError) as exc:
            raise SlurmUnavailable(f"cannot write {path!r} on the {self.label}: {exc}") from None

    async def remove_tree(self, path: str) -> None:
        await self._on_ssh(self._remove(path))

    async def _remove(self, path: str) -> None:
        sftp = await self._sftp_client()
        await sftp.rmtree(path, ignore_errors=True)

    async def list_dir(self, path: str) -> list[str]:
        return await self._on_ssh(self._list(path))

    async def _list(self, path: str) -> list[str]:
        asyncssh = self._ssh.asyncssh
        sftp = await self._sftp_client()
        try:
            names = await sftp.listdir(await self._expand(path))
        except (asyncssh.Error, OSError):
            return []
        return [str(n) for n in names if n not in (".", "..")]

    async def read_file(self, path: str) -> bytes | None:
        return await self._on_ssh(self._read(path))

    async def _read(self, path: str) -> bytes | None:
        asyncssh = self._ssh.asyncssh
        try:
            sftp = await self._sftp_client()
            async with sftp.open(path, "rb") as f:
                return bytes(await f.read())
        except (asyncssh.Error, OSError, SlurmUnavailable):
            return None

    # ---- kernel traffic through the login node (route = "login") ----

    async def forward_here(self, listen_host: str, local_port: int) -> Any:
        """Listen on *listen_host* on the login node, forwarding to 127.0.0.1:*local_port* here.

        The job's nanny dials back to it (a remote forward on the connection). Returns
        the listener (``get_port()``; give it to :meth:`stop_forward`).

        :raises SlurmUnavailable: naming the sshd settings it needs when refused.
        """
        return await self._on_ssh(self._forward_here(listen_host, local_port))

    async def _forward_here(self, listen_host: str, local_port: int) -> Any:
        asyncssh = self._ssh.asyncssh
        conn = await self._connection()
        try:
            listener = await conn.forward_remote_port(listen_host, 0, "127.0.0.1", local_port)
        except (asyncssh.Error, OSError) as exc:
            raise SlurmUnavailable(
                f"the {self.label} refused to listen on {listen_host} for the job's "
                f"registration ({exc}); its sshd needs AllowTcpForwarding yes (and GatewayPorts "
                "clientspecified for an address other than 127.0.0.1), or set route = 'direct'"
            ) from None
        if not _is_loopback(listen_host):
            try:
                await self._check_listening(conn, listen_host, listener.get_port())
            except BaseException:
                listener.close()
                raise
        return listener

    async def _check_listening(self, conn: Any, host: str, port: int) -> None:
        """Fail at once when the login node does not listen on *host*:*port* for the nodes.

        The SSH protocol tells the port of a remote forward, not its address: an sshd
        without ``GatewayPorts clientspecified`` (or ``yes``) binds loopback whatever the
        client asked, and the job's nanny, dialing *host*, would be refused until the
        launch's ``start_timeout``. So the login node itself connects there once
        (``direct-tcpip``, which the kernel's tunnels need too) before anything is submitted.
        """
        asyncssh = self._ssh.asyncssh
        try:
            _, writer = await conn.open_connection(host, port)
        except asyncssh.ChannelOpenError as exc:
            if exc.code == asyncssh.OPEN_CONNECT_FAILED:
                raise SlurmUnavailable(
                    f"the {self.label} does not listen on {host} for the job's registration: "
                    "its sshd binds remote forwards to loopback only; set GatewayPorts "
                    "clientspecified in its sshd_config, or route = 'direct' with register_ip "
                    "this host's address as the nodes reach it"
                ) from None
            raise SlurmUnavailable(
                f"the {self.label} refused to connect to {host}:{port} ({exc.reason}); with "
                "route = 'login' its sshd needs AllowTcpForwarding yes, or set route = 'direct'"
            ) from None
        writer.close()  # the registration endpoint sees a connection come and go

    async def stop_forward(self, listener: Any) -> None:
        """Close a listener of :meth:`forward_here`."""

        async def stop() -> None:
            listener.close()
            with contextlib.suppress(Exception):
                await listener.wait_closed()

        await self._on_ssh(stop())

    async def open_tunnels(
        self, remote_info: Mapping[str, Any], *, key: Any, preferred: Mapping[str, int] | None
    ) -> Any:
        """Forward 127.0.0.1 ports here to the kernel's ports on its node, via the login node.

        Returns the ssh plugin's ``TunnelSet`` (shared in this process by *key*); give it
        back with :meth:`release_tunnels`. The node's address is *remote_info*'s ``ip``.
        """
        return await self._on_ssh(self._open_tunnels(remote_info, key, preferred))

    async def _open_tunnels(
        self, remote_info: Mapping[str, Any], key: Any, preferred: Mapping[str, int] | None
    ) -> Any:
        from kernel_hub_ssh.tunnel import get_tunnels, open_tunnels

        existing = get_tunnels(key)
        if existing is not None:
            existing.refs += 1
            return existing
        await self._connection()
        host = await self._ssh.acquire(self.target)  # the tunnels' own reference
        ports = {k: int(v) for k, v in remote_info.items() if k.endswith("_port")}
        try:
            return await open_tunnels(
                host, ports, key=key, preferred=preferred, remote_host=str(remote_info["ip"])
            )
        except BaseException:
            await host.release()
            raise

    async def release_tunnels(self, tunnels: Any) -> None:
        """Give back a ``TunnelSet`` of :meth:`open_tunnels` (the last user closes it)."""
        await self._on_ssh(tunnels.release())

    def tunnel_key(self, job_id: str) -> tuple[Any, ...]:
        """Return the key under which this process shares the tunnels of job *job_id*."""
        t = self.target
        return ("slurm", t.host, t.port, t.user, t.jump_host, job_id)

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Call *listener* on the link's loss and return (``connection_lost``, ...).

        Must follow a first command (the connection exists by then).
        """
        if self._host is None:
            return lambda: None
        unsubscribe: Callable[[], None] = self._host.subscribe(listener)
        return unsubscribe

    async def close(self) -> None:
        """Give the connection back (the last user closes it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._on_ssh(self._close())

    async def _close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.exit()
            self._sftp = None
        if self._host is not None:
            with contextlib.suppress(Exception):
                await self._host.release()
            self._host = None
