"""Hook implementations of the ssh provider: remote kernels from ``[ssh.<name>]`` config tables.

The hub routes ``launch`` and ``make_manager`` to this plugin only for ``ssh/*`` types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import hookimpl

from .config import SCHEMA
from .config import SCHEMA as config_schema  # the tables' schema, for 'kernel-hub config check'

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult

    from .config import SSHTable
    from .manager import SSHKernelManager

__all__ = ["config_schema", "find_kernel_types", "launch", "make_manager"]


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType]:
    return [table.kernel_config().kernel_type() for table in SCHEMA.load(hub).types.values()]


@hookimpl
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    from .manager import launch_remote  # asyncssh only once there is something to do

    table: SSHTable = SCHEMA.type_config(hub, kernel_type)
    return launch_remote(hub, kernel_type, request, table.kernel_config().outliving(request))


@hookimpl
def make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> Awaitable[SSHKernelManager]:
    from .manager import make_remote_manager

    return make_remote_manager(hub, kernel_type, connection_info, state)
