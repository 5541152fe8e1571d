"""kernel_hub provider plugin ``spec``: every Jupyter kernelspec becomes ``spec/<name>``."""

from __future__ import annotations

from .kernelspec import KernelSpecError, find_kernelspecs, load_kernelspec

__all__ = ["KernelSpecError", "find_kernelspecs", "load_kernelspec"]
