"""The public surface for plugin authors: everything a provider may use of the core.

A provider plugin (the built-in ``spec``, ``ipykernel``, ``ssh`` and ``docker``
ones too) imports from here, from :mod:`kernel_hub` (the host API, for type
hints) and from the test kits :mod:`kernel_hub.testing` and
:mod:`kernel_hub.conformance`; every other module of the core is internal and
may change without notice. ``.ci/run`` enforces this with import-linter.

.. code-block:: python

    from kernel_hub.provider import KernelType, hookimpl, launch_subprocess

    @hookimpl
    def find_kernel_types(hub):
        yield KernelType(provider="nice", name="python3", argv=(...))

    @hookimpl
    def launch(hub, kernel_type, request):
        return launch_subprocess(kernel_type, request)

A plugin with settings in the config file declares them once, as dataclasses in
a :class:`ConfigSchema` (fields made with :func:`setting`), exposed as the
attribute ``config_schema`` of its plugin module; the schema checks the tables
and ``kernel-hub config check`` reports them, the same way for every plugin.

A module a plugin moved keeps its old import path with :func:`alias_module`
(the ssh, slurm and jupyter plugins' ``testing`` modules, now distributions of
their own).

Names that pull in more than the contract itself (subprocess management, the
nanny client, ZeroMQ, the wire format's :class:`Session`, which signs and checks
messages with a connection key) load on first use, so a plugin that has nothing to do
costs nothing to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._lazy import alias_module, lazy_names
from .contract.errors import (
    ConfigError,
    KernelDied,
    KernelHubError,
    LaunchError,
    NoSuchKernelType,
    PluginError,
)
from .contract.hookspecs import HubContext, hookimpl
from .contract.manager import KernelManager
from .contract.types import (
    KernelType,
    LaunchRequest,
    LaunchResult,
    RestartPolicy,
    UnavailableType,
    split_type_id,
)
from .managers.argv import expand_env, format_argv
from .managers.procs import pid_alive, process_start, process_token
from .plugins.config import ConfigCheck
from .plugins.schema import (
    ConfigProblem,
    ConfigSchema,
    ParsedConfig,
    argv_setting,
    between,
    kernel_argv,
    positive,
    protocol_version,
    protocol_version_setting,
    setting,
    table_name,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from .aio import cancel_and_wait
    from .aio.loopthread import LoopThread
    from .managers.reaper import reap_on_exit
    from .managers.remote import NannyManager, is_nanny_info
    from .managers.subproc import SubprocessManager, launch_subprocess
    from .nanny import BOOTSTRAP as NANNY_BOOTSTRAP
    from .nanny import payload as nanny_payload
    from .nanny import source as nanny_source
    from .wire.connection import (
        CHANNELS,
        free_ports,
        new_connection_info,
        ports_free,
        read_connection_file,
        runtime_dir,
        write_connection_file,
    )
    from .wire.curve import curve_for, curve_keys, has_curve, secure_client, supports_curve
    from .wire.registration import registration_timeout, registration_wanted
    from .wire.session import BadSignature, Session

__all__ = [
    "BadSignature",
    "CHANNELS",
    "ConfigCheck",
    "ConfigError",
    "ConfigProblem",
    "ConfigSchema",
    "HubContext",
    "KernelDied",
    "KernelHubError",
    "KernelManager",
    "KernelType",
    "LaunchError",
    "LaunchRequest",
    "LaunchResult",
    "LoopThread",
    "NANNY_BOOTSTRAP",
    "NannyManager",
    "NoSuchKernelType",
    "ParsedConfig",
    "PluginError",
    "RestartPolicy",
    "Session",
    "SubprocessManager",
    "UnavailableType",
    "alias_module",
    "argv_setting",
    "between",
    "cancel_and_wait",
    "curve_for",
    "curve_keys",
    "expand_env",
    "format_argv",
    "free_ports",
    "has_curve",
    "hookimpl",
    "is_nanny_info",
    "kernel_argv",
    "nanny_payload",
    "nanny_source",
    "launch_subprocess",
    "local_launch",
    "local_make_manager",
    "new_connection_info",
    "pid_alive",
    "ports_free",
    "positive",
    "process_start",
    "process_token",
    "protocol_version",
    "protocol_version_setting",
    "reap_on_exit",
    "read_connection_file",
    "registration_timeout",
    "registration_wanted",
    "runtime_dir",
    "secure_client",
    "setting",
    "split_type_id",
    "supports_curve",
    "table_name",
    "write_connection_file",
]


# ---- ready-made hooks for command-line kernel types ----


@hookimpl
def local_launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult]:
    """A ``launch`` hook for types with an ``argv``: a local child process in its own group.

    A plugin whose types are plain command lines (the built-in ``spec`` and
    ``ipykernel`` ones) re-exports it under the hook's name::

        from kernel_hub.provider import local_launch as launch

    A kernel that must outlive its host (``request.outlive``, a hub with a
    ``state_dir``) runs under a local nanny whose lease is the grace; the
    hub rebuilds its manager itself (``launch_mode: "nanny"`` in its state).
    """
    if request.outlive:
        from .managers.local_nanny import launch_under_nanny

        return launch_under_nanny(kernel_type, request)
    from .managers.subproc import launch_subprocess

    return launch_subprocess(kernel_type, request)


@hookimpl
def local_make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> KernelManager:
    """The ``make_manager`` hook that goes with :func:`local_launch` (re-attach by pid)::

    from kernel_hub.provider import local_make_manager as make_manager
    """
    from .managers.subproc import SubprocessManager

    return SubprocessManager.from_state(state, type_id=kernel_type.id)


_LAZY = {
    "CHANNELS": ".wire.connection",
    "free_ports": ".wire.connection",
    "new_connection_info": ".wire.connection",
    "ports_free": ".wire.connection",
    "read_connection_file": ".wire.connection",
    "runtime_dir": ".wire.connection",
    "write_connection_file": ".wire.connection",
    "curve_for": ".wire.curve",
    "curve_keys": ".wire.curve",
    "has_curve": ".wire.curve",
    "secure_client": ".wire.curve",
    "supports_curve": ".wire.curve",
    "registration_timeout": ".wire.registration",
    "registration_wanted": ".wire.registration",
    "Session": ".wire.session",
    "BadSignature": ".wire.session",
    "cancel_and_wait": ".aio",
    "LoopThread": ".aio.loopthread",
    "reap_on_exit": ".managers.reaper",
    "NannyManager": ".managers.remote",
    "nanny_source": ".nanny:source",
    "nanny_payload": ".nanny:payload",
    "NANNY_BOOTSTRAP": ".nanny:BOOTSTRAP",
    "is_nanny_info": ".managers.remote",
    "SubprocessManager": ".managers.subproc",
    "launch_subprocess": ".managers.subproc",
}
# Import a public name on first use (PEP 562): pay only for what a plugin uses.
__getattr__, __dir__ = lazy_names(globals(), _LAZY, __all__)
