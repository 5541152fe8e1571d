"""The ``kernel-hub`` provisioner under real jupyter_client hosts: nbclient, papermill, managers.

Every kernel here is a real ipykernel launched through kernel_hub (type
``ipykernel/python3``) by the bridge's hub in this process; each test checks
that jupyter's kernel id reached kernel_hub and that nothing is left after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from kernel_hub_jupyter import bridge
from kernel_hub_jupyter.provisioner import KernelHubProvisioner, actionable
from nbformat.v4 import new_code_cell, new_notebook

from kernel_hub import KernelHub, LaunchError, NoSuchKernelType
from kernel_hub.testing import pid_alive, processes_running, wait_pid_gone

pytestmark = [pytest.mark.integration]


def bridge_hub() -> KernelHub:
    return asyncio.run(bridge.get_hub())


class Recorder:
    """The bridge hub's events (starting/ready/shutdown ...), by kernel id."""

    def __init__(self) -> None:
        self.events: list = []
        self.hub = bridge_hub()
        self.close = self.hub.events.subscribe(self.events.append)

    def started(self) -> list[str]:
        return [e.kernel_id for e in list(self.events) if e.kind == "starting"]

    def kinds(self, kernel_id: str) -> list[str]:
        return [e.kind for e in list(self.events) if e.kernel_id == kernel_id]

    def ended_politely(self, kernel_id: str) -> bool:
        """jupyter's shutdown_request ended the kernel: the hub reports a shutdown, no death."""
        kinds = self.kinds(kernel_id)
        return kinds[-1] == "shutdown" and "died" not in kinds


@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    rec.close()
    assert not rec.hub.kernels, f"kernels left in the bridge hub: {dict(rec.hub.kernels)}"


def runtime_files(kernel_id: str) -> list[Path]:
    from jupyter_core.paths import jupyter_runtime_dir

    return list(Path(jupyter_runtime_dir()).glob(f"*{kernel_id}*"))


def test_nbclient_runs_a_notebook_with_outputs_in_order_and_an_error_cell(bridged, recorder):
    from nbclient import NotebookClient

    nb = new_notebook(
        cells=[
            new_code_cell("import os\nfor i in range(3): print('line', i)"),
            new_code_cell("1/0"),
            new_code_cell("print('after the error'); os.getpid()"),
            new_code_cell("from IPython.display import display\ndisplay('shown'); 6*7"),
        ]
    )
    client = NotebookClient(nb, kernel_name=bridged.python, allow_errors=True, timeout=120)
    client.execute()
    (kernel_id,) = recorder.started()
    assert recorder.kinds(kernel_id)[:2] == ["starting", "ready"]
    out = [c.outputs for c in nb.cells]
    assert out[0] == [
        {"output_type": "stream", "name": "stdout", "text": "line 0\nline 1\nline 2\n"}
    ]
    assert out[1][0]["output_type"] == "error" and out[1][0]["ename"] == "ZeroDivisionError"
    assert out[2][0]["text"] == "after the error\n"
    pid = int(out[2][1]["data"]["text/plain"])
    assert [o["output_type"] for o in out[3]] == ["display_data", "execute_result"]
    assert out[3][1]["data"]["text/plain"] == "42"
    assert wait_pid_gone(pid, 30), "the kernel outlived nbclient"
    assert recorder.ended_politely(kernel_id)
    assert runtime_files(kernel_id) == []


def test_nbclient_interrupts_a_cell_that_times_out(bridged, recorder):
    from nbclient import NotebookClient

    nb = new_notebook(
        cells=[
            new_code_cell("import time\ntime.sleep(600)"),
            new_code_cell("print('still alive')"),
        ]
    )
    client = NotebookClient(
        nb,
        kernel_name=bridged.python,
        timeout=5,  # the cell sleeps for ten minutes: it always times out
        interrupt_on_timeout=True,
        allow_errors=True,
        startup_timeout=120,
    )
    client.execute()
    assert nb.cells[0].outputs[-1]["ename"] == "KeyboardInterrupt"
    assert nb.cells[1].outputs[0]["text"] == "still alive\n"


def test_papermill_injects_parameters(bridged, recorder, tmp_path):
    import papermill

    source = new_notebook(
        cells=[
            new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("print(n * n)"),
        ]
    )
    source.metadata["kernelspec"] = {
        "name": bridged.python,
        "display_name": "x",
        "language": "python",
    }
    src, dst = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(source, src)
    papermill.execute_notebook(
        str(src), str(dst), parameters={"n": 7}, progress_bar=False, execution_timeout=120
    )
    done = nbformat.read(dst, as_version=4)
    assert [c.metadata.get("tags") for c in done.cells][1] == ["injected-parameters"]
    assert done.cells[-1].outputs[0]["text"] == "49\n"
    assert done.metadata["kernelspec"]["name"] == bridged.python


def test_papermill_with_a_pool_table_starts_no_spare(bridged, tmp_path):
    """A one-shot client runs its notebook and exits: a [pool] table must not make it
    start spares only to shut them down (a Jupyter server does start them)."""
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text('[pool."ipykernel/python3"]\nsize = 2\n')
    source = new_notebook(cells=[new_code_cell("print(6 * 7)")])
    source.metadata["kernelspec"] = {
        "name": bridged.python,
        "display_name": "x",
        "language": "python",
    }
    src, dst = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(source, src)
    driver = (
        "import sys, papermill\n"
        "from kernel_hub_jupyter import bridge\n"
        "papermill.execute_notebook(sys.argv[1], sys.argv[2], progress_bar=False,\n"
        "                           execution_timeout=120)\n"
        "hub = bridge._hub\n"
        "print(len(hub.pools) if hub is not None else 0)\n"
    )
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config)}
    out = subprocess.run(
        [sys.executable, "-c", driver, str(src), str(dst)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0", out.stdout
    assert nbformat.read(dst, as_version=4).cells[0].outputs[0]["text"] == "42\n"


def test_kernel_manager_interrupt_restart_and_shutdown(bridged, recorder):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=bridged.python, startup_timeout=120)
    try:
        assert isinstance(km.provisioner, KernelHubProvisioner)
        kernel = asyncio.run(km.provisioner.running_kernel())
        assert kernel is recorder.hub.get(km.kernel_id)
        assert "[RUNNING]" in repr(km.provisioner)
        saved = asyncio.run(km.provisioner.get_provisioner_info())
        assert saved["kernel_id"] == km.kernel_id
        assert saved["kernel_hub"]["type_id"] == "ipykernel/python3"
        first_pid = kernel.manager.pid
        assert km.connection_file == kernel.state["connection_file"]  # one file, kernel_hub's
        assert oct(os.stat(km.connection_file).st_mode & 0o777) == "0o600"
        msg_id = kc.execute("import time; print('sleeping', flush=True); time.sleep(600)")
        wait_stream(kc)  # the code runs: ipykernel ignores SIGINT before that
        km.interrupt_kernel()
        # jupyter_client's wait_for_ready may have left a late kernel_info_reply queued.
        reply = kc.get_shell_msg(timeout=60)
        while reply["parent_header"]["msg_id"] != msg_id:
            assert reply["msg_type"] == "kernel_info_reply", reply["msg_type"]
            reply = kc.get_shell_msg(timeout=60)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        kc.stop_channels()
        km.restart_kernel()
        kernel = asyncio.run(km.provisioner.running_kernel())
        assert kernel is recorder.hub.get(km.kernel_id)  # the same jupyter id, a new process
        assert kernel.manager.pid != first_pid and not pid_alive(first_pid)
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("x = 5", timeout=60)
        assert reply["content"]["status"] == "ok"
        assert km.is_alive()
        second_pid = kernel.manager.pid
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert not km.is_alive()
    assert wait_pid_gone(second_pid, 30)
    kinds = recorder.kinds(km.kernel_id)
    assert kinds.count("ready") == 2 and recorder.ended_politely(km.kernel_id)
    assert "restarting" not in kinds  # jupyter restarted it, not kernel_hub's restarter
    assert runtime_files(km.kernel_id) == []


def test_an_interrupt_right_after_start_waits_for_the_kernel_instead_of_killing_it(
    bridged, recorder, caplog
):
    """jupyter_client's interrupt_kernel before the kernel answered: held, not a SIGINT that
    ends ipykernel while it imports (its exit status was -2)."""
    from jupyter_client.manager import KernelManager

    caplog.set_level(logging.INFO, logger="kernel_hub")
    km = KernelManager(kernel_name=bridged.python)
    km.start_kernel()  # returns once launched, before the kernel answers
    kc = km.client()
    try:
        km.interrupt_kernel()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        assert [r for r in caplog.records if "held until it answers" in r.getMessage()]
        reply = kc.execute_interactive("x = 1", timeout=60)
        assert reply["content"]["status"] == "ok"
        assert km.is_alive()
        assert "failed" not in recorder.kinds(km.kernel_id)
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert recorder.ended_politely(km.kernel_id)


def test_restart_kernel_keeps_ports_and_key_so_the_same_client_goes_on(bridged, recorder):
    """jupyter_client's restart_kernel on a bridged type: the client made before still works.

    As with jupyter_client's own LocalProvisioner: the same ports and key, and its
    connection file stays valid (the kernel's, rewritten with the same content).
    """
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=bridged.python, startup_timeout=120)
    try:
        before = km.get_connection_info()
        first_pid = asyncio.run(km.provisioner.running_kernel()).manager.pid
        km.restart_kernel(now=True)
        assert asyncio.run(km.provisioner.running_kernel()).manager.pid != first_pid
        assert km.get_connection_info() == before
        with open(km.connection_file) as f:
            on_disk = json.load(f)
        assert {k: on_disk[k] for k in ("shell_port", "iopub_port", "key")} == {
            "shell_port": before["shell_port"],
            "iopub_port": before["iopub_port"],
            "key": before["key"].decode(),
        }
        kc.wait_for_ready(timeout=60)  # the same client object, made before the restart
        out: list[str] = []
        reply = kc.execute_interactive(
            "print(1)",
            output_hook=lambda m: (
                out.append(m["content"]["text"]) if m["header"]["msg_type"] == "stream" else None
            ),
            timeout=60,
        )
        assert reply["content"]["status"] == "ok" and out == ["1\n"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert runtime_files(km.kernel_id) == []


def test_a_bridged_kernel_speaks_curve_with_jupyter_clients_own_client(bridged, recorder):
    """Issue 24: the bridge hands jupyter_client the Curve keys; a keyless sniffer gets nothing."""
    from jupyter_client.manager import start_new_kernel

    from kernel_hub.testing import Sniffer

    km, kc = start_new_kernel(kernel_name=bridged.python, startup_timeout=120)
    try:
        info = km.get_connection_info()
        assert info["curve_publickey"] and kc.curve_publickey  # jupyter_client took them
        with open(km.connection_file) as f:
            assert json.load(f)["curve_publickey"] == info["curve_publickey"]
        sniffer = Sniffer(info)
        try:
            assert sniffer.handshake("shell") is False and sniffer.handshake("iopub") is False
        finally:
            sniffer.close()
        reply = kc.execute_interactive("x = 1", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert runtime_files(km.kernel_id) == []


def test_dead_kernel_signal_and_double_cleanup_do_not_raise(bridged, recorder):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=bridged.python)
    km.start_kernel()
    prov = km.provisioner
    kernel = asyncio.run(prov.running_kernel())
    pid = kernel.manager.pid
    os.kill(pid, signal.SIGKILL)  # dies behind jupyter's back
    assert asyncio.run(asyncio.wait_for(prov.wait(), 60)) == -signal.SIGKILL  # woken, not polled
    assert not km.is_alive()
    asyncio.run(prov.send_signal(signal.SIGINT))  # jupyter interrupts before every shutdown
    asyncio.run(prov.send_signal(signal.SIGTERM))
    km.shutdown_kernel(now=True)
    asyncio.run(prov.cleanup())  # nbclient calls it a second time
    assert not prov.has_process and asyncio.run(prov.poll()) == -signal.SIGKILL
    assert runtime_files(km.kernel_id) == []


def test_unknown_type_is_an_actionable_error(bridged, tmp_path, recorder):
    from jupyter_client.manager import KernelManager

    spec = json.loads(
        (bridged.prefix / "share/jupyter/kernels" / bridged.python / "kernel.json").read_text()
    )
    spec["metadata"]["kernel_provisioner"]["config"]["type_id"] = "nosuch/thing"
    (tmp_path / "kh-gone").mkdir()
    (tmp_path / "kh-gone" / "kernel.json").write_text(json.dumps(spec))
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)])
    km = KernelManager(kernel_name="kh-gone", kernel_spec_manager=ksm)
    with pytest.raises(RuntimeError) as info:
        km.start_kernel()
    message = str(info.value)
    assert "'kh-gone'" in message and "'nosuch/thing'" in message
    assert "kernel-hub jupyter install" in message
    assert isinstance(info.value.__cause__, NoSuchKernelType)


def test_actionable_names_the_type_and_the_check_command():
    msg = actionable("docker/py", "kh-docker-py", LaunchError("image gone\nmore detail"))
    assert msg == (
        "kernel_hub could not start 'docker/py' (kernelspec 'kh-docker-py'): image gone. "
        "Check it outside Jupyter with: kernel-hub run docker/py -c 'print(1)'"
    )


HOST = textwrap.dedent(
    """
    import json, sys
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=120)
    from kernel_hub_jupyter import bridge
    import asyncio
    hub = asyncio.run(bridge.get_hub())
    kernel = asyncio.run(km.provisioner.running_kernel())
    assert kernel is hub.get(km.kernel_id)
    print(json.dumps({"pid": kernel.manager.pid, "file": km.connection_file}), flush=True)
    sys.stdin.read()
    """
)


def test_host_killed_outright_leaves_no_kernel_or_connection_file(bridged):
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, bridged.python],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = host.stdout.readline()
        assert line, "the host process did not start its kernel"
        started = json.loads(line)
        assert pid_alive(started["pid"]) and os.path.exists(started["file"])
        host.kill()
        host.wait(30)
        assert wait_pid_gone(started["pid"], 30), "the kernel outlived its killed host"
        # The reaper kills first and removes files after: look again until a deadline.
        deadline = time.monotonic() + 30
        while os.path.exists(started["file"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(started["file"])
    finally:
        host.kill()
        host.wait(30)
        host.stdin.close()
        host.stdout.close()


def wait_stream(kc) -> None:
    """Return once the kernel's next stream output has arrived on IOPub."""
    while kc.get_iopub_msg(timeout=120)["msg_type"] != "stream":
        pass


#: A host with no kernel: jupyter_client's connection file goes through the provisioner's
#: guard as argv[2] says (see below), then the host waits to be killed.
GUARD_HOST = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from jupyter_client.manager import KernelManager
    from kernel_hub_jupyter.provisioner import KernelHubProvisioner

    first, second, steps = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    km = KernelManager(connection_file=first)
    provisioner = KernelHubProvisioner(kernel_id="guarded", kernel_spec=None, parent=km)

    async def main():
        for step in steps:
            if step == "launched":  # jupyter_client wrote its file, then post_launch
                with open(km.connection_file, "w") as f:
                    f.write("{}")
                await provisioner.post_launch()
            elif step == "moved":  # a relaunch that writes another file
                km.connection_file = second
            else:
                await provisioner.cleanup(restart=step == "restart")

    asyncio.run(main())
    from kernel_hub.managers.reaper import reaper  # not a child: init adopted it
    helper = reaper().pid
    print(json.dumps([helper] if helper else []), flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.parametrize(
    ("steps", "left"),
    [
        ("launched", []),  # killed while the kernel runs: the reaper removes the file
        ("launched,restart,launched", []),  # a restart keeps the guard, same path
        ("launched,restart,moved,launched", ["first"]),  # the new path replaces the old
        ("launched,cleanup", ["first"]),  # a shutdown withdraws it (jupyter removed the file)
    ],
)
def test_connection_file_guard_follows_launch_restart_and_cleanup(tmp_path, steps, left):
    first, second = tmp_path / "first", tmp_path / "second"
    host = subprocess.Popen(
        [sys.executable, "-c", GUARD_HOST, str(first), str(second), steps],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = host.stdout.readline()
        assert line, "the host did not get through its steps"
        helpers = json.loads(line)  # kernel_hub's reaper, if the guard started it
        assert helpers or not any(p.exists() for p in (first, second))
        host.kill()
        host.wait(30)
        assert all(wait_pid_gone(pid, 60) for pid in helpers), "the reaper did not finish"
        assert sorted(p.name for p in (first, second) if p.exists()) == left
    finally:
        host.kill()
        host.wait(30)
        host.stdin.close()
        host.stdout.close()
        for p in (first, second):
            p.unlink(missing_ok=True)


# ---- issue #22 item 6: jupyter_client's start timeout governs, the kernel's output is shown ----


@pytest.mark.parametrize(
    ("behaviour", "code", "jupyters_words"),
    [
        ("never answers", "time.sleep(600)", "didn't respond in 5 seconds"),
        ("exits during start-up", "sys.exit(3)", "Kernel died before replying"),
    ],
)
def test_papermill_start_timeout_governs_and_the_kernels_output_is_shown(
    tmp_path, behaviour, code, jupyters_words
):
    """Real papermill, as a subprocess, on a bridged kernelspec whose kernel never answers.

    Before: it failed after the provisioner's own 120 s, and the message ended
    with "Its last output:." and nothing after it.
    """
    # The bridged type is a kernelspec: the spec plugin must offer it (the workspace suite
    # has it; the bridge's "plugin alone" venv has only the ipykernel plugin).
    pytest.importorskip("kernel_hub_spec", reason="the workspace suite runs it (spec plugin)")
    from kernel_hub_jupyter.kernelspecs import build_spec

    from kernel_hub import KernelType

    marker = f"kh-silent-{os.getpid()}-{time.monotonic_ns()}"
    line = f"{marker} says hello"
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    (kernels / "silent").mkdir(parents=True)
    argv = [sys.executable, "-c", f"import sys, time; print({line!r}, flush=True); {code}"]
    (kernels / "silent" / "kernel.json").write_text(
        json.dumps({"argv": [*argv, marker, "{connection_file}"], "display_name": "silent"})
    )
    silent = KernelType("spec", "silent", "silent", "python", tuple(argv))
    (kernels / "kh-spec-silent").mkdir()
    (kernels / "kh-spec-silent" / "kernel.json").write_text(json.dumps(build_spec(silent)))
    notebook = tmp_path / "in.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("print(1)")]), notebook)
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "papermill", "--start-timeout", "5", "-k", "kh-spec-silent"]
        + [str(notebook), str(tmp_path / "out.ipynb")],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")},
    )
    elapsed = time.monotonic() - started
    assert res.returncode != 0, behaviour
    assert jupyters_words in res.stderr, res.stderr
    assert elapsed < 60, elapsed  # before: 122 s, the provisioner's own wait
    assert line in res.stderr  # the kernel's output, with the kernelspec and type named
    assert "'kh-spec-silent'" in res.stderr and "'spec/silent'" in res.stderr
    assert "Its last output:." not in res.stderr
    assert processes_running(marker) == []
