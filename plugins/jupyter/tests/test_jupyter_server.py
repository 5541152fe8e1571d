"""A real ``jupyter server`` process on 127.0.0.1 running bridged kernels.

REST start, execute over the websocket, interrupt, restart, idle culling,
delete, and the server killed outright: after each, no kernel process and no
connection file of the kernel may be left.
"""

from __future__ import annotations

import os
import signal
import urllib.error

import pytest
from kernel_hub_jupyter_testing import JupyterServer, kernel_pids

from kernel_hub.testing import wait_pid_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


#: A cell that runs for ten minutes unless interrupted; it says when it has begun.
SLEEP = "import time; print('sleeping', flush=True); time.sleep(600)"


def jupyter_path(bridged) -> str:
    return str(bridged.prefix / "share" / "jupyter")


def the_kernel_pid(kernel_id: str) -> int:
    (pid,) = kernel_pids(kernel_id)
    return pid


def test_rest_websocket_interrupt_restart_delete(bridged, tmp_path):
    with JupyterServer.start(tmp_path, jupyter_path=jupyter_path(bridged)) as server:
        specs = server.api("GET", "/api/kernelspecs")["kernelspecs"]
        assert bridged.python in specs  # listed: it has a resource dir
        assert specs[bridged.python]["spec"]["metadata"]["kernel_hub"]["type_id"] == (
            "ipykernel/python3"
        )
        kernel = server.api("POST", "/api/kernels", {"name": bridged.python})
        kid = kernel["id"]
        first = the_kernel_pid(kid)
        assert [f.name for f in server.kernel_files()] == [f"kernel-{kid}.json"]
        with server.websocket(kid) as ws:
            reply, iopub = ws.execute("print(6*7)")
            assert reply["status"] == "ok"
            streams = [m["content"]["text"] for m in iopub if m["msg_type"] == "stream"]
            assert streams == ["42\n"]
            msg_id = ws.send("execute_request", {"code": SLEEP})
            assert ws.wait_stream(msg_id) == "sleeping\n"
            server.api("POST", f"/api/kernels/{kid}/interrupt")
            assert ws.reply_to(msg_id)["content"]["ename"] == "KeyboardInterrupt"
        server.api("POST", f"/api/kernels/{kid}/restart")
        assert wait_pid_gone(first, 60), "the old process outlived the restart"
        second = the_kernel_pid(kid)
        assert second != first
        with server.websocket(kid) as ws:  # JupyterLab reconnects after a restart, too
            reply, iopub = ws.execute("import os; print(os.getpid())")
            assert [m["content"]["text"] for m in iopub if m["msg_type"] == "stream"] == [
                f"{second}\n"
            ]
        server.api("DELETE", f"/api/kernels/{kid}")
        assert wait_pid_gone(second, 60)
        assert server.api("GET", "/api/kernels") == []
        assert server.kernel_files() == []
        with pytest.raises(urllib.error.HTTPError) as info:
            server.api("GET", f"/api/kernels/{kid}")
        assert info.value.code == 404


def test_idle_kernel_is_culled_and_leaves_nothing(bridged, tmp_path):
    args = (
        "--MappingKernelManager.cull_idle_timeout=3",
        "--MappingKernelManager.cull_interval=1",
    )
    with JupyterServer.start(tmp_path, jupyter_path=jupyter_path(bridged), args=args) as server:
        kid = server.api("POST", "/api/kernels", {"name": bridged.python})["id"]
        pid = the_kernel_pid(kid)
        assert wait_pid_gone(pid, 180), "the idle kernel was not culled"
        assert server.wait_kernel_gone(kid), "the culled kernel is still listed"
        assert server.kernel_files() == []
        assert any("Culling" in line for line in server.log)


def test_server_killed_outright_leaves_no_kernel_or_connection_file(bridged, tmp_path):
    server = JupyterServer.start(tmp_path, jupyter_path=jupyter_path(bridged))
    try:
        kid = server.api("POST", "/api/kernels", {"name": bridged.python})["id"]
        pid = the_kernel_pid(kid)
        assert server.kernel_files()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        assert wait_pid_gone(pid, 60), "the kernel outlived its killed server"
        assert server.wait_kernel_files_gone() == []  # the reaper kills first, then removes
    finally:
        server.stop()


def test_live_spec_manager_lists_types_without_install(tmp_path):
    """KernelHubSpecManager: kernel_hub's types in the REST listing, no install step."""
    args = (
        "--ServerApp.kernel_spec_manager_class=kernel_hub_jupyter.specmanager.KernelHubSpecManager",
    )
    env_path = os.environ.pop("JUPYTER_PATH", None)  # no installed bridge specs in sight
    try:
        server = JupyterServer.start(tmp_path, args=args)
    finally:
        if env_path is not None:
            os.environ["JUPYTER_PATH"] = env_path
    with server:
        specs = server.api("GET", "/api/kernelspecs")["kernelspecs"]
        assert "kh-ipykernel-python3" in specs
        assert oct((server.runtime_dir / "kernel-hub-specs").stat().st_mode & 0o777) == "0o700"
        kid = server.api("POST", "/api/kernels", {"name": "kh-ipykernel-python3"})["id"]
        with server.websocket(kid) as ws:
            reply, iopub = ws.execute("print('live')")
            assert [m["content"]["text"] for m in iopub if m["msg_type"] == "stream"] == ["live\n"]
        pid = the_kernel_pid(kid)
        server.api("DELETE", f"/api/kernels/{kid}")
        assert wait_pid_gone(pid, 60)
        assert server.kernel_files() == []
