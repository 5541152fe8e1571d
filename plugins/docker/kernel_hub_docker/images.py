"""Docker kernel types: from the ``[docker.<name>]`` config tables and from labelled images.

Config (``~/.config/kernel-hub/config.toml``):

.. code-block:: toml

    [docker]                     # plugin settings (scalars)
    ping_timeout = 3             # seconds before the engine counts as down
    discover_labels = true       # offer every image labelled org.kernel-hub.kernel

    [docker.py311]               # one table per kernel type: docker/py311
    image = "python:3.11-slim"
    display_name = "Python 3.11 (Docker)"
    argv = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    cpus = 1.5
    memory = "1g"

A local image carrying the label :data:`IMAGE_LABEL`, whose value is a JSON
object (``name``, ``argv``, ``language``, ``display_name``, ``env``,
``metadata``, and any of the options below), is a kernel type too: building a
labelled image is enough.

``metadata`` is a kernelspec's ``metadata``: ``{"supported_encryption":
["curve"]}`` declares that the image's kernel speaks CurveZMQ (ipykernel 7.4 or
later), so that its kernels are encrypted under ``transport_encryption``
``auto`` and may be launched under ``required``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from kernel_hub.provider import (
    ConfigError,
    ConfigSchema,
    KernelType,
    positive,
    setting,
    table_name,
)

from .engine import PING_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CURVE",
    "DEFAULT_ARGV",
    "IMAGE_LABEL",
    "PROVIDER",
    "SCHEMA",
    "DockerOptions",
    "DockerSettings",
    "DockerTable",
    "types_from_config",
    "types_from_images",
]

log = logging.getLogger("kernel_hub.docker")

#: The provider id of every kernel type this plugin offers (``docker/<name>``).
PROVIDER = "docker"
#: The image label that makes an image a kernel type; its value is a JSON object.
IMAGE_LABEL = "org.kernel-hub.kernel"
#: The kernel command inside the container when a type does not give one.
DEFAULT_ARGV = ("python3", "-m", "ipykernel_launcher", "-f", "{connection_file}")
#: The one transport encryption of ZeroMQ kernels, named as in ``supported_encryption``.
CURVE = "curve"


@dataclass(frozen=True)
class DockerOptions:
    """How to run the container of one kernel type; stored in ``KernelType.metadata``.

    :param image: the image to run (name:tag or id).
    :param workdir: the working directory inside the container (default: the image's).
    :param mounts: ``"host:container[:ro|rw]"`` bind mounts.
    :param cpus: CPU limit (``1.5`` = one and a half cores), or ``None``.
    :param memory: memory limit (``"512m"``, ``"2g"`` or bytes), or ``None``.
    :param network: the Docker network to join (default: the engine's bridge).
    :param mount_cwd: bind-mount the launch request's ``cwd`` and work there.
    :param pull: pull the image when it is missing locally.
    :param user: the user to run as (``"1000:1000"``), default the image's.
    :param init: run Docker's init (tini) as PID 1: it forwards signals and reaps zombies.
    :param source: ``"config"`` or ``"label"``: where the type came from.
    """

    image: str
    workdir: str | None = None
    mounts: tuple[str, ...] = ()
    cpus: float | None = None
    memory: str | int | None = None
    network: str | None = None
    mount_cwd: bool = False
    pull: bool = False
    user: str | None = None
    init: bool = True
    source: str = "config"

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, where: str) -> DockerOptions:
        """Validate the container options of a config table, image label or launch params.

        :param where: names the table or image in error messages.
        :raises ConfigError: naming *where* and the bad key.
        """
        table = {k: v for k, v in data.items() if k != "source"}
        parsed: DockerTable = SCHEMA.parse_table(table, name="", where=where)
        return parsed.options(source=str(data.get("source", "config")))

    def to_dict(self) -> dict[str, Any]:
        """Return the options as JSON-able data (the inverse of :meth:`parse`)."""
        data = asdict(self)
        data["mounts"] = list(self.mounts)
        return data

    def merged(self, params: Mapping[str, Any]) -> DockerOptions:
        """Return these options with launch *params* over them (call arguments win)."""
        overrides = {k: v for k, v in params.items() if k in self.to_dict() and k != "source"}
        if not overrides:
            return self
        return DockerOptions.parse({**self.to_dict(), **overrides}, where="launch params")


def _split_mount(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise ValueError(
            f"mount {spec!r} must be 'host-path:container-path[:ro|rw]' with absolute paths"
        )
    return parts[0], parts[1], mode


def parse_mount(spec: str, *, where: str = "mount") -> tuple[str, str, str]:
    """Split ``"host:container[:ro|rw]"`` into ``(host, container, mode)``.

    :raises ConfigError: when the spec is not of that shape or a path is not absolute.
    """
    try:
        return _split_mount(spec)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ---- the config file: [docker] settings and [docker.<name>] tables ----


def _an_image(value: str) -> str:
    if not value:
        raise ValueError("must name a Docker image, e.g. 'python:3.11'")
    return value


def _mounts(value: tuple[str, ...]) -> tuple[str, ...]:
    for spec in value:
        _split_mount(spec)
    return value


def _an_argv(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must be a non-empty list of strings")
    return value


def _a_metadata(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if "docker" in value:
        raise ValueError("may not hold 'docker': the plugin keeps the container options there")
    declared = value.get("supported_encryption")
    if declared is None:
        return value
    items = [declared] if isinstance(declared, str) else declared
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError(
            f"'supported_encryption' must be a list of strings, like [{CURVE!r}], not {declared!r}"
        )
    unknown = [x for x in items if x.strip().lower() != CURVE]
    if unknown:
        raise ValueError(
            f"'supported_encryption' may only list {CURVE!r} (CurveZMQ, ipykernel >= 7.4), "
            f"not {unknown[0]!r}"
        )
    return value


@dataclass(frozen=True)
class DockerSettings:
    """The plugin's own settings: the scalars of ``[docker]``."""

    ping_timeout: float = setting(
        PING_TIMEOUT, "seconds before the engine counts as down", check=positive
    )
    discover_labels: bool = setting(True, f"offer every local image labelled {IMAGE_LABEL}")


@dataclass(frozen=True)
class DockerTable:
    """One ``[docker.<name>]`` table (or an image's label): a kernel type and its container."""

    name: str = table_name()
    image: str = setting(doc="the image to run (name:tag or id)", check=_an_image)
    display_name: str = setting("", "the type's display name; default '<name> (Docker <image>)'")
    language: str = setting("python", "the kernel's language")
    argv: tuple[str, ...] = setting(
        DEFAULT_ARGV, "the kernel command in the container, with {connection_file}", check=_an_argv
    )
    env: Mapping[str, str] = setting({}, "extra environment of the kernel")
    interrupt_mode: Literal["signal", "message"] = setting(
        "signal", "signal: SIGINT to the kernel; message: interrupt_request"
    )
    metadata: Mapping[str, Any] = setting(
        {},
        "a kernelspec's metadata; supported_encryption = ['curve'] when the image has "
        "ipykernel >= 7.4 (CurveZMQ)",
        check=_a_metadata,
    )
    workdir: str | None = setting(None, "the working directory in the container; none: the image's")
    mounts: tuple[str, ...] = setting((), "'host:container[:ro|rw]' bind mounts", check=_mounts)
    cpus: float | None = setting(None, "CPU limit (1.5: one and a half cores)", check=positive)
    memory: str | int | None = setting(None, "memory limit ('512m', '2g' or bytes)")
    network: str | None = setting(None, "the Docker network to join; none: the engine's bridge")
    mount_cwd: bool = setting(False, "bind-mount the launch's cwd and work there")
    pull: bool = setting(False, "pull the image when it is missing locally")
    user: str | None = setting(None, "the user to run as ('1000:1000'); none: the image's")
    init: bool = setting(True, "run Docker's init as PID 1 (forwards signals, reaps zombies)")

    def options(self, *, source: str) -> DockerOptions:
        """Return the container options of this type."""
        return DockerOptions(
            image=self.image,
            workdir=self.workdir,
            mounts=self.mounts,
            cpus=self.cpus,
            memory=self.memory,
            network=self.network,
            mount_cwd=self.mount_cwd,
            pull=self.pull,
            user=self.user,
            init=self.init,
            source=source,
        )

    def kernel_type(self, *, source: str = "config") -> KernelType:
        """Return the kernel type ``docker/<name>``.

        Its metadata is the table's ``metadata`` (a kernelspec's: ``supported_encryption``)
        and, under ``docker``, the container options.
        """
        return KernelType(
            provider=PROVIDER,
            name=self.name,
            display_name=self.display_name or f"{self.name} (Docker {self.image})",
            language=self.language,
            argv=self.argv,
            env=dict(self.env),
            interrupt_mode=self.interrupt_mode,
            metadata={**self.metadata, "docker": self.options(source=source).to_dict()},
        )


#: The ``[docker]`` part of the config file: settings, and one table per kernel type.
SCHEMA = ConfigSchema(PROVIDER, settings=DockerSettings, types=DockerTable)


def types_from_config(config: Mapping[str, Any]) -> list[KernelType]:
    """Return the kernel types of the plugin's config table (tests, tools).

    Scalar keys are plugin settings; every sub-table is one kernel type. A
    broken table is logged (naming it and the problem) and skipped, so one typo
    does not hide the other types. The hooks use ``SCHEMA.load(hub)``.
    """
    parsed = SCHEMA.parse(config)
    for problem in parsed.problems:
        log.warning("%s", problem)
    return [table.kernel_type() for table in parsed.types.values()]


def label_of(labels: Mapping[str, str] | None) -> dict[str, Any] | None:
    """Return the decoded :data:`IMAGE_LABEL` of an image's labels, or ``None``."""
    raw = (labels or {}).get(IMAGE_LABEL)
    if raw is None:
        return None
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ConfigError(f"label {IMAGE_LABEL} must hold a JSON object")
    return data


def types_from_images(images: Iterable[tuple[str, Mapping[str, str] | None]]) -> list[KernelType]:
    """Return a kernel type per labelled image.

    :param images: ``(reference, labels)`` pairs, newest image first; the
        reference (first tag, or the id of an untagged image) is what the
        container runs.
    The type's name is the label's ``name``, else the image's repository name.
    A malformed label is logged and skipped. When two images give the same
    name, the first (the newest) wins and a warning names both.
    """
    found: dict[str, KernelType] = {}
    source: dict[str, str] = {}
    for ref, labels in images:
        try:
            data = label_of(labels)
            if data is None:
                continue
            default_name = ref.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
            name = str(data.get("name") or default_name)
            table = {k: v for k, v in data.items() if k != "name"}
            where = f"image {ref} label"
            kt = SCHEMA.parse_table({**table, "image": ref}, name=name, where=where).kernel_type(
                source="label"
            )
        except (ValueError, ConfigError) as exc:
            log.warning("skipping image %s: bad %s label: %s", ref, IMAGE_LABEL, exc)
            continue
        if kt.id in found:
            log.warning(
                "images %s and %s both offer the kernel type %s; %s wins (the newer). "
                'Give one another "name" in its %s label (kernel-hub docker label)',
                source[kt.id],
                ref,
                kt.id,
                source[kt.id],
                IMAGE_LABEL,
            )
            continue
        found[kt.id], source[kt.id] = kt, ref
    return list(found.values())


def options_of(kernel_type: KernelType) -> DockerOptions:
    """Return the container options stored in a docker kernel type's metadata."""
    data = dict(kernel_type.metadata.get("docker") or {})
    return DockerOptions.parse(data, where=f"kernel type {kernel_type.id}")
