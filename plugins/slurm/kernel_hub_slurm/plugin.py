"""Hook implementations of the slurm provider: batch-job kernels from ``[slurm.<name>]`` tables.

The hub routes ``launch``, ``make_manager`` and ``restart_policy`` here only for
``slurm/*`` types; the job machinery is imported only once there is one to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import NoSuchKernelType, RestartPolicy, hookimpl

from .config import PROVIDER, kernel_types, parse_config

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult

    from .manager import SlurmKernelManager

#: A dead Slurm kernel is not resubmitted unless its table says ``restart = true``:
#: a new job may wait in the queue for hours.
NO_RESTART = RestartPolicy(enabled=False)


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType]:
    return kernel_types(hub.config_for(PROVIDER))


@hookimpl
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    from .launch import launch_job

    configs = parse_config(hub.config_for(PROVIDER))
    if kernel_type.name not in configs:
        raise NoSuchKernelType(kernel_type.id, [f"{PROVIDER}/{n}" for n in configs])
    kc = configs[kernel_type.name].with_params(request.params)
    return launch_job(hub, kernel_type, request, kc)


@hookimpl
def make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> SlurmKernelManager:
    from .manager import SlurmKernelManager

    kernel_id = str(state.get("kernel_id", ""))
    return SlurmKernelManager.from_state(
        connection_info,
        state,
        type_id=kernel_type.id,
        emit=lambda kind, **data: hub.emit(kind, kernel_id, kernel_type.id, **data),
    )


@hookimpl
def restart_policy(hub: HubContext, kernel_type: KernelType) -> RestartPolicy:
    kc = parse_config(hub.config_for(PROVIDER)).get(kernel_type.name)
    return RestartPolicy() if kc is not None and kc.restart else NO_RESTART
