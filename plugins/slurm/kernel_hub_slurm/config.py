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
    cwd = "~/work"                  # the kernel's working directory on the node
    env = { OMP_NUM_THREADS = "4" }
    setup = ["module load cuda/12"]  # shell lines run in the job before the kernel
    display_name = "GPU, 2 h"
    language = "python"
    restart = false                 # resubmit a kernel that died? (default false)
    register_ip = "10.0.0.5"        # this host's address as the compute nodes see it
    job_dir = "~/.kernel-hub/slurm" # a directory on storage the compute nodes share

Reading the config never contacts Slurm: ``kernel-hub list`` shows ``slurm/<name>``
for every table at once. A launch's ``params`` override the job fields
(``params={"time": "00:30:00"}``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernel_hub.provider import ConfigError, KernelType, split_type_id

__all__ = ["PARAMS", "PROVIDER", "SlurmKernelConfig", "kernel_types", "parse_config"]

#: The provider id, and the name of this plugin's table in the config file.
PROVIDER = "slurm"

_NUMBER = (int, float)
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "partition": str,
    "time": str,
    "cpus": int,
    "mem": str,
    "gres": str,
    "account": str,
    "qos": str,
    "sbatch_args": list,
    "python": str,
    "argv": list,
    "cwd": str,
    "env": dict,
    "setup": list,
    "display_name": str,
    "language": str,
    "interrupt_mode": str,
    "restart": bool,
    "register_ip": str,
    "kernel_ip": str,
    "job_dir": str,
    "start_timeout": _NUMBER,
    "poll_interval": _NUMBER,
    "register_timeout": _NUMBER,
    "watch_interval": _NUMBER,
}

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


@dataclass(frozen=True)
class SlurmKernelConfig:
    """One ``[slurm.<name>]`` table: the job to submit and the kernel to run in it.

    :param name: the table name; the kernel type is ``slurm/<name>``.
    :param python: the compute node's Python, with ipykernel (and so pyzmq).
    :param argv: the kernel's argv with ``{connection_file}``; default ipykernel on *python*.
    :param env: extra environment of the kernel (sent in the private registration
        file, not on a command line).
    :param setup: shell lines the job runs before the nanny (``module load``, ``source``).
    :param restart: whether a kernel that died is resubmitted (default: no, since a
        new job may wait in the queue for hours).
    :param register_ip: where this host listens for the nanny's registration; an
        address the compute nodes can reach (default 127.0.0.1: one-machine clusters).
    :param kernel_ip: the address the kernel and nanny bind on the node; ``auto``
        picks the node's address on the route to *register_ip*.
    :param job_dir: where each launch's private directory goes; must be on storage
        the compute nodes share with this host.
    :param start_timeout: seconds a launch waits for the job to start and register.
    :param poll_interval: seconds between ``squeue`` checks while the job is pending.
    :param watch_interval: seconds between ``squeue`` checks while the kernel runs (the
        nanny's events report most ends at once; this catches a nanny that could not).
    :param register_timeout: seconds the nanny waits for this host to acknowledge its
        registration before it ends the kernel and the job (a host that died meanwhile).
    """

    name: str
    partition: str | None = None
    time: str | None = None
    cpus: int = 1
    mem: str | None = None
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = ()
    python: str = "python3"
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    setup: tuple[str, ...] = ()
    display_name: str = ""
    language: str = "python"
    interrupt_mode: str = "signal"
    restart: bool = False
    register_ip: str = "127.0.0.1"
    kernel_ip: str = "auto"
    job_dir: str = "~/.kernel-hub/slurm"
    start_timeout: float = 600.0
    poll_interval: float = 2.0
    register_timeout: float = 60.0
    watch_interval: float = 30.0

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
            interrupt_mode=self.interrupt_mode,  # type: ignore[arg-type]
            metadata={
                **{k: v for k, v in job.items() if v is not None},
                "account": self.account,
                "qos": self.qos,
                "python": self.python,
                "restart": self.restart,
            },
        )

    def kernel_argv(self) -> tuple[str, ...]:
        """Return the kernel's argv on the compute node."""
        return self.argv or (self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}")

    def with_params(self, params: Mapping[str, Any]) -> SlurmKernelConfig:
        """Return a copy with a launch's *params* applied over the table's values.

        :raises ConfigError: for a parameter that is not one of :data:`PARAMS` or is invalid.
        """
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise ConfigError(
                f"launch params {', '.join(map(repr, unknown))} are not known to slurm/"
                f"{self.name}; Slurm kernels take: {', '.join(PARAMS)}"
            )
        if not params:
            return self
        merged = {**_as_table(self), **params}
        return _parse_table(self.name, merged, where=f"launch params of slurm/{self.name}")

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


def _as_table(kc: SlurmKernelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(kc):
        value = getattr(kc, f.name)
        if f.name == "name" or value is None:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    if not kc.argv:
        out.pop("argv", None)
    out["env"] = dict(kc.env)
    return out


def _parse_table(name: str, table: Any, *, where: str | None = None) -> SlurmKernelConfig:
    place = where or f"kernel_hub config [slurm.{name}]"

    def fail(key: str | None, problem: str) -> ConfigError:
        return ConfigError(f"{place}" + (f" field {key!r}" if key else "") + f" {problem}")

    if not isinstance(table, Mapping):
        raise fail(None, f"must be a table (one per Slurm kernel type), not {type(table).__name__}")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"{place} has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"known fields: {', '.join(sorted(_FIELDS))}"
        )
    for key, value in table.items():
        expected = _FIELDS[key]
        # bool is an int: cpus = true must not pass as 1 CPU.
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
        if not ok:
            want = expected.__name__ if isinstance(expected, type) else "number"
            raise fail(key, f"must be a {want}, not {type(value).__name__} {value!r}")
    for key in ("partition", "account", "qos", "gres"):
        if key in table and not _WORD_RE.match(table[key]):
            raise fail(key, f"is not a valid Slurm name: {table[key]!r}")
    if "time" in table and not _TIME_RE.match(table["time"]):
        raise fail(
            "time",
            f"{table['time']!r} is not a Slurm time limit; use MM, HH:MM:SS, D-HH:MM:SS "
            "or UNLIMITED",
        )
    if "mem" in table and not _MEM_RE.match(table["mem"]):
        raise fail("mem", f"{table['mem']!r} is not a Slurm memory size; use e.g. 4000M or 16G")
    if "cpus" in table and table["cpus"] < 1:
        raise fail("cpus", f"must be at least 1, not {table['cpus']}")
    for key in ("start_timeout", "poll_interval", "register_timeout", "watch_interval"):
        if key in table and table[key] <= 0:
            raise fail(key, f"must be positive, not {table[key]}")
    for key in ("sbatch_args", "setup", "argv"):
        if not all(isinstance(a, str) for a in table.get(key, [])):
            raise fail(key, "must be a list of strings")
    for arg in table.get("sbatch_args", []):
        if arg.split("=", 1)[0] in _OWN_OPTIONS:
            raise fail(
                "sbatch_args", f"may not set {arg.split('=', 1)[0]}: the plugin sets it itself"
            )
    if table.get("argv") and not any("{connection_file}" in a for a in table["argv"]):
        raise fail("argv", "must contain '{connection_file}'")
    env = table.get("env", {})
    bad = [k for k, v in env.items() if not isinstance(v, str)]
    if bad:
        raise fail("env", f"values must be strings (see {bad[0]!r})")
    if table.get("interrupt_mode", "signal") not in ("signal", "message"):
        raise fail("interrupt_mode", "must be 'signal' or 'message'")
    if "register_ip" in table:
        try:
            if ipaddress.ip_address(table["register_ip"]).is_unspecified:
                raise fail(
                    "register_ip",
                    f"{table['register_ip']!r} listens everywhere; give the one address of this "
                    "host that the compute nodes reach",
                )
        except ValueError:
            raise fail(
                "register_ip",
                f"{table['register_ip']!r} is not an IP address; give this host's address "
                "as the compute nodes reach it",
            ) from None
    if table.get("kernel_ip", "auto") != "auto":
        try:
            ipaddress.ip_address(table["kernel_ip"])
        except ValueError:
            raise fail("kernel_ip", "must be an IP address or 'auto'") from None
    try:
        norm = split_type_id(f"{PROVIDER}/{name}")[1]
    except ValueError as exc:
        raise ConfigError(f"{place}: {exc}") from None
    kwargs = {k: v for k, v in table.items()}
    for key in ("sbatch_args", "setup", "argv"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    for key in ("start_timeout", "poll_interval", "register_timeout", "watch_interval"):
        if key in kwargs:
            kwargs[key] = float(kwargs[key])
    kwargs["job_dir"] = os.path.expanduser(kwargs.get("job_dir", "~/.kernel-hub/slurm"))
    return SlurmKernelConfig(name=norm, **kwargs)


def parse_config(section: Mapping[str, Any]) -> dict[str, SlurmKernelConfig]:
    """Parse the ``[slurm]`` section of the config: ``{name: table}``.

    :raises ConfigError: naming the table and field that is wrong and how to fix it.
    """
    out: dict[str, SlurmKernelConfig] = {}
    for name, table in section.items():
        kc = _parse_table(str(name), table)
        out[kc.name] = kc
    return out


def kernel_types(section: Mapping[str, Any]) -> list[KernelType]:
    """Return the kernel types of the ``[slurm]`` section, without contacting Slurm."""
    return [kc.kernel_type() for kc in parse_config(section).values()]
