"""kernel_hub: find, launch, watch and talk to Jupyter kernels, wherever they run.

.. code-block:: python

    async with KernelHub() as hub:
        kernel = await hub.launch("ipykernel/python3")
        async with kernel.client() as client:
            reply = await client.execute("print(6*7)", output_hook=print)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._lazy import lazy_names
from .contract.errors import (
    ConfigError,
    KernelDied,
    KernelHubError,
    LaunchError,
    NoSuchKernelType,
    PluginError,
    StateInUse,
)
from .contract.hookspecs import hookimpl, hookspec
from .contract.manager import KernelManager
from .contract.types import (
    CullPolicy,
    KernelType,
    LaunchRequest,
    LaunchResult,
    RestartPolicy,
    UnavailableType,
)

if TYPE_CHECKING:
    from .client import AsyncKernelClient, BlockingKernelClient
    from .hub import KernelHub, ShutdownReport
    from .lifecycle.kernel import RunningKernel
    from .lifecycle.kernel_client import KernelClient
    from .lifecycle.pool import KernelPool
    from .lifecycle.state import default_state_dir
    from .managers.remote import NannyManager
    from .managers.subproc import SubprocessManager, launch_subprocess
    from .run import run_kernel, run_kernel_async
    from .wire.session import Message

__all__ = [
    "AsyncKernelClient",
    "BlockingKernelClient",
    "ConfigError",
    "CullPolicy",
    "KernelClient",
    "KernelDied",
    "KernelHub",
    "KernelHubError",
    "KernelManager",
    "KernelPool",
    "KernelType",
    "LaunchError",
    "LaunchRequest",
    "LaunchResult",
    "Message",
    "NannyManager",
    "NoSuchKernelType",
    "PluginError",
    "RestartPolicy",
    "RunningKernel",
    "ShutdownReport",
    "StateInUse",
    "SubprocessManager",
    "UnavailableType",
    "__version__",
    "default_state_dir",
    "hookimpl",
    "hookspec",
    "launch_subprocess",
    "run_kernel",
    "run_kernel_async",
]


#: Public names whose modules load on first use (PEP 562): a host that launches and
#: talks to kernels through KernelHub does not need them, and every module costs RSS.
_LAZY = {
    # The host API proper, also lazy: ``kernel-hub ps`` and other quick commands import
    # the package without the client, ZeroMQ and asyncio (~0.15 s on a slow machine).
    "AsyncKernelClient": ".client",
    "BlockingKernelClient": ".client",
    "KernelHub": ".hub",
    "ShutdownReport": ".hub",
    "RunningKernel": ".lifecycle.kernel",
    "KernelClient": ".lifecycle.kernel_client",
    "KernelPool": ".lifecycle.pool",
    "default_state_dir": ".lifecycle.state",
    "Message": ".wire.session",
    "NannyManager": ".managers.remote",
    "SubprocessManager": ".managers.subproc",
    "launch_subprocess": ".managers.subproc",
    "run_kernel": ".run",
    "run_kernel_async": ".run",
}
_lazy_getattr, __dir__ = lazy_names(globals(), _LAZY, __all__)


def __getattr__(name: str) -> Any:
    """Import a rarely used public name on first access, or compute ``__version__``."""
    if name == "__version__":
        from importlib.metadata import version  # the launch path never asks for it

        return version("kernel-hub")
    return _lazy_getattr(name)
