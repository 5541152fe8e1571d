"""Root conftest: the kernel_hub test kit, an isolated Jupyter runtime dir, and leak checks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest_plugins = ["kernel_hub.testing"]


@pytest.fixture(scope="session", autouse=True)
def isolated_runtime_dir() -> Iterator[Path]:
    """Give the session a private Jupyter runtime dir and check that nothing leaks from it.

    At the end no kernel started by the suite may still run, and no connection
    or log file may remain.
    """
    # Imported here: a module-level import would come before pytest_plugins and so escape
    # pytest's assertion rewriting of the kit.
    from kernel_hub.testing import processes_with_env

    old = os.environ.get("JUPYTER_RUNTIME_DIR")
    with tempfile.TemporaryDirectory(prefix="kh-runtime-") as tmp:
        os.environ["JUPYTER_RUNTIME_DIR"] = tmp
        try:
            yield Path(tmp)
            leftovers = sorted(p.name for p in Path(tmp).iterdir())
            # Every kernel launched from this process has JPY_PARENT_PID=<us> in its environment.
            alive = processes_with_env(f"JPY_PARENT_PID={os.getpid()}")
        finally:
            if old is None:
                os.environ.pop("JUPYTER_RUNTIME_DIR", None)
            else:
                os.environ["JUPYTER_RUNTIME_DIR"] = old
        assert not alive, f"kernel processes outlived the test suite: {alive}"
        assert not leftovers, f"files left in the Jupyter runtime dir: {leftovers}"
