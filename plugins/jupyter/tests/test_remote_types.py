"""nbclient runs a notebook on bridged Docker and SSH types, from the existing test kits.

Each run is its own process, as a pipeline would be: ``kernel-hub jupyter install``
writes the kernelspecs with a ``KERNEL_HUB_CONFIG`` naming the test image or
the test sshd, and a script runs nbclient on them with that config. These
tests need the docker or ssh plugin next to this one (the workspace suite has
both; the "plugin alone" CI step has neither, and skips them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_hub.testing import processes_running, require_service, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

#: Runs the notebook given as JSON on stdin with nbclient and prints the result as JSON.
RUN_NOTEBOOK = textwrap.dedent(
    """
    import sys, nbformat
    from nbclient import NotebookClient
    nb = nbformat.reads(sys.stdin.read(), as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=sys.argv[1],
        allow_errors=True,
        interrupt_on_timeout=True,
        startup_timeout=300,
        # The sleeping cell times out after 10 s and is interrupted; the others have time.
        timeout_func=lambda cell: 10 if "sleep" in cell.source else 300,
    )
    client.execute()
    print(nbformat.writes(nb))
    """
)

CELLS = [
    "import os, socket\nprint('one')\nprint('two')",
    "1/0",
    "import time\nprint('sleeping', flush=True)\ntime.sleep(600)",
    "print('after', 6*7)",
]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def config_text(plugin: str, tables: dict[str, dict]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{plugin}.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, plugin: str, tables: dict[str, dict]) -> Path:
    path.write_text(config_text(plugin, tables))
    return path


def install_specs(tmp_path: Path, config: Path, type_ids: list[str]) -> Path:
    """Run ``kernel-hub jupyter install`` with *config* into a prefix; return its Jupyter dir."""
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config)}
    prefix = tmp_path / "prefix"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kernel_hub",
            "jupyter",
            "install",
            "--prefix",
            str(prefix),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    from kernel_hub_jupyter.kernelspecs import spec_names

    added = json.loads(out.stdout)["added"]
    assert all(spec_names([t])[t] in added for t in type_ids), added
    return prefix / "share" / "jupyter"


def run_bridged_notebook(tmp_path: Path, config: Path, type_id: str) -> list[list[dict]]:
    """Install the specs with *config*, run CELLS on *type_id*'s spec; return the outputs."""
    from kernel_hub_jupyter.kernelspecs import spec_names

    jupyter_path = install_specs(tmp_path, config, [type_id])
    name = spec_names([type_id])[type_id]
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config), "JUPYTER_PATH": str(jupyter_path)}
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    run = subprocess.run(
        [sys.executable, "-c", RUN_NOTEBOOK, name],
        input=nbformat.writes(nb),
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [cell.outputs for cell in nbformat.reads(run.stdout, as_version=4).cells]


def check_outputs(outputs: list[list[dict]]) -> None:
    assert outputs[0] == [{"output_type": "stream", "name": "stdout", "text": "one\ntwo\n"}]
    assert outputs[1][0]["ename"] == "ZeroDivisionError"
    assert outputs[2][0]["text"] == "sleeping\n"
    assert outputs[2][-1]["ename"] == "KeyboardInterrupt"  # timed out, interrupted
    assert outputs[3][0]["text"] == "after 42\n"  # the same kernel lives on


# ---- Docker ----


@pytest.fixture(scope="module")
def docker_image() -> str:
    pytest.importorskip("kernel_hub_docker", reason="the workspace suite runs it (docker plugin)")
    from kernel_hub_docker.engine import EngineUnavailable, get_client

    image = os.environ.get("KERNEL_HUB_DOCKER_TEST_IMAGE", "kernel-hub-test/ipykernel:bookworm")
    try:
        api = get_client().api
        engine = True
    except EngineUnavailable:
        engine = False
    require_service("dockerd", engine, "start dockerd (.ci/run does this)")
    try:
        api.inspect_image(image)
        found = True
    except Exception:
        found = False
    require_service(
        f"the Docker image {image}",
        found,
        "build it with plugins/docker/scripts/build-test-image.sh (.ci/run does this)",
    )
    return image


@pytest.mark.docker
def test_nbclient_on_a_bridged_docker_type(docker_image, tmp_path):
    from kernel_hub_docker import kernel_containers

    config = write_config(tmp_path / "config.toml", "docker", {"nbbridge": {"image": docker_image}})
    check_outputs(run_bridged_notebook(tmp_path, config, "docker/nbbridge"))
    # Only this test's type: other suites may share the engine.
    left = [c for c in kernel_containers() if c.type_id == "docker/nbbridge"]
    assert not left, f"kernel containers outlived nbclient: {left}"


# ---- SSH ----


@pytest.fixture(scope="module")
def ssh_box() -> Iterator[tuple[dict, Path]]:
    for module in ("kernel_hub_ssh", "kernel_hub_ssh_testing"):  # the plugin and its test kit
        pytest.importorskip(module, reason="the workspace suite runs it (ssh plugin)")
    from kernel_hub_ssh_testing import SSHD, make_remote_python, start_sshd

    require_service("sshd", os.path.exists(SSHD), "apt-get install openssh-server")
    with tempfile.TemporaryDirectory(prefix="kh-jupyter-ssh-") as tmp:
        server = start_sshd(Path(tmp) / "sshd")
        try:
            python = make_remote_python(Path(tmp) / "remote-venv")
            yield server.kernel_table(python=str(python), connect_timeout=30), python
        finally:
            server.stop()
        assert not remote_left(str(Path(tmp) / "remote-venv"))


def remote_left(remote: str, timeout: float = 60.0) -> list[tuple[int, str]]:
    """Return the processes of the remote venv *remote* still running after *timeout*.

    The host's cleanup returns once the nanny has answered ``shutdown``; the
    nanny exits a moment later, so its end is awaited (a pidfd each).
    """
    found = processes_running(remote)
    alive = set(wait_gone([pid for pid, _ in found], timeout))
    return [(pid, args) for pid, args in found if pid in alive]


@pytest.mark.ssh
def test_nbclient_on_a_bridged_ssh_type(ssh_box, tmp_path):
    table, python = ssh_box
    config = write_config(tmp_path / "config.toml", "ssh", {"box": table})
    check_outputs(run_bridged_notebook(tmp_path, config, "ssh/box"))
    assert not remote_left(str(python.parent.parent)), "a remote kernel or nanny is left"


@pytest.mark.ssh
def test_papermill_on_a_bridged_ssh_type_prints_no_warning_or_asyncssh_line(ssh_box, tmp_path):
    """Issue 20: papermill logs at INFO; asyncssh's ~150 INFO lines and DSA warnings got through."""
    import nbformat
    from kernel_hub_jupyter.kernelspecs import spec_names
    from nbformat.v4 import new_code_cell, new_notebook

    table, python = ssh_box
    config = write_config(tmp_path / "config.toml", "ssh", {"quiet": table})
    jupyter_path = install_specs(tmp_path, config, ["ssh/quiet"])
    source, result = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("print(6*7)")]), source)
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config), "JUPYTER_PATH": str(jupyter_path)}
    name = spec_names(["ssh/quiet"])["ssh/quiet"]
    run = subprocess.run(
        [sys.executable, "-m", "papermill", str(source), str(result), "-k", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = nbformat.read(result, as_version=4).cells[0].outputs
    assert outputs[0]["text"] == "42\n"
    assert "Input Notebook" in run.stderr  # papermill's own INFO lines are there
    noise = [
        line
        for line in run.stderr.splitlines()
        if "Warning" in line or "[conn=" in line or "asyncssh" in line
    ]
    assert noise == [], run.stderr[-3000:]
    assert not remote_left(str(python.parent.parent)), "a remote kernel or nanny is left"


# ---- a real jupyter server, killed outright, with a Docker and an SSH kernel ----


def wait_until(condition, timeout: float) -> bool:
    """Ask *condition* until it holds or *timeout* s pass; return whether it held.

    What is awaited is cleanup by processes this test does not own (the reaper's
    detached command, the remote nanny's lease), which announce themselves by no
    event a test can wait on.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


@pytest.mark.docker
@pytest.mark.ssh
def test_server_killed_outright_leaves_no_container_remote_kernel_or_connection_file(
    docker_image, ssh_box, tmp_path, monkeypatch
):
    """``kill -9`` of a jupyter server running a bridged Docker and a bridged SSH kernel.

    jupyter_client writes its own connection file (with the key) for these
    kernels, as kernel_hub has none of its own for them: it must go with the
    container and the remote kernel.
    """
    from kernel_hub_docker import kernel_containers
    from kernel_hub_jupyter.kernelspecs import spec_names
    from kernel_hub_jupyter_testing import JupyterServer

    table, python = ssh_box
    remote = str(python.parent.parent)
    config = tmp_path / "config.toml"
    # A short lease: the remote nanny ends its kernel 10 s after its host is gone.
    config.write_text(
        config_text("docker", {"killed": {"image": docker_image}})
        + config_text("ssh", {"killed": {**table, "lease": 10}})
    )
    types = ["docker/killed", "ssh/killed"]
    names = spec_names(types)
    jupyter_path = install_specs(tmp_path, config, types)
    monkeypatch.setenv("KERNEL_HUB_CONFIG", str(config))

    def containers() -> list:
        return [c for c in kernel_containers() if c.type_id == "docker/killed"]

    server = JupyterServer.start(tmp_path / "server", jupyter_path=str(jupyter_path))
    try:
        for type_id in types:
            kid = server.api("POST", "/api/kernels", {"name": names[type_id]})["id"]
            with server.websocket(kid) as ws:
                reply, iopub = ws.execute("print(6*7)")
            assert [m["content"]["text"] for m in iopub if m["msg_type"] == "stream"] == ["42\n"]
        assert len(server.kernel_files()) == 2
        assert containers() and processes_running(remote)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        assert wait_until(lambda: not containers(), 120), f"containers left: {containers()}"
        left = remote_left(remote, 120)  # the nanny ends its kernel, then itself, after the lease
        assert not left, f"remote processes left: {left}"
        assert server.wait_kernel_files_gone() == []
    finally:
        server.stop()
        # Whatever a failure left: no container, no key on disk (the remote side is
        # the ssh_box fixture's, which ends every session and checks).
        from kernel_hub_docker.engine import get_client

        for c in containers():
            get_client().api.remove_container(c.id, force=True)
        for f in server.kernel_files():
            f.unlink()
