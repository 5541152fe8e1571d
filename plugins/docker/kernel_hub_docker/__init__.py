"""kernel_hub provider plugin ``docker``: Jupyter kernels in Docker containers (docker-py).

Kernel types come from ``[docker.<name>]`` config tables and from local images
labelled ``org.kernel-hub.kernel``. Each kernel runs in its own container with
its ports published on 127.0.0.1; :func:`prune` removes containers whose owning
process is gone (``kernel-hub docker prune``).
"""

from __future__ import annotations

from .engine import EngineUnavailable
from .images import DEFAULT_ARGV, IMAGE_LABEL, DockerOptions
from .manager import DockerManager
from .prune import KernelContainer, kernel_containers, prune

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
