"""Frozen value types that plugins hand to the core and the core hands to hosts.

Hooks register; objects act. Everything here is plain data: a plugin's
``find_kernel_types`` returns :class:`KernelType` objects (and an
:class:`UnavailableType` for a type it would offer but cannot), ``launch`` receives a
:class:`LaunchRequest` and produces a :class:`LaunchResult`, and ``restart_policy``
returns a :class:`RestartPolicy`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .manager import KernelManager

__all__ = [
    "ENCRYPTION_POLICIES",
    "CullPolicy",
    "KernelType",
    "LaunchRequest",
    "LaunchResult",
    "RestartPolicy",
    "TransportEncryption",
    "UnavailableType",
    "check_encryption",
    "checked_env",
    "split_type_id",
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]*$")
#: A kernel id becomes part of file, container and job names: no path separators.
_KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")

InterruptMode = Literal["signal", "message"]

#: ``transport_encryption``: CurveZMQ never, when the kernel type declares support
#: (``supported_encryption: ["curve"]`` in its metadata), or always.
TransportEncryption = Literal["disabled", "auto", "required"]
ENCRYPTION_POLICIES: tuple[TransportEncryption, ...] = ("disabled", "auto", "required")


def check_encryption(value: object, what: str = "transport_encryption") -> TransportEncryption:
    """Return *value* as a ``transport_encryption`` policy, or raise a one-line ValueError."""
    if value not in ENCRYPTION_POLICIES:
        raise ValueError(f"{what} must be 'disabled', 'auto' or 'required', not {value!r}")
    return value


def _normalise(value: str, what: str) -> str:
    norm = value.strip().lower()
    if not _NAME_RE.match(norm):
        raise ValueError(
            f"invalid kernel {what} {value!r}: use letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return norm


def split_type_id(type_id: str) -> tuple[str, str]:
    """Split ``"<provider>/<name>"`` into its two normalised parts.

    :raises ValueError: when *type_id* has no ``/`` or a part is not a valid name.
    """
    provider, sep, name = type_id.partition("/")
    if not sep:
        raise ValueError(f"kernel type id {type_id!r} must look like '<provider>/<name>'")
    return _normalise(provider, "provider"), _normalise(name, "name")


@dataclass(frozen=True)
class KernelType:
    """A kind of kernel a provider can launch, e.g. ``spec/python3`` or ``ssh/gpu-box``.

    :param provider: the provider (plugin) id; becomes the part before ``/``.
    :param name: the provider-local name; normalised to lower case.
    :param display_name: a human-readable name for menus.
    :param language: the kernel's language, e.g. ``python``.
    :param argv: the command line, for providers that start a process; may hold
        the ``{connection_file}`` and ``{resource_dir}`` templates.
    :param env: extra environment variables for the kernel.
    :param interrupt_mode: ``"signal"`` (SIGINT to the process group) or
        ``"message"`` (``interrupt_request`` on the control channel).
    :param resource_dir: a directory of kernel resources (logos, kernel.js), if any.
    :param metadata: free-form provider metadata, JSON-able.
    """

    provider: str
    name: str
    display_name: str = ""
    language: str = ""
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    interrupt_mode: InterruptMode = "signal"
    resource_dir: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", _normalise(self.provider, "provider"))
        object.__setattr__(self, "name", _normalise(self.name, "name"))
        object.__setattr__(self, "argv", tuple(self.argv))
        if self.interrupt_mode not in ("signal", "message"):
            raise ValueError(
                f"kernel type {self.provider}/{self.name}: interrupt_mode must be "
                f"'signal' or 'message', not {self.interrupt_mode!r}"
            )
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        object.__setattr__(self, "id", f"{self.provider}/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of this type (used by ``kernel-hub list --json``)."""
        return {
            "id": self.id,
            "provider": self.provider,
            "name": self.name,
            "display_name": self.display_name,
            "language": self.language,
            "argv": list(self.argv),
            "env": dict(self.env),
            "interrupt_mode": self.interrupt_mode,
            "resource_dir": self.resource_dir,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class UnavailableType:
    """A kernel type a provider would offer but cannot here, and what the user can do about it.

    ``find_kernel_types`` may return these next to its :class:`KernelType` objects.
    The type is not listed or launchable; a host that asks for it (or for the
    default type, when it is one) gets :class:`~kernel_hub.NoSuchKernelType`
    with *reason* instead of a list of other types, and ``kernel-hub list``
    shows the reason.

    :param provider: the provider (plugin) id, as for :class:`KernelType`.
    :param name: the provider-local name.
    :param reason: one line: what is missing and the command that fixes it, e.g.
        ``"ipykernel is not importable by /usr/bin/python3; install it:
        /usr/bin/python3 -m pip install ipykernel"``.

    .. versionadded:: 0.1
    """

    provider: str
    name: str
    reason: str
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", _normalise(self.provider, "provider"))
        object.__setattr__(self, "name", _normalise(self.name, "name"))
        object.__setattr__(self, "reason", " ".join(str(self.reason).split()))
        object.__setattr__(self, "id", f"{self.provider}/{self.name}")


def checked_env(env: object, what: str) -> dict[str, str]:
    """Return *env* as a dict if it is a valid process environment, else raise.

    Names must be non-empty strings without ``=`` or NUL, values strings without
    NUL: what ``execve`` can pass on.

    :param what: how the message names the mapping, e.g. ``"launch env"``.
    :raises ValueError: naming the first bad entry and what to do about it.
    """
    if not isinstance(env, Mapping):
        raise ValueError(f"{what} must be a mapping of str to str, not {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(
                f"{what}: {key!r} is not a valid environment variable name "
                "(a non-empty string without '=' or NUL)"
            )
        if not isinstance(value, str):
            raise ValueError(
                f"{what}[{key!r}] must be a str, not {type(value).__name__}; "
                "convert it with str() if that is what you meant"
            )
        if "\0" in value:
            raise ValueError(f"{what}[{key!r}] contains a NUL character, which no process can get")
    return dict(env)


@dataclass(frozen=True)
class LaunchRequest:
    """What a host asked for when it called :meth:`KernelHub.launch`.

    :param kernel_id: the id the hub gave this kernel (a UUID string).
    :param cwd: the working directory for the kernel, or ``None`` for the provider's default.
    :param env: extra environment variables, applied over the kernel type's ``env``.
    :param params: provider-specific parameters, JSON-able.
    :param connection: on a relaunch, the connection info of the process being
        replaced; ``None`` for a first launch. A provider that chooses the
        endpoint its clients connect to reuses it: the same ``transport``,
        ``ip``, five ports, ``key`` and ``signature_scheme``, so that every
        client holding the old connection info (a jupyter_client client, a
        ``jupyter console --existing``) reaches the new process without noticing.
        Where it cannot (a port is taken now), it takes new ports and keeps the
        key. The fields it holds are the ones to keep: after a launch that failed
        because a port was taken, the core passes it again without the ports.
        A provider whose endpoint moves by nature (a batch job on another node)
        may ignore it; the core then emits ``connection_changed``.
        :func:`kernel_hub.provider.new_connection_info` (``reuse=``) does all this
        for a local endpoint. Not shown in the repr: it holds the key.
    :param outlive: seconds the kernel must survive its host's death (a hub with a
        ``state_dir``), so that a new host can adopt it; then it must end by itself.
        ``0`` (the default): it ends with its host. A provider honours it by not
        registering the kernel with the reaper and giving it a lease of this many
        seconds where it has one (a nanny's); the hub ends what is left after the
        grace. :func:`kernel_hub.provider.local_launch` runs the kernel under a local
        nanny with this lease.
    :param transport_encryption: CurveZMQ for this kernel's sockets: ``"auto"`` (the
        default) when the type declares ``supported_encryption: ["curve"]``,
        ``"required"`` (the core refuses a type that does not, and a launch whose
        connection info comes back without ``curve_publickey``), ``"disabled"``.
        A provider asks :func:`kernel_hub.provider.curve_for` and passes its answer to
        :func:`~kernel_hub.provider.new_connection_info` (``curve=``).

    .. versionadded:: 0.1 *transport_encryption*
    """

    kernel_id: str
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    connection: Mapping[str, Any] | None = field(default=None, hash=False, repr=False)
    outlive: float = 0.0
    transport_encryption: TransportEncryption = "auto"

    def __post_init__(self) -> None:
        check_encryption(self.transport_encryption, "launch transport_encryption")
        if not isinstance(self.outlive, int | float) or self.outlive < 0:
            raise ValueError(
                f"launch outlive must be a number of seconds >= 0, not {self.outlive!r}"
            )
        # Checked here, before anything is started or written: a bad request fails whole,
        # with the name of what is wrong, and leaves nothing behind.
        kid = self.kernel_id
        if not isinstance(kid, str) or not _KERNEL_ID_RE.match(kid):
            raise ValueError(
                f"launch kernel_id {kid!r} is not a valid kernel id: use up to 128 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit (or leave it out)"
            )
        if self.cwd is not None:
            if not isinstance(self.cwd, (str, os.PathLike)):
                raise ValueError(f"launch cwd must be a path string, not {type(self.cwd).__name__}")
            cwd = os.fspath(self.cwd)
            if not isinstance(cwd, str) or "\0" in cwd:
                raise ValueError(f"launch cwd {cwd!r} is not a usable path string")
            object.__setattr__(self, "cwd", cwd)
        object.__setattr__(self, "env", checked_env(self.env, "launch env"))
        if not isinstance(self.params, Mapping):
            raise ValueError(f"launch params must be a mapping, not {type(self.params).__name__}")
        try:
            json.dumps(self.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"launch params must be JSON-able (they are part of the kernel's state): {exc}"
            ) from None
        # A copy, as for env: a relaunch uses the request as it was made, whatever the caller
        # does with its dict afterwards.
        object.__setattr__(self, "params", dict(self.params))
        if self.connection is not None:
            if not isinstance(self.connection, Mapping):
                raise ValueError(
                    f"launch connection must be a mapping (connection info), "
                    f"not {type(self.connection).__name__}"
                )
            object.__setattr__(self, "connection", dict(self.connection))


@dataclass(frozen=True)
class LaunchResult:
    """What a provider's launch produced.

    :param connection_info: the kernel's connection info (ports, ip, key,
        transport, signature_scheme), as in a Jupyter connection file.
    :param state: a JSON-able description of what was started, enough for
        ``make_manager`` to rebuild a manager for it, in this or another process.
    :param manager: the live manager of what was started, if the launch has one
        (it holds the child process, the open connection or tunnel). The hub
        then uses it as it is and calls ``make_manager`` only to rebuild a
        manager from *state*, on :meth:`KernelHub.attach`. Live objects pass
        from launch to manager here, never through module globals.
    """

    connection_info: Mapping[str, Any]
    state: Mapping[str, Any]
    manager: KernelManager | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CullPolicy:
    """When the hub shuts down a kernel that does nothing (idle culling).

    A kernel is *working* while an execution is in progress (its last status is
    ``busy``) or while its processes use CPU (:meth:`KernelManager.cpu_seconds`:
    a silent ten-hour computation, or a thread computing after its execution
    replied). It is culled after *idle* seconds of neither: no IOPub status, no
    CPU use above *cpu*, no execution in progress.

    :param idle: seconds of inactivity after which a kernel is culled.
    :param busy: seconds a kernel may stay ``busy`` without using CPU before it is
        culled too (a request stuck waiting forever); ``None`` (the default): a busy
        kernel is never culled, since it may be waiting on I/O or ``input()``.
    :param cpu: CPU use, in CPU-seconds per second (``0.05``: 5 % of one core), above
        which the kernel's processes count as working between two checks.
    :param connected: count a kernel with an open client of this hub as active, as
        jupyter_server's ``cull_connected`` does; off by default.
    :param interval: seconds between two checks; ``None``: a quarter of the shortest
        threshold, within 1 to 60 s.
    """

    idle: float
    busy: float | None = None
    cpu: float = 0.05
    connected: bool = False
    interval: float | None = None

    def __post_init__(self) -> None:
        if self.idle <= 0 or (self.busy is not None and self.busy <= 0) or self.cpu < 0:
            raise ValueError(f"invalid {self!r}: idle>0, busy>0 (or None) and cpu>=0")
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"invalid {self!r}: interval>0 (or None)")

    @property
    def check_every(self) -> float:
        """Seconds between two checks of a kernel under this policy."""
        if self.interval is not None:
            return self.interval
        shortest = min(self.idle, self.busy) if self.busy is not None else self.idle
        return min(60.0, max(1.0, shortest / 4))


@dataclass(frozen=True)
class RestartPolicy:
    """How the restarter treats a kernel that dies without being asked to.

    :param enabled: restart at all.
    :param limit: at most this many restarts within *window* seconds, then give up.
    :param window: the sliding window, in seconds, that *limit* counts over.
    :param backoff_initial: the delay before the first restart, in seconds.
    :param backoff_max: the cap of the exponentially growing delay.
    :param jitter: the random fraction (0..1) added to each delay.
    :param stable_after: a kernel that stays up this long has its restart count reset.
    """

    enabled: bool = True
    limit: int = 5
    window: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    jitter: float = 0.1
    stable_after: float = 30.0

    def __post_init__(self) -> None:
        if self.limit < 0 or self.window <= 0 or self.backoff_initial < 0:
            raise ValueError(f"invalid {self!r}: limit>=0, window>0 and backoff_initial>=0")
        if self.backoff_max < self.backoff_initial or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid {self!r}: backoff_max>=backoff_initial, 0<=jitter<=1")

    def delay(self, attempt: int, *, random: float = 0.0) -> float:
        """Return the backoff before restart number *attempt* (1-based).

        :param random: a number in ``[0, 1)`` scaling the jitter; the restarter
            passes :func:`random.random` so tests can pass a fixed value.
        """
        base = min(self.backoff_max, self.backoff_initial * 2 ** max(0, attempt - 1))
        return base * (1 + self.jitter * random)
