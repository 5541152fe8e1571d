"""The conformance suite itself: it passes a good provider and catches broken ones.

Each broken provider below breaks one rule; the suite runs on them in a
pytest subprocess (its own Jupyter runtime dir, so their leftovers stay there)
and must fail exactly the test that checks that rule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from kernel_hub.conformance import ProviderConformance

PROVIDERS = '''
import sys

import kernel_hub_ipykernel.plugin
from kernel_hub import KernelType, LaunchResult, SubprocessManager, hookimpl, launch_subprocess
from kernel_hub.testing import ProviderConformance

ARGV = (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")


class Greedy:
    """Launches every kernel type, its own or not."""

    @staticmethod
    @hookimpl
    def find_kernel_types(hub):
        return [KernelType("greedy", "py", argv=ARGV)]

    @staticmethod
    @hookimpl
    def launch(hub, kernel_type, request):
        return launch_subprocess(kernel_type, request)


class AsyncLaunch:
    """An async def launch: routed to its owner only, it is simply awaited."""

    @staticmethod
    @hookimpl
    def find_kernel_types(hub):
        return [KernelType("asyncl", "py", argv=ARGV)]

    @staticmethod
    @hookimpl
    async def launch(hub, kernel_type, request):
        return await launch_subprocess(kernel_type, request)


class NoLaunch:
    """Offers a kernel type it cannot launch."""

    @staticmethod
    @hookimpl
    def find_kernel_types(hub):
        return [KernelType("nolaunch", "py", argv=ARGV)]


class Trespasser:
    """Offers a kernel type under someone else's provider id."""

    @staticmethod
    @hookimpl
    def find_kernel_types(hub):
        return [KernelType("tres", "py", argv=ARGV), KernelType("spec", "python3", argv=ARGV)]


class LeakyManager(SubprocessManager):
    async def cleanup(self):
        pass  # leaves the connection file behind

    def describe(self):
        return {**super().describe(), "opened": object()}  # not JSON


class Leaky:
    @staticmethod
    @hookimpl
    def find_kernel_types(hub):
        return [KernelType("leaky", "py", argv=ARGV)]

    @staticmethod
    @hookimpl
    async def launch(hub, kernel_type, request):
        started = await launch_subprocess(kernel_type, request)
        # Without its live manager: the hub builds one with make_manager.
        return LaunchResult(started.connection_info, started.state)

    @staticmethod
    @hookimpl
    def make_manager(hub, kernel_type, connection_info, state):
        return LeakyManager.from_state(state, type_id=kernel_type.id)


class TestGood(ProviderConformance):
    plugins = [kernel_hub_ipykernel.plugin]
    type_ids = ["ipykernel/python3"]


class TestGreedy(ProviderConformance):
    plugins = [Greedy]
    type_ids = ["greedy/py"]


class TestAsyncLaunch(ProviderConformance):
    plugins = [AsyncLaunch]
    type_ids = ["asyncl/py"]


class TestNoLaunch(ProviderConformance):
    plugins = [NoLaunch]
    type_ids = ["nolaunch/py"]


class TestTrespasser(ProviderConformance):
    plugins = [Trespasser]
    type_ids = ["tres/py"]


class TestLeaky(ProviderConformance):
    plugins = [Leaky]
    type_ids = ["leaky/py"]


class TestMissingEntryPoint(ProviderConformance):
    plugins = ["kh-no-such-entry-point"]
    type_ids = ["x/y"]
'''

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
timeout = 120
"""

SELECTED = [
    "TestGood and (what_they_offer or valid or shutdown or unknown)",
    "TestGreedy and (what_they_offer or execute)",
    "TestAsyncLaunch and (what_they_offer or execute)",
    "TestNoLaunch and what_they_offer",
    "TestTrespasser and valid",
    "TestLeaky and (shutdown or describe)",
    "TestMissingEntryPoint and unknown",
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run the suite on the providers above; return ``{test id: failure message or ""}``."""
    tmp = tmp_path_factory.mktemp("conformance")
    (tmp / "test_providers.py").write_text(PROVIDERS)
    (tmp / "pytest.ini").write_text(INI)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    res = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "kernel_hub.testing", "-p", "no:cacheprovider"),
            *("--strict-markers", "--import-mode=importlib", "-q", "--rootdir", str(tmp)),
            *("-c", str(tmp / "pytest.ini"), "--junitxml", str(tmp / "report.xml")),
            *("-k", " or ".join(f"({s})" for s in SELECTED), str(tmp / "test_providers.py")),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode in (0, 1), res.stdout + res.stderr
    found = {}
    for case in ET.parse(tmp / "report.xml").iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        found[f"{cls}::{case.get('name')}"] = "" if bad is None else bad.get("message", "") or "?"
    return found


@pytest.mark.integration
def test_a_good_provider_passes(outcomes):
    good = {k: v for k, v in outcomes.items() if k.startswith("TestGood::")}
    assert len(good) == 4, outcomes
    assert all(v == "" for v in good.values()), good


@pytest.mark.integration
def test_greedy_and_async_def_launches_are_harmless_when_routed(outcomes):
    """Routing by ownership retires the old traps: both pass the whole relevant battery."""
    for cls in ("TestGreedy", "TestAsyncLaunch"):
        ran = {k: v for k, v in outcomes.items() if k.startswith(f"{cls}::")}
        assert len(ran) == 2, outcomes
        assert all(v == "" for v in ran.values()), ran


@pytest.mark.integration
def test_a_plugin_that_cannot_launch_its_types_is_caught(outcomes):
    msg = outcomes["TestNoLaunch::test_plugins_launch_what_they_offer"]
    assert "implements no launch hook" in msg, msg


@pytest.mark.integration
def test_a_type_under_another_provider_is_caught(outcomes):
    msg = outcomes["TestTrespasser::test_kernel_types_are_valid[tres/py]"]
    assert "offers 'spec/python3', outside its providers ['tres']" in msg, msg


@pytest.mark.integration
def test_leftovers_and_unjsonable_state_are_caught(outcomes):
    msg = outcomes["TestLeaky::test_shutdown_leaves_nothing[leaky/py]"]
    assert "connection_file" in msg and "was left behind" in msg, outcomes
    msg = outcomes["TestLeaky::test_describe_and_reattach[leaky/py]"]
    assert "not JSON serializable" in msg, outcomes


@pytest.mark.integration
def test_a_missing_entry_point_says_what_to_install(outcomes):
    msg = outcomes["TestMissingEntryPoint::test_unknown_name_raises"]
    assert "no entry point 'kh-no-such-entry-point'" in msg and "install" in msg, msg


def test_battery_is_documented():
    # The tutorial and the module docstring list the battery; a new test must be listed there.
    from pathlib import Path

    import kernel_hub.conformance

    tutorial = (Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md").read_text()
    names = sorted(n for n in dir(ProviderConformance) if n.startswith("test_"))
    assert len(names) == 8, names
    for name in names:
        assert f"`{name}`" in tutorial, f"docs/writing-a-plugin.md does not list {name}"
        assert f"``{name}``" in (kernel_hub.conformance.__doc__ or ""), name


def test_live_pids_sees_a_process_group_until_it_ends():
    from kernel_hub.conformance import _live_pids

    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert _live_pids(pid=proc.pid, pgid=None) == [proc.pid]
        assert _live_pids(pid=None, pgid=proc.pid) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert _live_pids(pid=proc.pid, pgid=proc.pid) == []
