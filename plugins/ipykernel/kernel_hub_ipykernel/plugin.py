"""Hook implementations of the ipykernel provider: this environment's ipykernel."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from kernel_hub.hookspecs import hookimpl
from kernel_hub.subproc import SubprocessManager, launch_subprocess

from .launcher import PROVIDER, find_ipykernel_types

if TYPE_CHECKING:
    from kernel_hub import KernelHub
    from kernel_hub.types import KernelType, LaunchRequest, LaunchResult


@hookimpl
def find_kernel_types(hub: KernelHub) -> list[KernelType]:
    return find_ipykernel_types()


@hookimpl
def launch(
    hub: KernelHub, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult] | None:
    if kernel_type.provider != PROVIDER:
        return None
    return launch_subprocess(kernel_type, request)


@hookimpl
def make_manager(
    hub: KernelHub,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> SubprocessManager | None:
    # A kernel of this type started under a nanny (kernel-hub launch --nanny) is the core's.
    if kernel_type.provider != PROVIDER or "nanny_control_port" in connection_info:
        return None
    return SubprocessManager.from_state(state, type_id=kernel_type.id)
