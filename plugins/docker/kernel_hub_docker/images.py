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
object (``name``, ``argv``, ``language``, ``display_name``, ``env``, and any of
the options below), is a kernel type too: building a labelled image is enough.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from kernel_hub.provider import ConfigCheck, ConfigError, KernelType

__all__ = [
    "DEFAULT_ARGV",
    "IMAGE_LABEL",
    "PROVIDER",
    "DockerOptions",
    "check_config",
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

# Keys of a type table that describe the KernelType itself rather than the container.
_TYPE_KEYS = {"name", "display_name", "language", "argv", "env", "interrupt_mode"}


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
        """Validate the container options of a config table or image label.

        :param where: names the table or image in error messages.
        :raises ConfigError: naming *where* and the bad key.
        """
        known = {f.name for f in fields(cls)} - {"source"}
        opts: dict[str, Any] = {}
        for key, value in data.items():
            if key in _TYPE_KEYS or key == "source":
                continue
            if key not in known:
                raise ConfigError(
                    f"{where}: unknown option {key!r}; known options: "
                    f"{', '.join(sorted(known | _TYPE_KEYS))}"
                )
            opts[key] = value
        if not isinstance(opts.get("image"), str) or not opts["image"]:
            raise ConfigError(f"{where}: 'image' must name a Docker image, e.g. 'python:3.11'")
        mounts = opts.get("mounts", ())
        if isinstance(mounts, str) or not all(isinstance(m, str) for m in mounts):
            raise ConfigError(f"{where}: 'mounts' must be a list of 'host:container[:ro]' strings")
        for m in mounts:
            parse_mount(m, where=where)
        opts["mounts"] = tuple(mounts)
        cpus = opts.get("cpus")
        if cpus is not None and (
            isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0
        ):
            raise ConfigError(f"{where}: 'cpus' must be a positive number, not {cpus!r}")
        memory = opts.get("memory")
        if memory is not None and not isinstance(memory, str | int):
            raise ConfigError(f"{where}: 'memory' must be like '512m' or a number of bytes")
        for key in ("mount_cwd", "pull", "init"):
            if key in opts and not isinstance(opts[key], bool):
                raise ConfigError(f"{where}: {key!r} must be true or false")
        for key in ("workdir", "network", "user"):
            if opts.get(key) is not None and not isinstance(opts[key], str):
                raise ConfigError(f"{where}: {key!r} must be a string")
        return cls(**opts, source=str(data.get("source", "config")))

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


def parse_mount(spec: str, *, where: str = "mount") -> tuple[str, str, str]:
    """Split ``"host:container[:ro|rw]"`` into ``(host, container, mode)``.

    :raises ConfigError: when the spec is not of that shape or a path is not absolute.
    """
    parts = spec.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) != 2 or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise ConfigError(
            f"{where}: mount {spec!r} must be 'host-path:container-path[:ro|rw]' "
            "with absolute paths"
        )
    return parts[0], parts[1], mode


def _kernel_type(name: str, data: Mapping[str, Any], *, where: str, source: str) -> KernelType:
    options = DockerOptions.parse({**data, "source": source}, where=where)
    argv = data.get("argv", DEFAULT_ARGV)
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"{where}: 'argv' must be a non-empty list of strings")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{where}: 'env' must be a table of strings")
    for key in ("display_name", "language"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{where}: {key!r} must be a string")
    try:
        return KernelType(
            provider=PROVIDER,
            name=name,
            display_name=data.get("display_name") or f"{name} (Docker {options.image})",
            language=data.get("language", "python"),
            argv=tuple(argv),
            env=dict(env),
            interrupt_mode=data.get("interrupt_mode", "signal"),
            metadata={"docker": options.to_dict()},
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def types_from_config(config: Mapping[str, Any]) -> list[KernelType]:
    """Return the kernel types of the plugin's config table (``hub.config_for("docker")``).

    Scalar keys are plugin settings; every sub-table is one kernel type. A
    broken table is logged (naming it and the problem) and skipped, so one typo
    does not hide the other types.
    """
    found = []
    for name, table in config.items():
        if not isinstance(table, Mapping):
            continue
        try:
            found.append(_kernel_type(name, table, where=f"[docker.{name}]", source="config"))
        except ConfigError as exc:
            log.warning("skipping Docker kernel type: %s", exc)
    return found


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
            kt = _kernel_type(
                name, {**data, "image": ref}, where=f"image {ref} label", source="label"
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


#: The plugin's own settings (scalars of ``[docker]``) and their defaults.
_SETTINGS = {"ping_timeout": 3.0, "discover_labels": True}


def check_config(section: Mapping[str, Any]) -> list[ConfigCheck]:
    """Check ``[docker]`` and every ``[docker.<name>]``: effective values and their sources.

    The optional ``check_config`` attribute of the plugin (see
    :mod:`kernel_hub.plugins.config`); ``kernel-hub config check`` calls it.
    """
    import os

    values: dict[str, tuple[Any, str]] = {}
    for key, default in _SETTINGS.items():
        values[key] = (section[key], "config") if key in section else (default, "default")
    host = os.environ.get("DOCKER_HOST")
    values["engine"] = (
        (host, "environment DOCKER_HOST") if host else ("unix:///var/run/docker.sock", "default")
    )
    unknown = [k for k, v in section.items() if not isinstance(v, Mapping) and k not in _SETTINGS]
    error = (
        f"[docker] has unknown setting(s) {', '.join(map(repr, unknown))}; known settings: "
        f"{', '.join(_SETTINGS)} (kernel types go in [docker.<name>] tables)"
        if unknown
        else None
    )
    checks = [ConfigCheck(PROVIDER, values, error)]
    defaults = DockerOptions(image="").to_dict()
    for name, table in section.items():
        if not isinstance(table, Mapping):
            continue
        where = f"[docker.{name}]"
        try:
            kt = _kernel_type(name, table, where=where, source="config")
        except ConfigError as exc:
            checks.append(ConfigCheck(f"{PROVIDER}.{name}", error=str(exc)))
            continue
        opts = dict(kt.metadata["docker"])
        opts.pop("source", None)
        found: dict[str, tuple[Any, str]] = {
            "display_name": (kt.display_name, "config" if "display_name" in table else "default"),
            "argv": (list(kt.argv), "config" if "argv" in table else "default"),
        }
        for key, value in opts.items():
            found[key] = (value, "config") if key in table else (defaults[key], "default")
        checks.append(ConfigCheck(f"{PROVIDER}.{name}", found))
    return checks
