"""Hook implementations of the ssh provider (work in progress)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel_hub.hookspecs import hookimpl

from .config import kernel_types

if TYPE_CHECKING:
    from kernel_hub import KernelHub
    from kernel_hub.types import KernelType


@hookimpl
def find_kernel_types(hub: KernelHub) -> list[KernelType]:
    return kernel_types(hub.config_for("ssh"))
