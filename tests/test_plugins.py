"""Plugin loading, isolation, conflicts and the first-result decline semantics."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import types

import pytest

from kernel_hub import (
    KernelHub,
    KernelManager,
    KernelType,
    LaunchResult,
    NoSuchKernelType,
    PluginError,
    RestartPolicy,
    hookimpl,
)
from kernel_hub.plugins import HookRelay, make_plugin_manager
from kernel_hub.plugins.defaults import DEFAULT_RESTART_POLICY


class FakeManager(KernelManager):
    """A pure-logic manager for hook tests (real managers are tested with real kernels)."""

    def __init__(self, state):
        self.state = dict(state)

    async def is_alive(self):
        return False

    async def wait(self):
        return 0

    async def signal(self, signum):
        pass

    async def kill(self):
        pass

    async def cleanup(self):
        pass

    def describe(self):
        return self.state


def provider(pid, names=("a",), *, fail=False, calls=None):
    """An in-test provider plugin that owns provider id *pid*; no hook checks the provider.

    :param calls: a list that records ``(pid, hook)`` for every routed hook call.
    """
    calls = [] if calls is None else calls

    class Plugin:
        name = pid

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            if fail:
                raise RuntimeError("discovery exploded")
            return [KernelType(provider=pid, name=n) for n in names]

        @staticmethod
        @hookimpl
        def launch(hub, kernel_type, request):
            calls.append((pid, "launch"))

            async def go():
                return LaunchResult({"ip": "127.0.0.1"}, {"by": pid})

            return go()

        @staticmethod
        @hookimpl
        def make_manager(hub, kernel_type, connection_info, state):
            calls.append((pid, "make_manager"))
            return FakeManager(state)

        @staticmethod
        @hookimpl
        def restart_policy(hub, kernel_type):
            calls.append((pid, "restart_policy"))
            return RestartPolicy(limit=len(pid))

    return Plugin


def hub_with(*plugins):
    return KernelHub(plugins=plugins, load_entrypoints=False, config={})


@pytest.mark.asyncio
async def test_hook_find_kernel_types_gathers_all_and_skips_a_raising_plugin(caplog):
    hub = hub_with(provider("one", ("x", "y")), provider("bad", fail=True), provider("two"))
    with caplog.at_level(logging.WARNING, "kernel_hub.plugins"):
        ids = [t.id for t in await hub.find_kernel_types()]
    assert ids == ["one/x", "one/y", "two/a"]
    assert "'bad' failed in find_kernel_types" in caplog.text
    assert "discovery exploded" in caplog.text


@pytest.mark.asyncio
async def test_find_kernel_types_accepts_awaitables_and_skips_non_types(caplog):
    class Async:
        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            async def slow():
                return [KernelType(provider="late", name="k"), "junk"]

            return slow()

    with caplog.at_level(logging.WARNING):
        ids = [t.id for t in await hub_with(Async).find_kernel_types()]
    assert ids == ["late/k"]
    assert "expected KernelType" in caplog.text


@pytest.mark.asyncio
async def test_same_id_from_two_plugins_is_one_error_naming_both():
    hub = hub_with(provider("dup"), type("Other", (provider("dup"),), {"name": "other"}))
    with pytest.raises(PluginError, match=r"'dup/a' is offered by two plugins") as info:
        await hub.find_kernel_types()
    assert "plugin 'dup'" in str(info.value) and "plugin 'other'" in str(info.value)


@pytest.mark.asyncio
async def test_hook_launch_and_make_manager_reach_the_owner_only():
    """Routing by ownership: the other provider's hooks, which never decline, are not called."""
    calls = []
    hub = hub_with(provider("one", calls=calls), provider("two", calls=calls))
    kt = await hub.get_kernel_type("two/a")
    assert hub.owner_of("two/a") == "two"
    from kernel_hub import LaunchRequest

    result = await hub.hooks.launch(
        plugin="two", hub=hub, kernel_type=kt, request=LaunchRequest("k1")
    )
    assert result.state == {"by": "two"}
    manager = await hub.hooks.make_manager(
        plugin="two", hub=hub, kernel_type=kt, connection_info={}, state=result.state
    )
    assert isinstance(manager, FakeManager) and manager.type_id == "two/a"
    assert hub.hooks.restart_policy(plugin="two", hub=hub, kernel_type=kt).limit == 3
    assert calls == [("two", "launch"), ("two", "make_manager"), ("two", "restart_policy")]


@pytest.mark.asyncio
async def test_an_async_def_hookimpl_is_fine_on_a_routed_hook():
    """Routed to one plugin, a coroutine from an async def launch is simply awaited."""

    class AsyncPlugin:
        name = "asy"

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [KernelType(provider="asy", name="k")]

        @staticmethod
        @hookimpl
        async def launch(hub, kernel_type, request):
            return LaunchResult({"ip": "127.0.0.1"}, {"async": True})

    calls = []
    hub = hub_with(AsyncPlugin, provider("zzz", calls=calls))
    kt = await hub.get_kernel_type("asy/k")
    from kernel_hub import LaunchRequest

    result = await hub.hooks.launch(
        plugin="asy", hub=hub, kernel_type=kt, request=LaunchRequest("k")
    )
    assert result.state == {"async": True} and calls == []


@pytest.mark.asyncio
async def test_hook_make_manager_without_owner_is_a_clear_error():
    from kernel_hub import LaunchError

    hub = hub_with(provider("one"))
    with pytest.raises(LaunchError, match="plugin 'ghost' cannot rebuild a manager"):
        await hub.hooks.make_manager(
            plugin="ghost",
            hub=hub,
            kernel_type=KernelType(provider="ghost", name="x"),
            connection_info={},
            state={},
        )


def test_async_def_impl_would_wrongly_win_a_firstresult_hook():
    """Why hookimpls must be plain def: an async def 'decline' is a coroutine, never None."""

    class AsyncDecliner:
        @staticmethod
        @hookimpl(tryfirst=True)
        def restart_policy(hub, kernel_type):
            async def nope():
                return None

            return nope()

    pm = make_plugin_manager(load_entrypoints=False, plugins=[AsyncDecliner])
    result = pm.hook.restart_policy(hub=None, kernel_type=KernelType(provider="p", name="n"))
    assert result is not None  # the coroutine "won" although it meant to decline
    result.close()


def test_hook_restart_policy_default_and_override():
    kt = KernelType(provider="p", name="n")
    hub = hub_with()
    assert hub.hooks.restart_policy(plugin="p", hub=hub, kernel_type=kt) is DEFAULT_RESTART_POLICY

    class Strict:
        name = "p"

        @staticmethod
        @hookimpl
        def restart_policy(hub, kernel_type):
            return RestartPolicy(limit=1)

    hub = hub_with(Strict)
    assert hub.hooks.restart_policy(plugin="p", hub=hub, kernel_type=kt).limit == 1
    other = KernelType(provider="q", name="n")
    # The other provider's types never reach Strict, which answers for anything it is asked.
    assert hub.hooks.restart_policy(plugin="q", hub=hub, kernel_type=other) is (
        DEFAULT_RESTART_POLICY
    )


@pytest.mark.asyncio
async def test_unknown_type_lists_known_ids_and_close_matches():
    hub = hub_with(provider("spec", ("python3", "ir")))
    with pytest.raises(NoSuchKernelType) as info:
        await hub.launch("spec/pyhton3")
    text = str(info.value)
    assert "Did you mean: spec/python3" in text
    assert "Known types: spec/ir, spec/python3" in text


def _fake_dist(name, version="1.0"):
    return types.SimpleNamespace(name=name, version=version)


def _entry_point(name, module, dist):
    ep = importlib.metadata.EntryPoint(name=name, value=module, group="kernel_hub")
    return ep._for(dist) if hasattr(ep, "_for") else ep


def test_broken_entry_point_is_reported_and_others_still_load(monkeypatch, caplog):
    good = types.ModuleType("kh_good_plugin")
    good.find_kernel_types = hookimpl(lambda hub: [KernelType(provider="good", name="k")])
    monkeypatch.setitem(sys.modules, "kh_good_plugin", good)
    eps = [
        _entry_point("broken", "kh_no_such_module_xyz", _fake_dist("kernel-hub-broken")),
        _entry_point("good", "kh_good_plugin", _fake_dist("kernel-hub-good")),
    ]
    with caplog.at_level(logging.WARNING):
        pm = make_plugin_manager(entry_points=eps)
    assert pm.get_plugin("good") is good
    assert "broken" in pm.failed and "kh_no_such_module_xyz" in pm.failed["broken"].error
    assert "'broken' (kernel-hub-broken) failed to load" in caplog.text
    from kernel_hub.plugins import HookRelay

    listed = {i.name: i for i in HookRelay(pm).list_plugins()}
    assert listed["good"].hooks == ["find_kernel_types"]
    assert listed["good"].distribution == "kernel-hub-good"
    assert listed["broken"].error


def test_two_distributions_with_one_plugin_name_is_an_error(monkeypatch):
    mod = types.ModuleType("kh_twin")
    monkeypatch.setitem(sys.modules, "kh_twin", mod)
    eps = [
        _entry_point("twin", "kh_twin", _fake_dist("kernel-hub-twin-a")),
        _entry_point("twin", "kh_twin", _fake_dist("kernel-hub-twin-b")),
    ]
    with pytest.raises(PluginError, match="kernel-hub-twin-a 1.0 and kernel-hub-twin-b 1.0"):
        make_plugin_manager(entry_points=eps)


def test_blocking_by_argument_and_environment(monkeypatch):
    monkeypatch.setenv("KERNEL_HUB_DISABLE_PLUGINS", "ipykernel")
    pm = make_plugin_manager(blocked=["spec"])
    assert pm.get_plugin("spec") is None and pm.get_plugin("ipykernel") is None
    assert pm.is_blocked("spec") and pm.is_blocked("ipykernel")


def test_installed_entry_points_load_and_pass_check_pending():
    eps = importlib.metadata.entry_points(group="kernel_hub")
    names = {ep.name for ep in eps}
    assert {"spec", "ipykernel"} <= names
    pm = make_plugin_manager()
    for name in names:
        assert pm.get_plugin(name) is not None, pm.failed.get(name)
    pm.check_pending()


def test_tracing_logs_hook_calls(monkeypatch, caplog):
    monkeypatch.setenv("KERNEL_HUB_TRACE_PLUGINS", "1")
    pm = make_plugin_manager(load_entrypoints=False)
    with caplog.at_level(logging.DEBUG, "kernel_hub.plugins"):
        pm.hook.restart_policy(hub=None, kernel_type=KernelType(provider="p", name="n"))
    assert "restart_policy" in caplog.text


@pytest.mark.asyncio
async def test_tracing_sees_discovery_plugin_by_plugin(monkeypatch, caplog):
    monkeypatch.setenv("KERNEL_HUB_TRACE_PLUGINS", "1")

    class Lister:
        name = "lister"

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [KernelType(provider="lister", name="k")]

    pm = make_plugin_manager(load_entrypoints=False, plugins=[Lister])
    with caplog.at_level(logging.DEBUG, "kernel_hub.plugins"):
        found = await HookRelay(pm).find_kernel_types(hub=None)
    assert ("lister", KernelType(provider="lister", name="k")) in found
    assert "find_kernel_types" in caplog.text
