"""Tests of the ipykernel plugin: what it offers, its hooks, and a real kernel."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import sys

import kernel_hub_ipykernel.launcher
import kernel_hub_ipykernel.plugin
import pytest
import pytest_asyncio

from kernel_hub import KernelHub, NoSuchKernelType, UnavailableType
from kernel_hub.managers.subproc import SubprocessManager
from kernel_hub.plugins import HookRelay, make_plugin_manager
from kernel_hub.testing import execute_output, interrupt_busy_loop

plugin = kernel_hub_ipykernel.plugin


def fake_find_spec(monkeypatch, *, installed: bool) -> None:
    """Make ``ipykernel`` look installed or not (a fake: this is pure lookup logic)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):
        if name == "ipykernel":
            return importlib.machinery.ModuleSpec(name, None) if installed else None
        return real_find_spec(name, package)

    monkeypatch.setattr(kernel_hub_ipykernel.launcher.importlib.util, "find_spec", find_spec)


@pytest.fixture
def no_ipykernel(monkeypatch):
    fake_find_spec(monkeypatch, installed=False)


@pytest.fixture
def with_ipykernel(monkeypatch):
    fake_find_spec(monkeypatch, installed=True)


# ---- what it offers ----


@pytest.mark.asyncio
async def test_hook_find_kernel_types(with_ipykernel):
    relay = HookRelay(make_plugin_manager(load_entrypoints=False, plugins=[plugin]))

    ((name, kt),) = await relay.find_kernel_types(hub=None)

    assert kt.id == "ipykernel/python3"
    assert kt.language == "python"
    assert kt.argv == (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")
    assert kt.interrupt_mode == "signal"
    assert kt.display_name == "Python {}.{} (this environment)".format(*sys.version_info[:2])
    assert kt.metadata["interpreter"] == sys.executable
    assert kt.env == {}


def test_without_ipykernel_the_type_is_unavailable_with_the_fix(no_ipykernel, caplog, recwarn):
    caplog.set_level(logging.DEBUG)
    (note,) = plugin.find_kernel_types(hub=None)
    assert isinstance(note, UnavailableType) and note.id == "ipykernel/python3"
    assert note.reason == (
        f"kernel-hub-ipykernel is installed, but ipykernel is not importable by "
        f"{sys.executable}; install it: {sys.executable} -m pip install ipykernel"
    )
    assert kernel_hub_ipykernel.launcher.ipykernel_available() is False
    assert caplog.records == []
    assert len(recwarn) == 0


def test_broken_ipykernel_lookup_offers_no_kernel_type(monkeypatch):
    def find_spec(name: str, package: str | None = None):
        raise ValueError("ipykernel.__spec__ is None")

    monkeypatch.setattr(kernel_hub_ipykernel.launcher.importlib.util, "find_spec", find_spec)
    assert [type(t) for t in plugin.find_kernel_types(hub=None)] == [UnavailableType]


@pytest.mark.asyncio
async def test_the_default_type_without_ipykernel_says_what_is_missing(no_ipykernel):
    # What `kernel-hub run -c ...` meets in a venv where ipykernel is missing; spec/python3
    # is left out so that the ipykernel plugin is the only candidate.
    async with KernelHub(plugins=[plugin], load_entrypoints=False, config={}) as hub:
        assert await hub.find_kernel_types() == []
        with pytest.raises(NoSuchKernelType) as info:
            await hub.default_kernel_type()
        with pytest.raises(NoSuchKernelType) as named:
            await hub.launch("ipykernel/python3")
    for exc in (info.value, named.value):
        message = str(exc)
        assert message.startswith("kernel type 'ipykernel/python3' is not available: ")
        assert "ipykernel is not importable" in message
        assert f"{sys.executable} -m pip install ipykernel" in message
        assert "\n" not in message and "kernel-hub-ssh" not in message


def test_offers_python3_here_without_importing_ipykernel(monkeypatch):
    # The real lookup: ipykernel is a dev dependency of the workspace.
    assert importlib.util.find_spec("ipykernel") is not None, "install ipykernel to run this test"
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert [kt.id for kt in plugin.find_kernel_types(hub=None)] == ["ipykernel/python3"]
    assert "ipykernel" not in sys.modules


# ---- hooks ----


def test_hooks_are_plain_functions():
    # firstresult hooks must decide synchronously (see kernel_hub.hookspecs). That they decline
    # another provider's types is checked by the conformance battery (test_conformance_*.py).
    for hook in (plugin.find_kernel_types, plugin.launch, plugin.make_manager):
        assert not inspect.iscoroutinefunction(hook)


def test_hook_make_manager_rebuilds_a_subprocess_manager(with_ipykernel):
    (kt,) = plugin.find_kernel_types(hub=None)
    state = {"pid": os.getpid(), "pgid": None, "log_file": "/nonexistent/k.log"}

    manager = plugin.make_manager(hub=None, kernel_type=kt, connection_info={}, state=state)

    assert isinstance(manager, SubprocessManager)
    assert manager.type_id == "ipykernel/python3"
    assert manager.log_file == "/nonexistent/k.log"


def test_entry_point_loads_this_plugin():
    (ep,) = [
        ep for ep in importlib.metadata.entry_points(group="kernel_hub") if ep.name == "ipykernel"
    ]
    assert ep.load() is plugin
    assert ep.dist is not None and ep.dist.name == "kernel-hub-ipykernel"
    assert make_plugin_manager().get_plugin("ipykernel") is plugin


def test_distribution_requires_ipykernel():
    # Installing the plugin is enough for the README's first command (issue 20, item 4).
    requires = importlib.metadata.requires("kernel-hub-ipykernel") or []
    assert [r for r in requires if r.lower().startswith("ipykernel")]


# ---- a real kernel through the hub (integration) ----


@pytest_asyncio.fixture
async def hub():
    from kernel_hub import KernelHub

    async with KernelHub(plugins=[plugin], load_entrypoints=False) as hub:
        yield hub


@pytest.mark.integration
@pytest.mark.asyncio
async def test_execute_and_signal_interrupt(hub, tmp_path):
    assert [kt.id for kt in await hub.find_kernel_types()] == ["ipykernel/python3"]
    kernel = await hub.launch("ipykernel/python3", cwd=str(tmp_path))
    try:
        async with kernel.client() as client:
            code = "import os, sys; print(os.getcwd(), sys.executable)"
            content, text = await execute_output(client, code, timeout=60)
            assert content["status"] == "ok", content
            assert text.split() == [str(tmp_path), sys.executable]

            code = 'import sys; print("go", flush=True)\nwhile True: pass'
            reply = await interrupt_busy_loop(client, code, timeout=30, interrupt_timeout=60)
            assert reply.content["status"] == "error"
            assert reply.content["ename"] == "KeyboardInterrupt"

            # The kernel survived the interrupt and still answers.
            reply = await client.execute("1 + 1", timeout=60)
            assert reply.content["status"] == "ok"
    finally:
        await kernel.shutdown()
    assert not await kernel.manager.is_alive()
