"""Warm pools behind a real ``jupyter server``: a notebook's kernel is a ready spare (issue 26).

The server runs ``KernelHubKernelManager`` with a private state dir, where the
bridge's hub records each spare once it is ready (``pooled: true``): the test
waits for that record before it opens a notebook, so the launch finds the spare.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from kernel_hub_jupyter_testing import JupyterServer

from kernel_hub.testing import wait_pid_gone

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

LOOK = (
    "import json, os; print(json.dumps([os.getpid(), os.getcwd(), "
    "os.environ.get('JPY_SESSION_NAME'), globals().get('__session__')]))"
)


def records(state: Path) -> list[dict[str, Any]]:
    found = []
    for path in state.glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # being replaced (temp file + rename): read it next time
            continue
    return found


def wait_spare(state: Path, *, not_ids: set[str], timeout: float = 180.0) -> dict[str, Any]:
    """Return the record of a ready spare not in *not_ids*, once the hub has written one.

    The hub writes it when the spare has answered; nothing else can be waited on
    from outside the server's process, so the dir is looked at until the deadline.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in records(state):
            if record.get("pooled") and record["kernel"]["kernel_id"] not in not_ids:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no ready spare recorded in {state} within {timeout} s")


def test_a_notebook_kernel_is_a_ready_spare_adapted_to_the_notebook(bridged, tmp_path, monkeypatch):
    config = tmp_path / "kernel-hub.toml"
    config.write_text('[pool."ipykernel/python3"]\nsize = 1\n')
    monkeypatch.setenv("KERNEL_HUB_CONFIG", str(config))
    state = tmp_path / "state"
    args = (
        "--ServerApp.kernel_manager_class=kernel_hub_jupyter.kernelmanager.KernelHubKernelManager",
        f"--KernelHubKernelManager.state_dir={state}",
        "--KernelHubKernelManager.keep_kernels_at_exit=False",
    )
    jupyter_path = str(bridged.prefix / "share" / "jupyter")
    notebooks = tmp_path / "root" / "work"
    notebooks.mkdir(parents=True)
    server = JupyterServer.start(tmp_path, jupyter_path=jupyter_path, args=args)
    with server:
        spare = wait_spare(state, not_ids=set())
        spare_id = spare["kernel"]["kernel_id"]
        spare_pid = spare["kernel"]["state"]["kernel_pid"]
        model = {
            "path": "work/analysis.ipynb",
            "name": "analysis.ipynb",
            "type": "notebook",
            "kernel": {"name": bridged.python},
        }
        session = server.api("POST", "/api/sessions", model)
        kid = session["kernel"]["id"]
        with server.websocket(kid) as ws:
            reply, iopub = ws.execute(LOOK)
        assert reply["status"] == "ok" and reply["execution_count"] == 1
        (text,) = [m["content"]["text"] for m in iopub if m["msg_type"] == "stream"]
        pid, cwd, session_name, dunder = json.loads(text)
        assert pid == spare_pid  # the notebook got the spare
        assert cwd == str(notebooks)
        assert session_name == dunder == str(notebooks / "analysis.ipynb")
        record = json.loads((state / f"{kid}.json").read_text())  # under jupyter's id
        assert record["pooled"] is False and record["kernel"]["launch_id"] == spare_id
        # The pool refills: another spare is started and recorded once ready.
        second = wait_spare(state, not_ids={spare_id})
        second_pid = second["kernel"]["state"]["kernel_pid"]
        assert second_pid != spare_pid
    # The server's stop ends the notebook's kernel and drains the pool.
    assert wait_pid_gone(spare_pid, 60) and wait_pid_gone(second_pid, 60)
    assert server.wait_kernel_files_gone() == []
    assert records(state) == []
