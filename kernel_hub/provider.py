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

Names that pull in more than the contract itself (subprocess management, the
nanny client, ZeroMQ) load on first use, so a plugin that has nothing to do
costs nothing to import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .argv import expand_env, format_argv
from .errors import (
    ConfigError,
    KernelDied,
    KernelHubError,
    LaunchError,
    NoSuchKernelType,
    PluginError,
)
from .hookspecs import hookimpl
from .manager import KernelManager
from .procs import pid_alive, process_start, process_token
from .types import KernelType, LaunchRequest, LaunchResult, RestartPolicy, split_type_id

if TYPE_CHECKING:
    from .aio import cancel_and_wait
    from .connection import (
        CHANNELS,
        new_connection_info,
        read_connection_file,
        runtime_dir,
        write_connection_file,
    )
    from .loopthread import LoopThread
    from .reaper import reap_on_exit
    from .remote import NannyManager, is_nanny_info
    from .subproc import SubprocessManager, launch_subprocess

__all__ = [
    "CHANNELS",
    "ConfigError",
    "HubContext",
    "KernelDied",
    "KernelHubError",
    "KernelManager",
    "KernelType",
    "LaunchError",
    "LaunchRequest",
    "LaunchResult",
    "LoopThread",
    "NannyManager",
    "NoSuchKernelType",
    "PluginError",
    "RestartPolicy",
    "SubprocessManager",
    "cancel_and_wait",
    "expand_env",
    "format_argv",
    "hookimpl",
    "is_nanny_info",
    "launch_subprocess",
    "new_connection_info",
    "pid_alive",
    "process_start",
    "process_token",
    "reap_on_exit",
    "read_connection_file",
    "runtime_dir",
    "split_type_id",
    "write_connection_file",
]


class HubContext(Protocol):
    """What a plugin may use of the hub that calls its hooks (the ``hub`` argument).

    :class:`kernel_hub.KernelHub` is one; a plugin needs nothing else of it.
    """

    def config_for(self, plugin: str) -> dict[str, Any]:
        """Return the ``[<plugin>]`` table of the kernel_hub config file (empty if absent)."""
        ...

    def emit(self, kind: str, kernel_id: str, type_id: str, **data: Any) -> None:
        """Emit a lifecycle event (``progress``, ``connection_lost``, ...).

        Safe to call from any thread: the event is delivered on the hub's loop.
        """
        ...

    @property
    def config(self) -> Mapping[str, Any]:
        """The whole parsed config file."""
        ...


_LAZY = {
    "CHANNELS": "connection",
    "new_connection_info": "connection",
    "read_connection_file": "connection",
    "runtime_dir": "connection",
    "write_connection_file": "connection",
    "cancel_and_wait": "aio",
    "LoopThread": "loopthread",
    "reap_on_exit": "reaper",
    "NannyManager": "remote",
    "is_nanny_info": "remote",
    "SubprocessManager": "subproc",
    "launch_subprocess": "subproc",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562): pay only for what a plugin uses."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kernel_hub.provider' has no attribute {name!r}")


def __dir__() -> list[str]:
    """List the lazy names too."""
    return sorted({*globals(), *__all__})
