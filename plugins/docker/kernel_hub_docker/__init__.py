"""kernel_hub provider plugin ``docker``: Jupyter kernels in Docker containers (docker-py).

Kernel types come from ``[docker.<name>]`` config tables and from local images
labelled ``org.kernel-hub.kernel``. Each kernel runs in its own container with
its ports published on 127.0.0.1; :func:`prune` removes containers whose owning
process is gone (``kernel-hub docker prune``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .engine import EngineUnavailable
from .images import DEFAULT_ARGV, IMAGE_LABEL, DockerOptions

if TYPE_CHECKING:
    from .manager import DockerManager
    from .prune import KernelContainer, kernel_containers, prune

#: Names loaded on first use: discovery, which imports this package, needs none of them.
_LAZY = {
    "DockerManager": "manager",
    "KernelContainer": "prune",
    "kernel_containers": "prune",
    "prune": "prune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ARGV",
    "IMAGE_LABEL",
    "DockerManager",
    "DockerOptions",
    "EngineUnavailable",
    "KernelContainer",
    "kernel_containers",
    "prune",
]
