"""Hook implementations of the ssh provider: remote kernels from ``[ssh.<name>]`` config tables."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from kernel_hub.errors import NoSuchKernelType
from kernel_hub.hookspecs import hookimpl

from .config import PROVIDER, kernel_types, parse_config
from .config import check_config as check_config  # for 'kernel-hub config check'
from .manager import launch_remote, make_remote_manager

if TYPE_CHECKING:
    from kernel_hub import KernelHub
    from kernel_hub.types import KernelType, LaunchRequest, LaunchResult

    from .manager import SSHKernelManager


@hookimpl
def find_kernel_types(hub: KernelHub) -> list[KernelType]:
    return kernel_types(hub.config_for(PROVIDER))


@hookimpl
def launch(
    hub: KernelHub, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult] | None:
    if kernel_type.provider != PROVIDER:
        return None
    configs = parse_config(hub.config_for(PROVIDER))
    if kernel_type.name not in configs:
        raise NoSuchKernelType(kernel_type.id, [f"{PROVIDER}/{n}" for n in configs])
    return launch_remote(hub, kernel_type, request, configs[kernel_type.name])


@hookimpl
def make_manager(
    hub: KernelHub,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> Awaitable[SSHKernelManager] | None:
    if kernel_type.provider != PROVIDER:
        return None
    return make_remote_manager(hub, kernel_type, connection_info, state)
