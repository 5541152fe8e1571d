"""Slurm kernel types from the kernel_hub config file: one ``[slurm.<name>]`` table each.

.. code-block:: toml

    [slurm.gpu-short]
    partition = "gpu"               # sbatch --partition
    time = "02:00:00"               # --time (Slurm's formats: MM, HH:MM:SS, D-HH:MM, ...)
    cpus = 4                        # --cpus-per-task (default 1)
    mem = "16G"                     # --mem
    gres = "gpu:1"                  # --gres
    account = "proj42"              # --account
    qos = "short"                   # --qos
    sbatch_args = ["--constraint=a100"]        # any other sbatch options
    python = "/opt/conda/bin/python"   # on the compute node, with ipykernel (default python3)
    argv = ["/opt/conda/bin/python", "-m", "xpython_launcher", "-f", "{connection_file}"]
                                    # optional: another kernel than ipykernel
    kernel_protocol_version = "5.6" # optional, as in a kernelspec: 5.6 or later starts the
                                    # kernel with the registration handshake (JEP 66)
    cwd = "~/work"                  # the kernel's working directory on the node
    env = { OMP_NUM_THREADS = "4" }
    setup = ["module load cuda/12"]  # shell lines run in the job before the kernel
    display_name = "GPU, 2 h"
    language = "python"
    restart = false                 # resubmit a kernel that died? (default false)
    register_ip = "10.0.0.5"        # this host's address as the compute nodes see it
                                    # (route = "direct")
    job_dir = "~/.kernel-hub/slurm" # a directory on storage the compute nodes share
    login = "hpc"                   # submit through this login node over SSH: an [ssh.hpc]
                                    # table, or a host / ~/.ssh/config alias (needs the
                                    # extra kernel-hub-slurm[ssh])
    route = "login"                 # kernel traffic through the login node's connection
                                    # (default with login), or "direct"
    login_ip = "10.1.0.2"           # route = "login": the login node's address as the
                                    # compute nodes see it (default: register_ip)
    lease = 300                     # seconds the kernel outlives a host that stopped
                                    # answering (killed, or the link lost for good)

Reading the config never contacts Slurm: ``kernel-hub list`` shows ``slurm/<name>``
for every table at once. A table with a bad field leaves out only its own type,
with one warning naming the file, the table, the field and the fix (the schema
:data:`SCHEMA` of :mod:`kernel_hub.provider` does that, and ``kernel-hub config
check``). A launch's ``params`` override the job fields (``params={"time": "00:30:00"}``);
``registration`` and ``registration_timeout`` turn the handshake on or off and time it,
as for local kernels.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
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
    from collections.abc import Callable, Mapping

    from kernel_hub.provider import LaunchRequest

__all__ = [
    "PARAMS",
    "PROVIDER",
    "REGISTRATION_PARAMS",
    "SCHEMA",
    "SlurmKernelConfig",
    "parse_config",
]

#: The provider id, and the name of this plugin's table in the config file.
PROVIDER = "slurm"

#: The launch params of the registration handshake, as for local kernels (not table fields).
REGISTRATION_PARAMS = ("registration", "registration_timeout")

#: The fields a launch's ``params`` may override: what the job asks of Slurm.
PARAMS = (
    "partition",
    "time",
    "cpus",
    "mem",
    "gres",
    "account",
    "qos",
    "sbatch_args",
    "start_timeout",
    "poll_interval",
    "watch_interval",
)

_TIME_RE = re.compile(r"^(?:\d+-)?\d+(?::\d{1,2}){0,2}$|^(?:UNLIMITED|INFINITE)$", re.I)
_MEM_RE = re.compile(r"^\d+[KMGT]?$", re.I)
_WORD_RE = re.compile(r"^[\w.\-:,+=/]+$")
#: sbatch options the plugin sets itself; a table may not override them.
_OWN_OPTIONS = ("--parsable", "--output", "-o", "--error", "-e", "--wrap", "--job-name", "-J")


# ---- field checks: each returns the value or raises ValueError("<the rest of the sentence>")


def _slurm_name(value: str) -> str:
    if not _WORD_RE.match(value):
        raise ValueError(f"is not a valid Slurm name: {value!r}")
    return value


def _time_limit(value: str) -> str:
    if not _TIME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a Slurm time limit; use MM, HH:MM:SS, D-HH:MM:SS or UNLIMITED"
        )
    return value


def _memory(value: str) -> str:
    if not _MEM_RE.match(value):
        raise ValueError(f"{value!r} is not a Slurm memory size; use e.g. 4000M or 16G")
    return value


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _sbatch_args(value: tuple[str, ...]) -> tuple[str, ...]:
    for arg in value:
        if arg.split("=", 1)[0] in _OWN_OPTIONS:
            raise ValueError(f"may not set {arg.split('=', 1)[0]}: the plugin sets it itself")
    return value


def _address_the_nodes_reach(machine: str, machines: str) -> Callable[[str], str]:
    """Return a :func:`setting` check: one IP address of *machine* (*machines*: its
    possessive), as the compute nodes reach it."""

    def check(value: str) -> str:
        try:
            unspecified = ipaddress.ip_address(value).is_unspecified
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address; give {machines} address as the compute "
                "nodes reach it"
            ) from None
        if unspecified:
            raise ValueError(
                f"{value!r} listens everywhere; give the one address of {machine} that the "
                "compute nodes reach"
            )
        return value

    return check


_register_ip = _address_the_nodes_reach("this host", "this host's")
_login_ip = _address_the_nodes_reach("the login node", "the login node's")


def _login(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(
            f"{value!r} is not a login node; name an [ssh.<name>] table ('ssh/<name>' or "
            "'<name>') or a host as [user@]host[:port]"
        )
    return value


def _kernel_ip(value: str) -> str:
    if value != "auto":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IP address or 'auto', not {value!r}") from None
    return value


@dataclass(frozen=True)
class SlurmKernelConfig:
    """One ``[slurm.<name>]`` table: the job to submit and the kernel to run in it.

    Its fields are the table's fields (declared with :func:`~kernel_hub.provider.setting`);
    ``name`` is the table's name, and the kernel type is ``slurm/<name>``.
    """

    name: str = table_name()
    partition: str | None = setting(None, "sbatch --partition", check=_slurm_name)
    time: str | None = setting(
        None, "sbatch --time: MM, HH:MM:SS, D-HH:MM:SS or UNLIMITED", check=_time_limit
    )
    cpus: int = setting(1, "sbatch --cpus-per-task", check=_at_least_one)
    mem: str | None = setting(None, "sbatch --mem, e.g. 4000M or 16G", check=_memory)
    gres: str | None = setting(None, "sbatch --gres, e.g. gpu:1", check=_slurm_name)
    account: str | None = setting(None, "sbatch --account", check=_slurm_name)
    qos: str | None = setting(None, "sbatch --qos", check=_slurm_name)
    sbatch_args: tuple[str, ...] = setting((), "any other sbatch options", check=_sbatch_args)
    python: str = setting("python3", "the compute node's Python, with ipykernel (and pyzmq)")
    argv: tuple[str, ...] = argv_setting()
    kernel_protocol_version: str | None = protocol_version_setting()
    cwd: str | None = setting(None, "the kernel's working directory on the node")
    env: Mapping[str, str] = setting(
        {}, "extra environment of the kernel (sent in the private registration file)"
    )
    setup: tuple[str, ...] = setting((), "shell lines the job runs before the kernel")
    display_name: str = setting("", "the type's display name; default from the job fields")
    language: str = setting("python", "the kernel's language")
    interrupt_mode: Literal["signal", "message"] = setting(
        "signal", "signal: SIGINT to the kernel; message: interrupt_request"
    )
    restart: bool = setting(False, "resubmit a kernel that died (a new job may wait in the queue)")
    register_ip: str = setting(
        "127.0.0.1",
        "where the nodes dial back with route = direct: this host's address as they reach it "
        "(with route = login and no login_ip: the login node's, as before login_ip existed)",
        check=_register_ip,
    )
    login_ip: str | None = setting(
        None,
        "where the nodes dial back with route = login: the login node's address as they reach "
        "it (its sshd needs GatewayPorts clientspecified unless it is 127.0.0.1); default: "
        "register_ip",
        check=_login_ip,
    )
    kernel_ip: str = setting(
        "auto",
        "the address the kernel binds on the node; auto: on the route to where the nanny dials "
        "back (register_ip, or login_ip)",
        check=_kernel_ip,
    )
    job_dir: str = setting(
        "~/.kernel-hub/slurm", "where each launch's private directory goes (shared storage)"
    )
    login: str | None = setting(
        None,
        "submit through this login node over SSH: an [ssh.<name>] table or [user@]host[:port]",
        check=_login,
    )
    route: Literal["auto", "login", "direct"] = setting(
        "auto",
        "kernel traffic: login (through the login node's SSH connection), direct (this host "
        "reaches the nodes); auto: login when 'login' is set",
    )
    lease: float = setting(
        300.0,
        "seconds the job's nanny keeps the kernel with no host connected, then ends the job",
        check=positive,
    )
    start_timeout: float = setting(
        600.0, "seconds a launch waits for the job to start and register", check=positive
    )
    poll_interval: float = setting(
        2.0, "seconds between squeue checks while the job is pending", check=positive
    )
    register_timeout: float = setting(
        60.0, "seconds the nanny waits for this host to acknowledge it", check=positive
    )
    watch_interval: float = setting(
        30.0, "seconds between squeue checks while the kernel runs", check=positive
    )

    def __post_init__(self) -> None:
        if self.login is None:
            # Expanded on this host, where the directory is made (the nodes share it);
            # through a login node, "~" is the home directory there (see LoginRunner).
            object.__setattr__(self, "job_dir", os.path.expanduser(self.job_dir))
        for key in (
            "start_timeout",
            "poll_interval",
            "register_timeout",
            "watch_interval",
            "lease",
        ):
            object.__setattr__(self, key, float(getattr(self, key)))  # the file may give an int

    @property
    def via_login(self) -> bool:
        """Whether kernel traffic goes through the login node's SSH connection."""
        return self.route == "login" or (self.route == "auto" and self.login is not None)

    @property
    def dial_ip(self) -> str:
        """Return the address the job's nanny dials back to (the login node's with route login).

        ``register_ip`` once meant both; a table that sets only it keeps working.
        """
        if self.via_login:
            return self.login_ip or self.register_ip
        return self.register_ip

    def kernel_type(self) -> KernelType:
        """Return the :class:`KernelType` ``slurm/<name>`` (Slurm is not contacted)."""
        job = {k: getattr(self, k) for k in ("partition", "time", "cpus", "mem", "gres")}
        summary = ", ".join(f"{k}={v}" for k, v in job.items() if v is not None)
        return KernelType(
            provider=PROVIDER,
            name=self.name,
            display_name=self.display_name or f"{self.name} (Slurm {summary})",
            language=self.language,
            argv=self.kernel_argv(),
            env=dict(self.env),
            interrupt_mode=self.interrupt_mode,
            metadata={
                **{k: v for k, v in job.items() if v is not None},
                "account": self.account,
                "qos": self.qos,
                "python": self.python,
                "restart": self.restart,
                # Where a kernelspec keeps it: the hub's registration_wanted() reads it there.
                **(
                    {"kernel_protocol_version": self.kernel_protocol_version}
                    if self.kernel_protocol_version is not None
                    else {}
                ),
            },
        )

    def kernel_argv(self) -> tuple[str, ...]:
        """Return the kernel's argv on the compute node."""
        return self.argv or (self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}")

    def outliving(self, request: LaunchRequest) -> SlurmKernelConfig:
        """Return this config for *request*: a kernel that must outlive its host for longer
        than the table's lease (``request.outlive``, a hub with a state dir) gets that lease."""
        if request.outlive and request.outlive > self.lease:
            return dataclasses.replace(self, lease=request.outlive)
        return self

    def with_params(self, params: Mapping[str, Any]) -> SlurmKernelConfig:
        """Return a copy with a launch's *params* applied over the table's values.

        The registration params (:data:`REGISTRATION_PARAMS`) are no job fields: the
        launch reads them itself.

        :raises ConfigError: for a parameter that is not one of :data:`PARAMS` (or
            :data:`REGISTRATION_PARAMS`) or is invalid.
        """
        unknown = sorted(set(params) - set(PARAMS) - set(REGISTRATION_PARAMS))
        if unknown:
            raise ConfigError(
                f"launch params {', '.join(map(repr, unknown))} are not known to slurm/"
                f"{self.name}; Slurm kernels take: {', '.join(PARAMS + REGISTRATION_PARAMS)}"
            )
        params = {k: v for k, v in params.items() if k not in REGISTRATION_PARAMS}
        if not params:
            return self
        table = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        }
        where = f"launch params of slurm/{self.name}"
        result: SlurmKernelConfig = SCHEMA.parse_table(
            {**table, "env": dict(self.env), **params}, name=self.name, where=where
        )
        return result

    def sbatch_options(self) -> list[str]:
        """Return the sbatch options for the job's resources (not the plugin's own options)."""
        opts = ["--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cpus}"]
        for key, option in (
            ("partition", "--partition"),
            ("time", "--time"),
            ("mem", "--mem"),
            ("gres", "--gres"),
            ("account", "--account"),
            ("qos", "--qos"),
        ):
            value = getattr(self, key)
            if value is not None:
                opts.append(f"{option}={value}")
        return opts + list(self.sbatch_args)


#: The ``[slurm]`` part of the config file: one kernel-type table per ``[slurm.<name>]``.
SCHEMA = ConfigSchema(PROVIDER, types=SlurmKernelConfig)


def parse_config(section: Mapping[str, Any]) -> dict[str, SlurmKernelConfig]:
    """Parse the ``[slurm]`` section strictly (tests, tools): ``{name: table}``.

    The hooks use :meth:`SCHEMA.load <kernel_hub.provider.ConfigSchema.load>`
    instead, which leaves a bad table out with a warning.

    :raises ConfigError: the first bad table's one line, naming its field and the fix.
    """
    parsed = SCHEMA.parse(section)
    if parsed.problems:
        raise ConfigError(parsed.problems[0].message)
    return parsed.types
