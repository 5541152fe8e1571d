"""Hook implementations of the nice provider: plain ``def``s that decline other providers."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from kernel_hub import SubprocessManager, hookimpl, launch_subprocess

from .provider import PROVIDER, find_nice_types

if TYPE_CHECKING:
    from kernel_hub import KernelHub, KernelType, LaunchRequest, LaunchResult


@hookimpl
def find_kernel_types(hub: KernelHub) -> list[KernelType]:
    return find_nice_types(hub.config_for(PROVIDER))


@hookimpl
def launch(kernel_type: KernelType, request: LaunchRequest) -> Awaitable[LaunchResult] | None:
    if kernel_type.provider != PROVIDER:
        return None  # not ours: decline, so that the owner's launch answers
    return launch_subprocess(kernel_type, request)


@hookimpl
def make_manager(kernel_type: KernelType, state: Mapping[str, Any]) -> SubprocessManager | None:
    if kernel_type.provider != PROVIDER:
        return None
    return SubprocessManager.from_state(state, type_id=kernel_type.id)
