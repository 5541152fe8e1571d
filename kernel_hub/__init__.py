"""kernel_hub: find, launch, watch and talk to Jupyter kernels, wherever they run.

.. code-block:: python

    async with KernelHub() as hub:
        kernel = await hub.launch("ipykernel/python3")
        async with kernel.client() as client:
            reply = await client.execute("print(6*7)", output_hook=print)
"""

from __future__ import annotations

from typing import Any

from .client import AsyncKernelClient, BlockingKernelClient
from .errors import (
    ConfigError,
    KernelDied,
    KernelHubError,
    LaunchError,
    NoSuchKernelType,
    PluginError,
)
from .hookspecs import hookimpl, hookspec
from .hub import KernelHub, RunningKernel
from .manager import KernelManager
from .remote import NannyManager
from .run import run_kernel, run_kernel_async
from .session import Message
from .subproc import SubprocessManager, launch_subprocess
from .types import KernelType, LaunchRequest, LaunchResult, RestartPolicy

__all__ = [
    "AsyncKernelClient",
    "BlockingKernelClient",
    "ConfigError",
    "KernelDied",
    "KernelHub",
    "KernelHubError",
    "KernelManager",
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
    "SubprocessManager",
    "__version__",
    "hookimpl",
    "hookspec",
    "launch_subprocess",
    "run_kernel",
    "run_kernel_async",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("kernel-hub")
    raise AttributeError(f"module 'kernel_hub' has no attribute {name!r}")
