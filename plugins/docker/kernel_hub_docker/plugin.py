"""Hook implementations of the docker provider: kernels in containers, as ``docker/<name>``.

The hub routes ``launch`` and ``make_manager`` to this plugin only for ``docker/*`` types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import hookimpl

from .discovery import find_docker_types
from .images import SCHEMA as config_schema  # for 'kernel-hub config check'
from .launch import launch_container
from .manager import DockerManager

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult

__all__ = ["config_schema", "find_kernel_types", "launch", "make_manager"]


@hookimpl
def find_kernel_types(hub: HubContext) -> Awaitable[list[KernelType]]:
    return find_docker_types(hub)


@hookimpl
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    return launch_container(hub, kernel_type, request)


@hookimpl
def make_manager(kernel_type: KernelType, state: Mapping[str, Any]) -> DockerManager:
    # pluggy passes an implementation only the hook's arguments it names: the state says
    # everything (the container), the connection info is the hub's.
    return DockerManager.from_state(state, type_id=kernel_type.id)
