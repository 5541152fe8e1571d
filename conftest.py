"""Root conftest: the kernel_hub test kit, an isolated Jupyter runtime dir, and leak checks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["kernel_hub.testing"]


def _our_kernel_pids() -> list[int]:
    """Return live processes that were started by this test process (JPY_PARENT_PID == us)."""
    me = str(os.getpid()).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"JPY_PARENT_PID=" + me in env and state != b"Z":
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="session", autouse=True)
def isolated_runtime_dir() -> Iterator[Path]:
    """Give the session a private Jupyter runtime dir and check that nothing leaks from it.

    At the end no kernel started by the suite may still run, and no connection
    or log file may remain.
    """
    old = os.environ.get("JUPYTER_RUNTIME_DIR")
    with tempfile.TemporaryDirectory(prefix="kh-runtime-") as tmp:
        os.environ["JUPYTER_RUNTIME_DIR"] = tmp
        try:
            yield Path(tmp)
            leftovers = sorted(p.name for p in Path(tmp).iterdir())
            alive = _our_kernel_pids()
        finally:
            if old is None:
                os.environ.pop("JUPYTER_RUNTIME_DIR", None)
            else:
                os.environ["JUPYTER_RUNTIME_DIR"] = old
        assert not alive, f"kernel processes outlived the test suite: {alive}"
        assert not leftovers, f"files left in the Jupyter runtime dir: {leftovers}"
