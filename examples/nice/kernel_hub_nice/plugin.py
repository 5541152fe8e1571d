"""Hook implementations of the nice provider; the hub routes only ``nice/*`` types here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import SubprocessManager, hookimpl, launch_subprocess

from .provider import SCHEMA as config_schema  # also what 'kernel-hub config check' reads
from .provider import find_nice_types

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType]:
    return find_nice_types(config_schema.load(hub).settings.niceness)


@hookimpl
def launch(kernel_type: KernelType, request: LaunchRequest) -> Awaitable[LaunchResult]:
    return launch_subprocess(kernel_type, request)


@hookimpl
def make_manager(kernel_type: KernelType, state: Mapping[str, Any]) -> SubprocessManager:
    return SubprocessManager.from_state(state, type_id=kernel_type.id)
