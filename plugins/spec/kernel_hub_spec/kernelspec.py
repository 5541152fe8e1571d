"""Find Jupyter kernelspecs (``kernels/<name>/kernel.json``) and turn them into kernel types.

The search path is :func:`jupyter_core.paths.jupyter_path` ``("kernels")``:
``$JUPYTER_PATH`` first, then the user data directory (``$JUPYTER_DATA_DIR``),
then the environment's and the system's ``share/jupyter``. As in
jupyter_client, the first directory that holds a kernelspec of a given
(case-insensitive) name wins, and it keeps the name even when its
``kernel.json`` is broken: a malformed spec is logged and skipped, it does not
uncover a same-named spec further down the path.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import KernelType

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "PROVIDER",
    "KernelSpecError",
    "find_kernelspecs",
    "is_bridged",
    "kernel_dirs",
    "load_kernelspec",
    "parse_kernelspec",
]

log = logging.getLogger("kernel_hub.spec")

#: The provider id of every kernel type this plugin offers (``spec/<name>``).
PROVIDER = "spec"

_INTERRUPT_MODES = ("signal", "message")

#: The jupyter_client provisioner of kernel-hub-jupyter's bridge (its ``PROVISIONER_NAME``;
#: spelled out here because a plugin reaches no other plugin). A kernelspec that selects it
#: is a kernel_hub type already (``kh-docker-py311`` is ``docker/py311``), not a new one.
BRIDGE_PROVISIONER = "kernel-hub"


class KernelSpecError(ValueError):
    """A ``kernel.json`` is not a valid kernelspec; the message names the problem."""


def kernel_dirs() -> list[str]:
    """Return the directories searched for kernelspecs, highest priority first."""
    from jupyter_core.paths import jupyter_path

    return jupyter_path("kernels")


def _python_names() -> set[str]:
    major, minor = sys.version_info[:2]
    return {"python", f"python{major}", f"python{major}.{minor}"}


def _native_argv(argv: list[str]) -> list[str]:
    """Replace a bare ``python``/``python3``/``python3.X`` argv[0] with :data:`sys.executable`.

    This is what jupyter_client does: the ``python3`` kernelspec that ipykernel
    installs says ``"python"``, and the ``python`` on ``PATH`` need not be the
    interpreter of this environment (a venv used without activating it), while
    the user means "the Python I am running". ``python3.X`` is only replaced
    when X is this interpreter's minor version; any other name or a path is
    kept as written.
    """
    if argv and argv[0] in _python_names():
        return [sys.executable, *argv[1:]]
    return argv


def _str_field(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise KernelSpecError(f"{key!r} must be a string, not {type(value).__name__}")
    return value


def parse_kernelspec(data: Any, *, name: str, resource_dir: str) -> KernelType:
    """Validate the decoded contents of a ``kernel.json`` and build its kernel type.

    :param data: the JSON-decoded file.
    :param name: the kernelspec's name (its directory name).
    :param resource_dir: the kernelspec directory; filled into ``{resource_dir}``.
    :returns: a :class:`~kernel_hub.KernelType` of provider ``spec``.
    :raises KernelSpecError: naming the first field that is wrong.
    """
    if not isinstance(data, dict):
        raise KernelSpecError(f"the file must hold a JSON object, not {type(data).__name__}")
    if "argv" not in data:
        raise KernelSpecError("'argv' is missing; it must be the kernel's command line")
    argv = data["argv"]
    if not isinstance(argv, list) or not argv:
        raise KernelSpecError("'argv' must be a non-empty list of strings")
    if not all(isinstance(arg, str) for arg in argv):
        raise KernelSpecError("'argv' must be a non-empty list of strings")
    display_name = _str_field(data, "display_name")
    language = _str_field(data, "language")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise KernelSpecError("'env' must be an object mapping strings to strings")
    interrupt_mode = data.get("interrupt_mode", "signal")
    if interrupt_mode not in _INTERRUPT_MODES:
        raise KernelSpecError(
            f"'interrupt_mode' must be 'signal' or 'message', not {interrupt_mode!r}"
        )
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise KernelSpecError(f"'metadata' must be an object, not {type(metadata).__name__}")
    metadata = dict(metadata)
    if "kernel_protocol_version" in data:
        # Kept with the type: from 5.6 on, the kernel is launched with the registration
        # handshake (JEP 66) instead of ports chosen for it in advance.
        metadata["kernel_protocol_version"] = _str_field(data, "kernel_protocol_version")
    try:
        return KernelType(
            provider=PROVIDER,
            name=name,
            display_name=display_name,
            language=language,
            argv=tuple(_native_argv(argv)),
            env=dict(env),
            interrupt_mode=interrupt_mode,
            resource_dir=resource_dir,
            metadata=dict(metadata),
        )
    except ValueError as exc:  # an invalid directory name
        raise KernelSpecError(str(exc)) from None


def load_kernelspec(resource_dir: str | os.PathLike[str]) -> KernelType:
    """Read ``<resource_dir>/kernel.json``; the directory's name is the kernel's name.

    :raises KernelSpecError: when the file cannot be read, is not JSON, or is not
        a valid kernelspec.
    """
    resource_dir = os.path.abspath(resource_dir)
    path = os.path.join(resource_dir, "kernel.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise KernelSpecError(f"cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise KernelSpecError(f"it is not valid JSON: {exc}") from None
    return parse_kernelspec(data, name=os.path.basename(resource_dir), resource_dir=resource_dir)


def find_kernelspecs(dirs: Iterable[str | os.PathLike[str]] | None = None) -> list[KernelType]:
    """Return a kernel type for every valid kernelspec, sorted by name.

    :param dirs: the ``kernels`` directories to search, highest priority first;
        defaults to :func:`kernel_dirs`. Missing directories are ignored.
    :returns: one :class:`~kernel_hub.KernelType` per kernelspec name. A
        subdirectory without a ``kernel.json`` is not a kernelspec and is
        ignored quietly; a malformed ``kernel.json`` is skipped with a warning on
        the ``kernel_hub.spec`` logger that names the file and the problem.

    A kernelspec of kernel-hub-jupyter's bridge (its ``metadata`` selects the
    ``kernel-hub`` provisioner, see :func:`is_bridged`) is left out: it names a
    kernel_hub type that is listed already, under its own id.
    """
    seen: set[str] = set()
    found: list[KernelType] = []
    for kernels_dir in kernel_dirs() if dirs is None else dirs:
        try:
            entries = sorted(os.listdir(kernels_dir))
        except OSError:
            continue  # most directories of the search path do not exist
        for entry in entries:
            resource_dir = os.path.join(kernels_dir, entry)
            if not os.path.isfile(os.path.join(resource_dir, "kernel.json")):
                continue
            key = entry.lower()
            if key in seen:
                continue  # shadowed by a directory earlier in the path
            seen.add(key)
            try:
                kernel_type = load_kernelspec(resource_dir)
            except KernelSpecError as exc:
                log.warning(
                    "skipping kernelspec %s: %s",
                    os.path.join(os.path.abspath(resource_dir), "kernel.json"),
                    exc,
                )
                continue
            if is_bridged(kernel_type):
                log.debug("not offering %s: it is a bridged kernel_hub type", resource_dir)
                continue
            found.append(kernel_type)
    return sorted(found, key=lambda kt: kt.name)


def is_bridged(kernel_type: KernelType) -> bool:
    """Return whether *kernel_type*'s kernelspec starts a kernel_hub type through the bridge.

    Recognised by its ``metadata.kernel_provisioner.provisioner_name`` (what
    jupyter_client acts on), whatever the kernelspec's name.
    """
    provisioner = kernel_type.metadata.get("kernel_provisioner")
    return isinstance(provisioner, dict) and (
        provisioner.get("provisioner_name") == BRIDGE_PROVISIONER
    )
