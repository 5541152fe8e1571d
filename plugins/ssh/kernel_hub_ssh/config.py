"""Remote kernel types from the kernel_hub config file: one ``[ssh.<name>]`` table each.

.. code-block:: toml

    [ssh.gpu-box]
    host = "gpu-box"              # an ~/.ssh/config alias works: its HostName, Port, User,
                                  # IdentityFile and ProxyJump apply
    user = "me"                   # optional; else ~/.ssh/config, else the local user
    python = "/opt/conda/bin/python"   # the remote Python with ipykernel (default python3);
                                  # it runs the nanny, so it needs pyzmq in any case
    # optional: another kernel than ipykernel ({prefix}: the remote python's sys.prefix)
    argv = ["{prefix}/bin/python", "-m", "xpython_launcher", "-f", "{connection_file}"]
    kernel_protocol_version = "5.6"   # optional: 5.6 or later, the registration handshake
    cwd = "~/work"                # the kernel's remote working directory
    env = { OMP_NUM_THREADS = "8" }
    display_name = "GPU box (Python 3.11)"
    jump_host = "me@bastion:22"   # optional ProxyJump
    connect_timeout = 10          # seconds, for each connection attempt and for the start
    lease = 300                   # seconds the remote nanny waits, with no host connected,
                                  # before it ends the kernel (see docs/nanny-protocol.md)

Reading the config never connects anywhere: ``kernel-hub list`` shows
``ssh/<name>`` for every table at once. A table with a bad field is left out
with one warning naming the file, the table, the field and the fix; the other
tables still give their kernel types. The schema :data:`SCHEMA` (an
:class:`SSHTable` per table) does that, and ``kernel-hub config check``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from kernel_hub.provider import (
    ConfigError,
    ConfigSchema,
    KernelType,
    argv_setting,
    positive,
    protocol_version_setting,
    setting,
    table_name,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kernel_hub.provider import LaunchRequest

__all__ = [
    "PROVIDER",
    "SCHEMA",
    "SSHHostConfig",
    "SSHKernelConfig",
    "SSHTable",
    "kernel_types",
    "parse_config",
]

#: The provider id, and the name of this plugin's table in the config file.
PROVIDER = "ssh"


@dataclass(frozen=True)
class SSHHostConfig:
    """How to reach one SSH host; equal configs share one connection.

    :param host: a host name, address or ``~/.ssh/config`` alias.
    :param port: the SSH port; ``None`` lets ``~/.ssh/config`` (or 22) decide.
    :param user: the login; ``None`` lets ``~/.ssh/config`` (or the local user) decide.
    :param identity_file: a private key file; ``None`` uses the agent and default keys.
    :param jump_host: ``[user@]host[:port]`` to hop through (ProxyJump).
    :param connect_timeout: seconds for one connection attempt.
    :param known_hosts: a known_hosts file; ``None`` uses ``~/.ssh/known_hosts``
        (or ``UserKnownHostsFile`` from ``~/.ssh/config``).
    :param insecure_no_host_key_check: accept any host key (man-in-the-middle risk).
    :param config: ``ssh_config`` files to read instead of ``~/.ssh/config``.
    :param reconnect_timeout: how long a dropped connection is retried before
        its kernels are reported dead.
    """

    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    jump_host: str | None = None
    connect_timeout: float = 10.0
    known_hosts: str | None = None
    insecure_no_host_key_check: bool = False
    config: tuple[str, ...] | None = None
    reconnect_timeout: float = 60.0

    @property
    def label(self) -> str:
        """Return ``user@host:port`` as configured, for messages."""
        out = self.host
        if self.user:
            out = f"{self.user}@{out}"
        if self.port:
            out = f"{out}:{self.port}"
        return out

    def to_state(self) -> dict[str, Any]:
        """Return a JSON-able dict, as stored in a kernel's state for re-attach."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity_file": self.identity_file,
            "jump_host": self.jump_host,
            "connect_timeout": self.connect_timeout,
            "known_hosts": self.known_hosts,
            "insecure_no_host_key_check": self.insecure_no_host_key_check,
            "config": list(self.config) if self.config is not None else None,
            "reconnect_timeout": self.reconnect_timeout,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SSHHostConfig:
        """Rebuild from :meth:`to_state` output."""
        try:
            cfg = state.get("config")
            return cls(
                host=str(state["host"]),
                port=state.get("port"),
                user=state.get("user"),
                identity_file=state.get("identity_file"),
                jump_host=state.get("jump_host"),
                connect_timeout=float(state.get("connect_timeout", 10.0)),
                known_hosts=state.get("known_hosts"),
                insecure_no_host_key_check=bool(state.get("insecure_no_host_key_check", False)),
                config=tuple(cfg) if cfg is not None else None,
                reconnect_timeout=float(state.get("reconnect_timeout", 60.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid ssh host state {dict(state)!r}: {exc}") from None


@dataclass(frozen=True)
class SSHKernelConfig:
    """One ``[ssh.<name>]`` table: a host and how to run a kernel there.

    :param name: the table name; the kernel type is ``ssh/<name>``.
    :param target: how to reach the host.
    :param python: the remote Python that runs the nanny (it needs pyzmq) and, unless
        *argv* says otherwise, the kernel (``-m ipykernel_launcher``).
    :param argv: the kernel's remote command line, with ``{connection_file}``; empty:
        ipykernel on *python*.
    :param kernel_protocol_version: as in a kernelspec; ``"5.6"`` or later starts the
        kernel with the registration handshake (JEP 66): it binds its own ports on the
        remote host and reports them to the nanny.
    :param cwd: the kernel's remote working directory (``~`` is the remote home).
    :param env: extra environment of the remote kernel (not for secrets: it is
        passed on the remote command line).
    :param lease: seconds the remote nanny goes on with no host connected (this
        process dead, the link lost for good) before it ends the kernel and
        removes its files; ``None``: the nanny's default (300 s). Keep it longer
        than ``reconnect_timeout``, and long enough for a host to re-attach.
    """

    name: str
    target: SSHHostConfig
    python: str = "python3"
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    display_name: str = ""
    language: str = "python"
    interrupt_mode: Literal["signal", "message"] = "signal"
    lease: float | None = None
    argv: tuple[str, ...] = ()
    kernel_protocol_version: str | None = None

    def outliving(self, request: LaunchRequest) -> SSHKernelConfig:
        """Return this config for *request*: a kernel that must outlive its host
        (``request.outlive``, a hub with a state dir) gets that as its nanny's lease."""
        return replace(self, lease=request.outlive) if request.outlive else self

    def kernel_type(self) -> KernelType:
        """Return the :class:`KernelType` ``ssh/<name>`` (no connection is made)."""
        return KernelType(
            provider=PROVIDER,
            name=self.name,
            display_name=self.display_name or f"{self.name} (ssh {self.target.label})",
            language=self.language,
            argv=self.kernel_argv(),
            env=dict(self.env),
            interrupt_mode=self.interrupt_mode,
            metadata=self._metadata(),
        )

    def kernel_argv(self) -> tuple[str, ...]:
        """Return the kernel's remote argv: the table's, else ipykernel on :attr:`python`."""
        return self.argv or (self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}")

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"host": self.target.label, "python": self.python}
        if self.kernel_protocol_version is not None:
            # Where a kernelspec keeps it: the hub's registration_wanted() reads it there.
            metadata["kernel_protocol_version"] = self.kernel_protocol_version
        return metadata


def _a_host(value: str) -> str:
    if not value:
        raise ValueError("must name a host (a host name or ~/.ssh/config alias), not ''")
    return value


def _a_port(value: int) -> int:
    if not 0 < value < 65536:
        raise ValueError(f"must be between 1 and 65535, not {value}")
    return value


def _path(value: str | None) -> str | None:
    return os.path.expanduser(value) if value else None


@dataclass(frozen=True)
class SSHTable:
    """One ``[ssh.<name>]`` table as written; :meth:`kernel_config` is what the plugin uses."""

    name: str = table_name()
    host: str = setting(doc="a host name, address or ~/.ssh/config alias", check=_a_host)
    port: int | None = setting(None, "the SSH port; none: ~/.ssh/config, else 22", check=_a_port)
    user: str | None = setting(None, "the login; none: ~/.ssh/config, else the local user")
    identity_file: str | None = setting(None, "a private key; none: the SSH agent, default keys")
    python: str = setting(
        "python3", "the remote Python that runs the nanny (with pyzmq) and, by default, ipykernel"
    )
    argv: tuple[str, ...] = argv_setting()
    kernel_protocol_version: str | None = protocol_version_setting()
    cwd: str | None = setting(None, "the kernel's remote working directory; none: the remote home")
    env: Mapping[str, str] = setting({}, "extra environment of the remote kernel (not secrets)")
    display_name: str = setting("", "the type's display name; default '<name> (ssh <host>)'")
    language: str = setting("python", "the kernel's language")
    jump_host: str | None = setting(None, "[user@]host[:port] to hop through (ProxyJump)")
    connect_timeout: float = setting(
        10.0, "seconds for each connection attempt and for the start", check=positive
    )
    reconnect_timeout: float = setting(
        60.0,
        "seconds a dropped connection is retried before its kernels count as dead",
        check=positive,
    )
    known_hosts: str | None = setting(None, "a known_hosts file; none: ~/.ssh/known_hosts")
    insecure_no_host_key_check: bool = setting(
        False, "accept any host key (man-in-the-middle risk)"
    )
    config: tuple[str, ...] | None = setting(
        None, "ssh_config files to read instead of ~/.ssh/config"
    )
    interrupt_mode: Literal["signal", "message"] = setting(
        "signal", "signal: SIGINT to the kernel; message: interrupt_request"
    )
    lease: float | None = setting(
        None, "seconds the remote nanny waits with no host connected; none: 300", check=positive
    )

    def kernel_config(self) -> SSHKernelConfig:
        """Return the table as the plugin uses it (paths expanded, the host apart)."""
        target = SSHHostConfig(
            host=self.host,
            port=self.port,
            user=self.user,
            identity_file=_path(self.identity_file),
            jump_host=self.jump_host,
            connect_timeout=float(self.connect_timeout),  # the file may give an int
            known_hosts=_path(self.known_hosts),
            insecure_no_host_key_check=self.insecure_no_host_key_check,
            config=tuple(map(os.path.expanduser, self.config)) if self.config is not None else None,
            reconnect_timeout=float(self.reconnect_timeout),
        )
        return SSHKernelConfig(
            name=self.name,
            target=target,
            python=self.python,
            cwd=self.cwd,
            env=dict(self.env),
            display_name=self.display_name,
            language=self.language,
            interrupt_mode=self.interrupt_mode,
            lease=float(self.lease) if self.lease is not None else None,
            argv=tuple(self.argv),
            kernel_protocol_version=self.kernel_protocol_version,
        )


#: The ``[ssh]`` part of the config file: one kernel-type table per ``[ssh.<name>]``.
SCHEMA = ConfigSchema(PROVIDER, types=SSHTable)


def parse_config(section: Mapping[str, Any], *, strict: bool = False) -> dict[str, SSHKernelConfig]:
    """Parse the ``[ssh]`` section: ``{name: table}`` of the good tables (tests, tools).

    The hooks use :meth:`SCHEMA.load <kernel_hub.provider.ConfigSchema.load>`,
    which also logs each bad table once.

    :param strict: raise on the first bad table instead of leaving it out.
    :raises ConfigError: (only when *strict*) naming the table and field that is
        wrong and how to fix it.
    """
    parsed = SCHEMA.parse(section)
    if strict and parsed.problems:
        raise ConfigError(parsed.problems[0].message)
    return {name: table.kernel_config() for name, table in parsed.types.items()}


def kernel_types(section: Mapping[str, Any]) -> list[KernelType]:
    """Return the kernel types of the good tables of ``[ssh]``, without connecting anywhere."""
    return [kc.kernel_type() for kc in parse_config(section).values()]
