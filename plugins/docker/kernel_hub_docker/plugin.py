"""Hook implementations of the docker provider: kernels in containers, as ``docker/<name>``."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from kernel_hub.hookspecs import hookimpl

from .discovery import find_docker_types
from .images import PROVIDER
from .images import check_config as check_config  # for 'kernel-hub config check'
from .launch import launch_container
from .manager import DockerManager

if TYPE_CHECKING:
    from kernel_hub import KernelHub
    from kernel_hub.types import KernelType, LaunchRequest, LaunchResult


@hookimpl
def find_kernel_types(hub: KernelHub) -> Awaitable[list[KernelType]]:
    return find_docker_types(hub)


@hookimpl
def launch(
    hub: KernelHub, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult] | None:
    if kernel_type.provider != PROVIDER:
        return None
    return launch_container(hub, kernel_type, request)


@hookimpl
def make_manager(
    hub: KernelHub,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> DockerManager | None:
    if kernel_type.provider != PROVIDER:
        return None
    return DockerManager.from_state(state, type_id=kernel_type.id)
