"""What the conformance suite cannot know: the kernel really runs at the configured niceness."""

from __future__ import annotations

import importlib.metadata
import logging
import os

import kernel_hub_nice.plugin
import pytest

from kernel_hub import KernelHub, LaunchError
from kernel_hub.plugins import make_plugin_manager

plugin = kernel_hub_nice.plugin


def hub_with(config):
    return KernelHub(plugins=[plugin], load_entrypoints=False, config=config)


@pytest.mark.asyncio
async def test_hook_find_kernel_types_reads_the_config_table():
    (kt,) = await hub_with({"nice": {"niceness": 3}}).find_kernel_types()
    assert kt.id == "nice/python3"
    assert kt.argv[:3] == ("nice", "-n", "3")
    assert kt.display_name == "Python 3 (nice -n 3)"
    (default,) = await hub_with({}).find_kernel_types()
    assert default.argv[:3] == ("nice", "-n", "10")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (-1, "must be from 0 to 19, not -1"),
        (20, "must be from 0 to 19, not 20"),
        ("5", "must be an integer, not str '5'"),
        (True, "must be an integer, not bool True"),
    ],
)
async def test_bad_niceness_is_reported_and_the_default_is_used(bad, problem, caplog):
    (kt,) = await hub_with({"nice": {"niceness": bad}}).find_kernel_types()
    assert kt.argv[:3] == ("nice", "-n", "10")
    assert (
        f"kernel_hub config [nice] field 'niceness' {problem}. "
        "Its default 10 is used until this is fixed"
    ) in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kernel_runs_at_the_configured_niceness():
    async with hub_with({"nice": {"niceness": 7}}) as hub:
        kernel = await hub.launch("nice/python3")
        try:
            outputs: list = []
            async with kernel.client() as client:
                code = "import os; print(os.nice(0))"
                reply = await client.execute(code, output_hook=outputs.append, timeout=30)
            assert reply.content["status"] == "ok", reply.content
            text = "".join(m.content.get("text", "") for m in outputs)
            # Relative to this process: the test runner may itself be niced.
            assert int(text) == min(19, os.nice(0) + 7)
        finally:
            await kernel.shutdown()


@pytest.mark.asyncio
async def test_hook_launch_without_nice_is_a_launch_error(tmp_path):
    async with hub_with({}) as hub:
        with pytest.raises(LaunchError, match="running 'nice' failed") as info:
            await hub.launch("nice/python3", env={"PATH": str(tmp_path)})  # no nice there
    assert "that its program is installed" in str(info.value)
    assert not hub.kernels


def test_entry_point_loads_this_plugin():
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="kernel_hub") if ep.name == "nice"]
    assert ep.load() is plugin
    assert make_plugin_manager().get_plugin("nice") is plugin
