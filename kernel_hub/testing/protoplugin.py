"""The ``fake`` provider: kernel type ``fake/echo``, the fake kernel of :mod:`.protokernel`.

For tests and benchmarks that need many kernels: a fake kernel is a real local
process, launched, watched, restarted and shut down like any command-line kernel
(the core's ``local_launch``), that answers the protocol but runs no code. Register
it with ``KernelHub(plugins=[fake_kernel_plugin()], load_entrypoints=False, config={})``.
Its behaviour is tuned per launch through ``env=`` (see :mod:`.protokernel`), e.g.
``hub.launch("fake/echo", env={"KERNEL_HUB_FAKE_SHUTDOWN_DELAY": "0.5"})``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..provider import KernelType, hookimpl, local_launch, local_make_manager

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping
    from typing import Any

    from ..provider import HubContext, KernelManager, LaunchRequest, LaunchResult

__all__ = ["FAKE_TYPE", "PROGRAM", "FakeKernelPlugin", "fake_kernel_plugin"]

#: The fake kernel's program, run by path so that it imports nothing of kernel_hub.
PROGRAM = str(Path(__file__).with_name("protokernel.py"))

#: The type id the plugin offers.
FAKE_TYPE = "fake/echo"


class FakeKernelPlugin:
    """Offer ``fake/echo``; launch and re-attach it as a local command line."""

    name = "fake"

    def __repr__(self) -> str:
        return f"<FakeKernelPlugin {FAKE_TYPE} [{PROGRAM}]>"

    @hookimpl
    def find_kernel_types(self, hub: HubContext) -> list[KernelType]:
        # -I: no user site and no script dir on sys.path (this folder's modules would
        # shadow nothing today, but the fake kernel should see only the stdlib and pyzmq).
        argv = (sys.executable, "-I", PROGRAM, "-f", "{connection_file}")
        return [
            KernelType(
                provider="fake",
                name="echo",
                display_name="Fake kernel (echo)",
                language="text",
                argv=argv,
            )
        ]

    @hookimpl
    def launch(
        self, hub: HubContext, kernel_type: KernelType, request: LaunchRequest
    ) -> Awaitable[LaunchResult]:
        return local_launch(hub, kernel_type, request)

    @hookimpl
    def make_manager(
        self,
        hub: HubContext,
        kernel_type: KernelType,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
    ) -> KernelManager:
        return local_make_manager(hub, kernel_type, connection_info, state)


def fake_kernel_plugin() -> FakeKernelPlugin:
    """Return a plugin object offering the fake kernel type ``fake/echo``."""
    return FakeKernelPlugin()
