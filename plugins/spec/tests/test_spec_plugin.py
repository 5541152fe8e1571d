"""Tests of the spec plugin's hooks, and real kernels launched from kernelspecs."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import os
import sys
from pathlib import Path

import kernel_hub_spec.plugin
import pytest
import pytest_asyncio

from kernel_hub.contract.types import KernelType, LaunchRequest
from kernel_hub.managers.subproc import SubprocessManager
from kernel_hub.plugins import HookRelay, make_plugin_manager
from kernel_hub.testing import execute_output, interrupt_busy_loop

plugin = kernel_hub_spec.plugin


def write_spec(kernels_dir: Path, name: str, data: dict[str, object]) -> Path:
    spec_dir = kernels_dir / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps(data))
    return spec_dir


@pytest.fixture
def kernels_dir(tmp_path, monkeypatch):
    """An empty ``kernels`` dir first on JUPYTER_PATH, and a private user data dir.

    The root conftest gives the session a private runtime dir and checks that
    no kernel or connection file outlives the suite.
    """
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jp"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("JUPYTER_PREFER_ENV_PATH", raising=False)
    return tmp_path / "jp" / "kernels"


@pytest.fixture
def relay():
    return HookRelay(make_plugin_manager(load_entrypoints=False, plugins=[plugin]))


# ---- hooks ----


@pytest.mark.asyncio
async def test_hook_find_kernel_types(kernels_dir, relay):
    write_spec(kernels_dir, "kh-a", {"argv": ["/bin/a"], "display_name": "A", "language": "x"})

    found = {kt.id: kt for _, kt in await relay.find_kernel_types(hub=None)}

    kt = found["spec/kh-a"]
    assert kt.display_name == "A"
    assert kt.language == "x"
    assert kt.resource_dir == str(kernels_dir / "kh-a")
    assert all(kt.provider == "spec" for kt in found.values())


def test_hooks_are_plain_functions():
    # firstresult hooks must decide synchronously (see kernel_hub.hookspecs). That they decline
    # another provider's types is checked by the conformance battery (test_conformance_*.py).
    for hook in (plugin.find_kernel_types, plugin.launch, plugin.make_manager):
        assert not inspect.iscoroutinefunction(hook)


def test_hook_make_manager_rebuilds_a_subprocess_manager():
    kt = KernelType(provider="spec", name="kh-m", argv=("k",))
    state = {"pid": os.getpid(), "pgid": None, "connection_file": "/nonexistent/c.json"}

    manager = plugin.make_manager(hub=None, kernel_type=kt, connection_info={}, state=state)

    assert isinstance(manager, SubprocessManager)
    assert manager.pid == os.getpid()
    assert manager.type_id == "spec/kh-m"
    assert manager.connection_file == "/nonexistent/c.json"


@pytest.mark.asyncio
async def test_hook_launch_runs_the_kernelspec_argv(kernels_dir, relay, tmp_path):
    """A kernel.json saying ``python`` runs this interpreter with templates, cwd and env filled.

    The "kernel" is a short script, so no ipykernel is needed.
    """
    out = tmp_path / "out.json"
    script = (
        "import json, os, sys; json.dump({'argv': sys.argv[1:], 'exe': sys.executable, "
        "'cwd': os.getcwd(), 'env': os.environ.get('KH_TEST'), "
        "'req': os.environ.get('KH_REQ')}, open(sys.argv[-1], 'w'))"
    )
    resource_dir = write_spec(
        kernels_dir,
        "kh-script",
        {
            "argv": ["python", "-c", script, "{connection_file}", "{resource_dir}", str(out)],
            "env": {"KH_TEST": "${HOME}-x"},
        },
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    name, kt = {kt.id: (n, kt) for n, kt in await relay.find_kernel_types(hub=None)}[
        "spec/kh-script"
    ]
    request = LaunchRequest(kernel_id="kh-1", cwd=str(workdir), env={"KH_REQ": "r"})

    result = await relay.launch(plugin=name, hub=None, kernel_type=kt, request=request)
    manager = result.manager  # the live manager: it holds the child process
    assert manager is not None
    assert await asyncio.wait_for(manager.wait(), 60) == 0, manager.log_tail()
    await manager.cleanup()

    seen = json.loads(out.read_text())
    conn_file, res_dir, _ = seen["argv"]
    assert conn_file == result.state["connection_file"]
    assert res_dir == str(resource_dir)
    assert seen["cwd"] == str(workdir)
    assert seen["env"] == os.environ["HOME"] + "-x"
    assert seen["req"] == "r"
    assert os.path.realpath(seen["exe"]) == os.path.realpath(sys.executable)
    assert not os.path.exists(conn_file)  # cleanup removed it


def test_entry_point_loads_this_plugin():
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="kernel_hub") if ep.name == "spec"]
    assert ep.load() is plugin
    assert ep.dist is not None and ep.dist.name == "kernel-hub-spec"
    assert make_plugin_manager().get_plugin("spec") is plugin


# ---- real kernels through the hub (integration) ----


def ipykernel_spec(**extra: object) -> dict[str, object]:
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return {"argv": argv, "display_name": "KH test", "language": "python", **extra}


@pytest_asyncio.fixture
async def spec_hub(kernels_dir):
    from kernel_hub import KernelHub

    async with KernelHub(plugins=[plugin], load_entrypoints=False) as hub:
        yield hub


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kernel_sees_cwd_and_expanded_env(kernels_dir, spec_hub, tmp_path):
    write_spec(kernels_dir, "kh-ipy", ipykernel_spec(env={"KH_TEST": "${HOME}-x"}))
    workdir = tmp_path / "work dir"
    workdir.mkdir()

    assert "spec/kh-ipy" in [kt.id for kt in await spec_hub.find_kernel_types()]
    kernel = await spec_hub.launch("spec/kh-ipy", cwd=str(workdir), env={"KH_REQ": "1"})
    try:
        assert kernel.kernel_type.id == "spec/kh-ipy"
        assert isinstance(kernel.manager, SubprocessManager)
        async with kernel.client() as client:
            code = (
                "import os; print(os.getcwd()); print(os.environ['KH_TEST'], os.environ['KH_REQ'])"
            )
            content, text = await execute_output(client, code, timeout=60)
        assert content["status"] == "ok", content
        cwd, env = text.splitlines()
        assert cwd == str(workdir)
        assert env == os.environ["HOME"] + "-x 1"
    finally:
        await kernel.shutdown()
    assert not await kernel.manager.is_alive()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_message_mode_interrupt_stops_a_busy_loop(kernels_dir, spec_hub):
    write_spec(kernels_dir, "kh-msg", ipykernel_spec(interrupt_mode="message"))

    kernel = await spec_hub.launch("spec/kh-msg")
    try:
        assert kernel.kernel_type.interrupt_mode == "message"
        async with kernel.client() as client:
            code = 'import sys; print("go", flush=True)\nwhile True: pass'
            reply = await interrupt_busy_loop(client, code, timeout=30, interrupt_timeout=60)
        assert reply.content["status"] == "error"
        assert reply.content["ename"] == "KeyboardInterrupt"
    finally:
        await kernel.shutdown()
