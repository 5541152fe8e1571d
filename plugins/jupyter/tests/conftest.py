"""Fixtures of the Jupyter bridge's tests: bridged kernelspecs on a private Jupyter path.

``bridged`` installs the bridge's kernelspecs (one per kernel_hub type of this
environment) into a temporary prefix and puts it first on ``JUPYTER_PATH``
for the whole session, so jupyter_client, nbclient, papermill and the
jupyter_server processes the tests start find them, and nothing is written to
the user's or the system's Jupyter dirs.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kernel_hub_jupyter.kernelspecs import install, kernels_dir, spec_names

from kernel_hub import KernelHub
from kernel_hub.testing import require_service

#: The native Python type every bridge test runs on (kernel-hub-ipykernel offers it).
PYTHON_TYPE = "ipykernel/python3"


@dataclass
class Bridged:
    """Where the bridged kernelspecs are, and their names by type id."""

    prefix: Path
    names: dict[str, str]

    @property
    def python(self) -> str:
        """The kernelspec name of the native Python type."""
        return self.names[PYTHON_TYPE]


@pytest.fixture(scope="session")
def bridged() -> Iterator[Bridged]:
    """Install the bridge's kernelspecs for every type into a temporary prefix on JUPYTER_PATH."""

    async def types() -> list:
        async with KernelHub() as hub:
            return await hub.find_kernel_types()

    found = asyncio.run(types())
    require_service(
        f"the kernel_hub type {PYTHON_TYPE}",
        any(t.id == PYTHON_TYPE for t in found),
        "install kernel-hub-ipykernel next to kernel-hub-jupyter (.ci/run does this)",
    )
    old = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="kh-jupyter-") as tmp:
        directory = kernels_dir(prefix=tmp)
        install(found, directory)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(Path(tmp) / "share" / "jupyter"), old) if p
        )
        try:
            yield Bridged(Path(tmp), spec_names(t.id for t in found if t.provider != "spec"))
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old
