"""Hook implementations of the slurm provider: batch-job kernels from ``[slurm.<name>]`` tables.

The hub routes ``launch``, ``make_manager`` and ``restart_policy`` here only for
``slurm/*`` types; the job machinery is imported only once there is one to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_hub.provider import RestartPolicy, hookimpl

from .config import SCHEMA
from .config import SCHEMA as config_schema  # the tables' schema, for 'kernel-hub config check'

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest, LaunchResult

    from .config import SlurmKernelConfig
    from .manager import SlurmKernelManager

__all__ = ["config_schema", "find_kernel_types", "launch", "make_manager", "restart_policy"]

#: A dead Slurm kernel is not resubmitted unless its table says ``restart = true``:
#: a new job may wait in the queue for hours.
NO_RESTART = RestartPolicy(enabled=False)


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType]:
    return [kc.kernel_type() for kc in SCHEMA.load(hub).types.values()]


@hookimpl
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    from .launch import launch_job

    kc: SlurmKernelConfig = SCHEMA.type_config(hub, kernel_type)
    return launch_job(hub, kernel_type, request, kc.with_params(request.params).outliving(request))


@hookimpl
def make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> SlurmKernelManager | Awaitable[SlurmKernelManager]:
    from .manager import SlurmKernelManager

    kernel_id = str(state.get("kernel_id", ""))
    # Kernel traffic through a login node: reconnect and forward the ports again first.
    build = SlurmKernelManager.reattach if state.get("route") == "login" else None
    return (build or SlurmKernelManager.from_state)(
        connection_info,
        state,
        type_id=kernel_type.id,
        emit=lambda kind, **data: hub.emit(kind, kernel_id, kernel_type.id, **data),
    )


@hookimpl
def restart_policy(hub: HubContext, kernel_type: KernelType) -> RestartPolicy:
    kc = SCHEMA.load(hub).types.get(kernel_type.name)
    return RestartPolicy() if kc is not None and kc.restart else NO_RESTART
