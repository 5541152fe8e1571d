"""Remote kernel types from the kernel_hub config file: one ``[ssh.<name>]`` table each.

.. code-block:: toml

    [ssh.gpu-box]
    host = "gpu-box"              # an ~/.ssh/config alias works: its HostName, Port, User,
                                  # IdentityFile and ProxyJump apply
    user = "me"                   # optional; else ~/.ssh/config, else the local user
    python = "/opt/conda/bin/python"   # the remote Python with ipykernel (default python3)
    cwd = "~/work"                # the kernel's remote working directory
    env = { OMP_NUM_THREADS = "8" }
    display_name = "GPU box (Python 3.11)"
    jump_host = "me@bastion:22"   # optional ProxyJump
    connect_timeout = 10          # seconds, for each connection attempt and for the start
    lease = 300                   # seconds the remote nanny waits, with no host connected,
                                  # before it ends the kernel (see docs/nanny-protocol.md)

Reading the config never connects anywhere: ``kernel-hub list`` shows
``ssh/<name>`` for every table at once. A table with a bad field is left out
with one warning naming the table, the field and the fix; the other tables
still give their kernel types. ``kernel-hub config check`` shows each table's
effective values (:func:`check_config`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernel_hub.provider import ConfigCheck, ConfigError, KernelType, split_type_id

__all__ = [
    "PROVIDER",
    "SSHHostConfig",
    "SSHKernelConfig",
    "check_config",
    "kernel_types",
    "parse_config",
]

log = logging.getLogger("kernel_hub.ssh")

#: The provider id, and the name of this plugin's table in the config file.
PROVIDER = "ssh"

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "user": str,
    "identity_file": str,
    "python": str,
    "cwd": str,
    "env": dict,
    "display_name": str,
    "language": str,
    "jump_host": str,
    "connect_timeout": (int, float),
    "reconnect_timeout": (int, float),
    "known_hosts": str,
    "insecure_no_host_key_check": bool,
    "config": list,
    "interrupt_mode": str,
    "lease": (int, float),
}


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
    :param python: the remote Python that has ipykernel.
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
    interrupt_mode: str = "signal"
    lease: float | None = None

    def kernel_type(self) -> KernelType:
        """Return the :class:`KernelType` ``ssh/<name>`` (no connection is made)."""
        return KernelType(
            provider=PROVIDER,
            name=self.name,
            display_name=self.display_name or f"{self.name} (ssh {self.target.label})",
            language=self.language,
            argv=(self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"),
            env=dict(self.env),
            interrupt_mode=self.interrupt_mode,  # type: ignore[arg-type]
            metadata={"host": self.target.label, "python": self.python},
        )


def _where(name: str, key: str | None = None) -> str:
    return f"kernel_hub config [ssh.{name}]" + (f" field {key!r}" if key else "")


def _parse_table(name: str, table: Any) -> SSHKernelConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{_where(name)} must be a table (one per remote kernel type), "
            f"not {type(table).__name__}"
        )
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        import difflib  # only for a typo

        close = difflib.get_close_matches(unknown[0], _FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{_where(name)} has unknown field(s) {', '.join(map(repr, unknown))}{hint}; "
            f"known fields: {', '.join(sorted(_FIELDS))}"
        )
    for key, value in table.items():
        expected = _FIELDS[key]
        # bool is an int: a port = true must not pass as port 1.
        if isinstance(value, bool) and expected is not bool:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            want = expected.__name__ if isinstance(expected, type) else "number"
            raise ConfigError(
                f"{_where(name, key)} must be a {want}, not {type(value).__name__} {value!r}"
            )
    if not table.get("host"):
        raise ConfigError(f"{_where(name)} needs a 'host' (a host name or ~/.ssh/config alias)")
    port = table.get("port")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{_where(name, 'port')} must be between 1 and 65535, not {port}")
    for key in ("connect_timeout", "reconnect_timeout", "lease"):
        if key in table and table[key] <= 0:
            raise ConfigError(f"{_where(name, key)} must be positive, not {table[key]}")
    env = table.get("env", {})
    bad = [k for k, v in env.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{_where(name, 'env')}: values must be strings (see {bad[0]!r})")
    if table.get("interrupt_mode", "signal") not in ("signal", "message"):
        raise ConfigError(f"{_where(name, 'interrupt_mode')} must be 'signal' or 'message'")
    configs = table.get("config")
    if configs is not None and not all(isinstance(c, str) for c in configs):
        raise ConfigError(f"{_where(name, 'config')} must be a list of ssh_config file paths")

    def path(key: str) -> str | None:
        value = table.get(key)
        return os.path.expanduser(value) if value else None

    target = SSHHostConfig(
        host=table["host"],
        port=port,
        user=table.get("user"),
        identity_file=path("identity_file"),
        jump_host=table.get("jump_host"),
        connect_timeout=float(table.get("connect_timeout", 10.0)),
        known_hosts=path("known_hosts"),
        insecure_no_host_key_check=table.get("insecure_no_host_key_check", False),
        config=tuple(os.path.expanduser(c) for c in configs) if configs is not None else None,
        reconnect_timeout=float(table.get("reconnect_timeout", 60.0)),
    )
    try:
        norm = split_type_id(f"{PROVIDER}/{name}")[1]
        kc = SSHKernelConfig(
            name=norm,
            target=target,
            python=table.get("python", "python3"),
            cwd=table.get("cwd"),
            env=dict(env),
            display_name=table.get("display_name", ""),
            language=table.get("language", "python"),
            interrupt_mode=table.get("interrupt_mode", "signal"),
            lease=float(table["lease"]) if "lease" in table else None,
        )
    except ValueError as exc:
        raise ConfigError(f"{_where(name)}: {exc}") from None
    return kc


def parse_config(section: Mapping[str, Any], *, strict: bool = False) -> dict[str, SSHKernelConfig]:
    """Parse the ``[ssh]`` section of the config: ``{name: table}``.

    :param strict: raise on the first bad table instead of leaving it out.
    A bad table left out is logged once per process, in one line naming the
    table, the field and the fix.

    :raises ConfigError: (only when *strict*) naming the table and field that is
        wrong and how to fix it.
    """
    out: dict[str, SSHKernelConfig] = {}
    for name, table in section.items():
        try:
            kc = _parse_table(str(name), table)
        except ConfigError as exc:
            if strict:
                raise
            _warn_once(f"{exc}. The ssh/{name} kernel type is left out until this is fixed")
            continue
        out[kc.name] = kc
    return out


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def kernel_types(section: Mapping[str, Any]) -> list[KernelType]:
    """Return the kernel types of the good tables of ``[ssh]``, without connecting anywhere."""
    return [kc.kernel_type() for kc in parse_config(section).values()]


#: What each field is when a table does not set it, in words for ``config check``.
_DEFAULTS: dict[str, Any] = {
    "port": "from ~/.ssh/config, else 22",
    "user": "from ~/.ssh/config, else the local user",
    "identity_file": "the SSH agent and default keys",
    "python": "python3",
    "cwd": "the remote home",
    "env": {},
    "display_name": "<name> (ssh <host>)",
    "language": "python",
    "jump_host": "from ~/.ssh/config (ProxyJump), else none",
    "connect_timeout": 10.0,
    "reconnect_timeout": 60.0,
    "known_hosts": "~/.ssh/known_hosts",
    "insecure_no_host_key_check": False,
    "config": ["~/.ssh/config"],
    "interrupt_mode": "signal",
}


def check_config(section: Mapping[str, Any]) -> list[ConfigCheck]:
    """Check every ``[ssh.<name>]`` table: its effective values and their sources.

    The optional ``check_config`` attribute of the plugin (see
    :mod:`kernel_hub.plugins.config`); ``kernel-hub config check`` calls it.
    """
    checks = []
    for name, table in section.items():
        try:
            _parse_table(str(name), table)
        except ConfigError as exc:
            checks.append(ConfigCheck(f"{PROVIDER}.{name}", error=str(exc)))
            continue
        values: dict[str, tuple[Any, str]] = {"host": (table["host"], "config")}
        for key, default in _DEFAULTS.items():
            values[key] = (table[key], "config") if key in table else (default, "default")
        checks.append(ConfigCheck(f"{PROVIDER}.{name}", values))
    return checks
