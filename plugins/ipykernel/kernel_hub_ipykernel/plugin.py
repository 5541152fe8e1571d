"""Hook implementations of the ipykernel provider: this environment's ipykernel.

The hub routes ``launch`` and ``make_manager`` to this plugin only for the types
it offered, so no hook checks the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import SubprocessManager, hookimpl, launch_subprocess

from .launcher import PROVIDER, find_ipykernel_types

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult

__all__ = ["PROVIDER", "find_kernel_types", "launch", "make_manager"]


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType]:
    return find_ipykernel_types()


@hookimpl
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    return launch_subprocess(kernel_type, request)


@hookimpl
def make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> SubprocessManager:
    return SubprocessManager.from_state(state, type_id=kernel_type.id)
