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

#: The user's own switches and files that would change what a test sees: the suite runs
#: without them (each test that needs one sets its own).
USER_SWITCHES = (
    "KERNEL_HUB_CONFIG",
    "KERNEL_HUB_DISABLE_PLUGINS",
    "KERNEL_HUB_TRACE_PLUGINS",
    "KERNEL_HUB_NANNY_LEASE",
    "JUPYTER_PATH",
)
#: Per-user dirs pointed at empty private ones for the session: the kernel_hub config file
#: (under XDG_CONFIG_HOME), Jupyter's user data dir (kernelspecs) and config dir (a
#: jupyter_server_config.py), and IPython's profile (startup files that print).
USER_DIRS = (
    "XDG_CONFIG_HOME",
    "JUPYTER_DATA_DIR",
    "JUPYTER_CONFIG_DIR",
    "IPYTHONDIR",
    "KERNEL_HUB_STATE_DIR",  # hub state dirs (kernel-hub ps), never the user's
)


@pytest.fixture(scope="session", autouse=True)
def isolated_user_files() -> Iterator[None]:
    """Run the suite without the user's kernel_hub config, Jupyter user dirs and switches.

    A developer's machine holds their own config tables, kernelspecs and IPython
    startup files; no test may pass or fail because of them.
    """
    names = (*USER_SWITCHES, *USER_DIRS)
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="kh-user-") as tmp:
        for name in USER_SWITCHES:
            os.environ.pop(name, None)
        for name in USER_DIRS:
            path = Path(tmp) / name.lower()
            path.mkdir()
            os.environ[name] = str(path)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


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
