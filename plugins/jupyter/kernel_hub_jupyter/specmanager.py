"""A ``KernelSpecManager`` that lists kernel_hub types live, with no ``install`` step.

Enable it in jupyter_server (JupyterLab, Notebook 7)::

    jupyter lab --ServerApp.kernel_spec_manager_class=\\
        kernel_hub_jupyter.specmanager.KernelHubSpecManager

It lists the usual kernelspecs plus one per kernel_hub type, exactly as
``kernel-hub jupyter install`` would write them, kept in a private directory
(``kernel-hub-specs`` in the Jupyter runtime dir, 0700) that is rewritten when
the list is older than ``refresh_interval`` seconds: jupyter_server's REST API
needs a resource dir per spec, and logos are served from there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from traitlets import Float

from .bridge import BridgeLoop, get_hub
from .kernelspecs import install

__all__ = ["KernelHubSpecManager"]


class KernelHubSpecManager(KernelSpecManager):
    """Jupyter's kernelspecs plus one per kernel_hub type (names: ``kh-<provider>-<name>``)."""

    refresh_interval = Float(
        30.0, config=True, help="seconds before kernel_hub's types are listed again"
    )

    _refreshed: float = float("-inf")

    def _hub_dir(self) -> Path:
        from jupyter_core.paths import jupyter_runtime_dir

        private = Path(jupyter_runtime_dir()) / "kernel-hub-specs"
        private.mkdir(mode=0o700, parents=True, exist_ok=True)  # mode applies to this one only
        (private / "kernels").mkdir(exist_ok=True)
        return private / "kernels"

    def _refresh(self) -> None:
        if time.monotonic() - self._refreshed < self.refresh_interval:
            return

        async def types() -> list[Any]:
            hub = await get_hub()
            return await hub.find_kernel_types()

        directory = self._hub_dir()
        install(BridgeLoop.get().run(types(), timeout=120), directory)
        if str(directory) not in self.kernel_dirs:
            self.kernel_dirs = [*self.kernel_dirs, str(directory)]
        self._refreshed = time.monotonic()

    def find_kernel_specs(self) -> dict[str, str]:
        """Return kernelspec name → resource dir, kernel_hub's types included."""
        self._refresh()
        specs: dict[str, str] = super().find_kernel_specs()
        return specs
