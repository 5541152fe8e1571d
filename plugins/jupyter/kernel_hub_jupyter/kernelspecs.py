"""Kernelspecs for kernel_hub types: names, contents, install, update, prune and listing.

One kernelspec per kernel type that is not already a kernelspec (``spec/*``
types are left out: Jupyter lists those itself). Name mapping: ``kh-<provider>-<name>``
(``docker/py311`` → ``kh-docker-py311``); both parts are already lower case
``[a-z0-9._-]``, so the result is a valid kernelspec name. When two ids map to
the same name (``a-b/c`` and ``a/b-c``) each gets ``-<6 hex digits of the id's
SHA-1>`` appended. Each spec is marked as ours in
``metadata.kernel_hub``, so re-running install updates and prunes only ours.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bridge import PROVISIONER_NAME

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Sequence

    from kernel_hub import KernelType

__all__ = [
    "InstallReport",
    "InstalledSpec",
    "MANAGED_BY",
    "build_spec",
    "install",
    "installed_specs",
    "kernels_dir",
    "spec_names",
    "uninstall",
]

#: The value of ``metadata.kernel_hub.managed_by`` in every kernelspec this module writes.
MANAGED_BY = "kernel-hub-jupyter"
#: Logo files copied from a type's resource dir (the names Jupyter looks for).
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


def spec_names(type_ids: Iterable[str]) -> dict[str, str]:
    """Map each type id to its kernelspec name (see the module docstring)."""
    ids = list(dict.fromkeys(type_ids))
    plain = {tid: "kh-" + tid.replace("/", "-", 1) for tid in ids}
    clashes = Counter(plain.values())
    return {
        tid: name if clashes[name] == 1 else f"{name}-{hashlib.sha1(tid.encode()).hexdigest()[:6]}"
        for tid, name in plain.items()
    }


def kernels_dir(*, user: bool = False, sys_prefix: bool = False, prefix: str | None = None) -> Path:
    """Return the ``kernels`` directory of a location, as ``jupyter kernelspec install`` does.

    :param user: the user's Jupyter data dir.
    :param sys_prefix: ``sys.prefix/share/jupyter/kernels`` (this environment).
    :param prefix: ``PREFIX/share/jupyter/kernels``.
    :returns: the system-wide directory when no option is given.
    """
    from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir

    if sum((user, sys_prefix, prefix is not None)) > 1:
        raise ValueError("choose at most one of --user, --sys-prefix and --prefix")
    if user:
        return Path(jupyter_data_dir()) / "kernels"
    if sys_prefix:
        return Path(sys.prefix) / "share" / "jupyter" / "kernels"
    if prefix is not None:
        return Path(prefix).absolute() / "share" / "jupyter" / "kernels"
    return Path(SYSTEM_JUPYTER_PATH[0]) / "kernels"


def relay_argv(type_id: str, *, python: str | None = None) -> list[str]:
    """Return the kernelspec ``argv`` for tools that ignore provisioners: the relay."""
    return [
        python or sys.executable,
        "-m",
        "kernel_hub_jupyter.relay",
        "--type",
        type_id,
        "-f",
        "{connection_file}",
    ]


def build_spec(kernel_type: KernelType) -> dict[str, Any]:
    """Return the ``kernel.json`` contents for *kernel_type*."""
    remote = "host" in kernel_type.metadata  # a kernel on another machine has no use for our cwd
    return {
        "argv": relay_argv(kernel_type.id),
        "display_name": kernel_type.display_name or kernel_type.id,
        "language": kernel_type.language or "",
        "interrupt_mode": kernel_type.interrupt_mode,
        "env": {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": {"type_id": kernel_type.id, "pass_cwd": not remote},
            },
            "kernel_hub": {"type_id": kernel_type.id, "managed_by": MANAGED_BY},
        },
    }


@dataclass(frozen=True)
class InstalledSpec:
    """A kernelspec written by this module, found on disk."""

    name: str
    type_id: str
    path: Path
    display_name: str

    def __str__(self) -> str:
        return f"{self.name:30} {self.type_id:30} {self.path}"


@dataclass
class InstallReport:
    """What :func:`install` did in one ``kernels`` directory."""

    directory: Path
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _read_ours(spec_dir: Path) -> InstalledSpec | None:
    try:
        data = json.loads((spec_dir / "kernel.json").read_text())
        meta = data["metadata"]["kernel_hub"]
        if meta.get("managed_by") != MANAGED_BY:
            return None
        return InstalledSpec(
            spec_dir.name, meta["type_id"], spec_dir, data.get("display_name", spec_dir.name)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed_specs(
    directories: Sequence[str | os.PathLike[str]] | None = None,
) -> list[InstalledSpec]:
    """Return the bridge's kernelspecs in *directories* (default: every Jupyter kernels dir)."""
    if directories is None:
        from jupyter_core.paths import jupyter_path

        directories = jupyter_path("kernels")
    found: list[InstalledSpec] = []
    for directory in directories:
        d = Path(directory)
        if d.is_dir():
            found.extend(s for s in map(_read_ours, sorted(d.iterdir())) if s is not None)
    return found


def _write_spec(dest: Path, spec: dict[str, Any], kernel_type: KernelType) -> bool:
    """Write one spec dir; return whether anything changed."""
    files: dict[str, bytes] = {"kernel.json": (json.dumps(spec, indent=1) + "\n").encode()}
    if kernel_type.resource_dir:
        for logo in LOGOS:
            src = Path(kernel_type.resource_dir) / logo
            if src.is_file():
                files[logo] = src.read_bytes()
    dest.mkdir(parents=True, exist_ok=True)
    changed = False
    for old in dest.iterdir():
        if old.name not in files:
            old.unlink()
            changed = True
    for name, data in files.items():
        path = dest / name
        if not path.exists() or path.read_bytes() != data:
            tmp = dest / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(path)  # a reader never sees half a kernel.json
            changed = True
    return changed


def install(kernel_types: Iterable[KernelType], directory: Path) -> InstallReport:
    """Write one kernelspec per type (``spec/*`` left out) into *directory*; prune the rest.

    Only kernelspecs this module wrote are updated or removed; a foreign one of
    the same name is an error.

    :raises FileExistsError: naming a foreign kernelspec in the way.
    """
    report = InstallReport(directory)
    types = [kt for kt in kernel_types if kt.provider != "spec"]
    names = spec_names(kt.id for kt in types)
    ours = {s.name: s for s in installed_specs([directory])}
    for kt in types:
        dest = directory / names[kt.id]
        if dest.exists() and names[kt.id] not in ours:
            raise FileExistsError(
                f"{dest} is a kernelspec kernel-hub-jupyter did not write; remove it "
                f"('jupyter kernelspec remove {names[kt.id]}') to install {kt.id} there"
            )
    for kt in types:
        name = names[kt.id]
        existed = name in ours
        if _write_spec(directory / name, build_spec(kt), kt):
            (report.updated if existed else report.added).append(name)
        else:
            report.unchanged.append(name)
    for name, spec in ours.items():
        if name not in names.values():
            shutil.rmtree(spec.path)
            report.removed.append(name)
    return report


def uninstall(directory: Path) -> list[str]:
    """Remove every kernelspec of the bridge from *directory*; return their names."""
    removed = []
    for spec in installed_specs([directory]):
        shutil.rmtree(spec.path)
        removed.append(spec.name)
    return removed
