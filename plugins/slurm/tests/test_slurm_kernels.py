"""Slurm kernels on a real one-node cluster: launch, execute, interrupt, restart, failures."""

from __future__ import annotations

import asyncio

import kernel_hub_slurm.plugin
import pytest

from kernel_hub import KernelHub
from kernel_hub.conformance import execute_output, load_plugins

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


def _hub(config):
    return KernelHub(plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config)


@pytest.mark.asyncio
async def test_launch_execute_shutdown(slurm_cluster, slurm_table):
    events = []
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        hub.events.subscribe(events.append)
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        state = kernel.manager.describe()
        assert state["job_id"] in slurm_cluster.jobs()
        async with kernel.client() as client:
            content, text = await execute_output(client, "print(6*7)", timeout=60)
        assert content["status"] == "ok" and text.strip() == "42"
        await kernel.shutdown()
    steps = [e.data.get("step") for e in events if e.kind == "progress"]
    assert "submitted" in steps and "registered" in steps
    assert slurm_cluster.wait_queue_empty(30) == []
