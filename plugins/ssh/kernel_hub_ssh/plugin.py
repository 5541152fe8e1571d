"""Hook implementations of the ssh provider: remote kernels from ``[ssh.<name>]`` config tables.

The hub routes ``launch`` and ``make_manager`` to this plugin only for ``ssh/*`` types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import NoSuchKernelType, hookimpl

from .config import PROVIDER, kernel_types, parse_config

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult

    from .manager import SSHKernelManager

__all__ = ["find_kernel_types", "launch", "make_manager"]


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType]:
    return kernel_types(hub.config_for(PROVIDER))


@hookimpl
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    from .manager import launch_remote  # asyncssh only once there is something to do

    configs = parse_config(hub.config_for(PROVIDER))
    if kernel_type.name not in configs:
        raise NoSuchKernelType(kernel_type.id, [f"{PROVIDER}/{n}" for n in configs])
    return launch_remote(hub, kernel_type, request, configs[kernel_type.name])


@hookimpl
def make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> Awaitable[SSHKernelManager]:
    from .manager import make_remote_manager

    return make_remote_manager(hub, kernel_type, connection_info, state)
