"""A Jupyter server restarted with kernel_hub kernels running gets them back (issue 23).

With ``--ServerApp.kernel_manager_class=kernel_hub_jupyter.kernelmanager.KernelHubKernelManager``
a real ``jupyter server`` keeps its bridged kernels in a kernel_hub state dir;
a new server on that state lists each under its kernel id, and ``x`` set
before the restart is still there, after a ``kill -9`` and after a polite stop.
The same manager's culling counts a kernel_hub kernel's CPU use as activity.
Every process a run starts carries ``KH_JUPYTER_RUN=<token>``: how leftovers are found.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from kernel_hub_jupyter_testing import JupyterServer

from kernel_hub.testing import processes_with_env, wait_gone

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MANAGER = "kernel_hub_jupyter.kernelmanager.KernelHubKernelManager"


def jupyter_path(bridged) -> str:
    return str(bridged.prefix / "share" / "jupyter")


def printed(server: JupyterServer, kernel_id: str, code: str) -> str:
    with server.websocket(kernel_id) as ws:
        reply, iopub = ws.execute(code)
    assert reply["status"] == "ok", reply
    return "".join(m["content"]["text"] for m in iopub if m["msg_type"] == "stream")


def records(state: Path) -> list[str]:
    return sorted(p.stem for p in state.glob("*.json"))


@pytest.fixture
def run_marker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Mark every process of the test; kill what is left of them at the end."""
    token = uuid.uuid4().hex
    monkeypatch.setenv("KH_JUPYTER_RUN", token)
    monkeypatch.setenv("KERNEL_HUB_STATE_DIR", str(tmp_path / "hubs"))
    marker = f"KH_JUPYTER_RUN={token}"
    yield marker
    for pid in processes_with_env(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_restarted_server_gets_its_kernels_back(bridged, tmp_path, run_marker):
    state = tmp_path / "state"
    args = [
        f"--ServerApp.kernel_manager_class={MANAGER}",
        f"--KernelHubKernelManager.state_dir={state}",
        "--KernelHubKernelManager.grace=300",
    ]
    path = jupyter_path(bridged)
    with JupyterServer.start(tmp_path, jupyter_path=path, args=args) as first:
        kid = first.api("POST", "/api/kernels", {"name": bridged.python})["id"]
        assert printed(first, kid, "x = 42; print('set')") == "set\n"
        assert records(state) == [kid]
        assert (state.stat().st_mode & 0o777) == 0o700
        first.proc.send_signal(signal.SIGKILL)  # a crash: nothing is asked to end
        first.proc.wait(60)

    with JupyterServer.start(tmp_path, jupyter_path=path, args=args) as second:
        kernels = second.api("GET", "/api/kernels")
        assert [k["id"] for k in kernels] == [kid], second.log[-20:]
        assert kernels[0]["name"] == bridged.python
        assert printed(second, kid, "print(x)") == "42\n"
        assert printed(second, kid, "x += 1; print(x)") == "43\n"
        # A polite stop (SIGTERM) leaves it running for the next server too.
        second.stop()
        assert second.proc.returncode == 0
    assert records(state) == [kid]

    with JupyterServer.start(tmp_path, jupyter_path=path, args=args) as third:
        assert [k["id"] for k in third.api("GET", "/api/kernels")] == [kid]
        assert printed(third, kid, "print(x)") == "43\n"
        assert [f.name for f in third.kernel_files()] == [f"kernel-{kid}.json"]
        third.api("DELETE", f"/api/kernels/{kid}")  # ended through Jupyter: ended for good
        assert third.api("GET", "/api/kernels") == []
        assert records(state) == []
    assert wait_gone(processes_with_env(run_marker), 60) == []


def test_without_the_manager_a_restart_ends_the_kernels(bridged, tmp_path, run_marker):
    path = jupyter_path(bridged)
    with JupyterServer.start(tmp_path, jupyter_path=path) as first:
        kid = first.api("POST", "/api/kernels", {"name": bridged.python})["id"]
        assert printed(first, kid, "x = 42; print('set')") == "set\n"
    assert wait_gone(processes_with_env(run_marker), 60) == []
    with JupyterServer.start(tmp_path, jupyter_path=path) as second:
        assert second.api("GET", "/api/kernels") == []
    assert not (tmp_path / "hubs").exists()  # no state dir was made


THREAD = (
    "import threading\n"
    "def spin():\n"
    "    while True: pass\n"
    "threading.Thread(target=spin, daemon=True).start()\n"
    "print('spinning')"
)


def test_culling_keeps_a_kernel_that_computes_silently(bridged, tmp_path, run_marker):
    """jupyter_server culls on IOPub activity alone; the manager also counts CPU use."""
    idle_timeout = 3
    args = [
        f"--ServerApp.kernel_manager_class={MANAGER}",
        f"--KernelHubKernelManager.state_dir={tmp_path / 'state'}",
        f"--KernelHubKernelManager.cull_idle_timeout={idle_timeout}",
        "--KernelHubKernelManager.cull_interval=1",
        "--KernelHubKernelManager.keep_kernels_at_exit=False",
    ]
    with JupyterServer.start(tmp_path, jupyter_path=jupyter_path(bridged), args=args) as server:
        idle = server.api("POST", "/api/kernels", {"name": bridged.python})["id"]
        busy = server.api("POST", "/api/kernels", {"name": bridged.python})["id"]
        assert printed(server, idle, "print('hi')") == "hi\n"
        # Its cell finishes at once; a thread goes on computing, and prints nothing more.
        assert printed(server, busy, THREAD) == "spinning\n"
        deadline = time.monotonic() + 120
        while idle in [k["id"] for k in server.api("GET", "/api/kernels")]:
            assert time.monotonic() < deadline, server.log[-20:]
            time.sleep(0.5)  # polling the REST API: jupyter_server has no culled event
        # Three more idle timeouts: without the CPU check it would be gone by now.
        time.sleep(3 * (idle_timeout + 1))  # a window to look for a cull, not a wait for one
        assert [k["id"] for k in server.api("GET", "/api/kernels")] == [busy], server.log[-20:]
        assert any("Culling" in line and idle in line for line in server.log)
