"""How a Slurm kernel ends and is managed: from outside, by the time limit, from another process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import kernel_hub_slurm.plugin
import pytest
from kernel_hub_slurm.manager import SlurmKernelManager

from kernel_hub import KernelHub
from kernel_hub.conformance import execute_output, load_plugins
from kernel_hub.testing import free_ports, processes_with_env

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


def _hub(config):
    return KernelHub(plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config)


class _Events:
    """Collect a hub's events; wait for one kind."""

    def __init__(self, hub):
        self.seen = []
        self._changed = asyncio.Event()
        hub.events.subscribe(self._on)

    def _on(self, event):
        self.seen.append(event)
        self._changed.set()

    async def wait_for(self, kind, timeout):
        async with asyncio.timeout(timeout):
            while True:
                for e in self.seen:
                    if e.kind == kind:
                        return e
                self._changed.clear()
                await self._changed.wait()

    def progress(self, step):
        return [e for e in self.seen if e.kind == "progress" and e.data.get("step") == step]


async def _gone_from_queue(cluster, job_id, timeout=60):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while job_id in cluster.jobs() and loop.time() < deadline:
        await asyncio.sleep(0.2)  # polling squeue: a job's end has no event for us
    return job_id not in cluster.jobs()


@pytest.mark.asyncio
async def test_scancel_from_outside_is_a_death_with_its_reason(slurm_cluster, slurm_table):
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        events = _Events(hub)
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        manager = kernel.manager
        job_id = manager.describe()["job_id"]
        slurm_cluster.run("scancel", job_id)
        died = await events.wait_for("died", 60)
        await asyncio.wait_for(kernel.wait(), 60)
        assert kernel.status == "DEAD"
        assert isinstance(manager, SlurmKernelManager)
        assert manager.exit_reason == f"Slurm job {job_id} was cancelled (scancel)"
        ended = events.progress("ended")
        assert [e.data["reason"] for e in ended] == [manager.exit_reason]
        assert ended[0].time <= died.time  # the reason is known when "died" is emitted
        assert died.data["reason"] == manager.exit_reason
        assert "restarting" not in [e.kind for e in events.seen]  # not resubmitted by default
    assert await _gone_from_queue(slurm_cluster, job_id)
    assert not os.path.exists(manager.describe()["job_dir"])


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.asyncio
async def test_time_limit_ends_the_kernel_with_that_reason(slurm_cluster, slurm_table):
    table = {**slurm_table, "time": "1"}  # one minute, Slurm's smallest limit
    async with _hub({"slurm": {"short": table}}) as hub:
        events = _Events(hub)
        kernel = await hub.launch("slurm/short", ready_timeout=120)
        manager = kernel.manager
        job_id = manager.describe()["job_id"]
        # Slurm checks time limits about every 30 s: the kernel ends 60 to ~100 s after start.
        died = await events.wait_for("died", 240)
        assert (
            died.data["reason"]
            == manager.exit_reason
            == (
                f"Slurm job {job_id} reached its time limit (1); raise 'time' in [slurm.short] "
                "or pass params={'time': ...}"
            )
        )
        await asyncio.wait_for(kernel.wait(), 60)
    assert await _gone_from_queue(slurm_cluster, job_id)


_SECOND_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    import kernel_hub_slurm.plugin
    from kernel_hub import KernelHub
    from kernel_hub.conformance import execute_output, load_plugins

    async def main():
        saved = json.loads(sys.stdin.read())
        pm = load_plugins([kernel_hub_slurm.plugin])
        async with KernelHub(plugin_manager=pm, config=saved["config"]) as hub:
            k = saved["kernel"]
            kernel = await hub.attach(k["type_id"], k["connection_info"], k["state"])
            print(repr(kernel.manager), flush=True)
            async with kernel.client() as client:
                _, text = await execute_output(client, "print(x * 2)", timeout=60)
            print("output", text.strip(), flush=True)
            await kernel.shutdown()
            print("shut down", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.asyncio
async def test_reattach_from_a_second_process(slurm_cluster, slurm_table):
    config = {"slurm": {"k": slurm_table}}
    async with _hub(config) as hub:
        events = _Events(hub)
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        job_id = kernel.manager.describe()["job_id"]
        async with kernel.client() as client:
            await client.execute("x = 21", timeout=60)
        saved = json.dumps({"config": config, "kernel": kernel.describe()})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _SECOND_PROCESS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(saved.encode()), 180)
        lines = out.decode().splitlines()
        assert proc.returncode == 0, err.decode()[-2000:]
        assert lines[0].startswith(f"<SlurmKernelManager slurm/k [RUNNING job={job_id}"), lines
        assert lines[1:] == ["output 42", "shut down"], lines
        # This process's manager learns of the end from the nanny: a death, here.
        await events.wait_for("died", 60)
        await asyncio.wait_for(kernel.wait(), 60)
    assert await _gone_from_queue(slurm_cluster, job_id)


def _dead_port():
    (port,) = free_ports(1)  # nobody listens there
    return port


@pytest.mark.asyncio
async def test_interrupt_falls_back_to_scancel_when_the_nanny_is_unreachable(
    slurm_cluster, slurm_table
):
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120, restart=False)
        # A manager whose nanny port leads nowhere: only Slurm can reach the kernel now.
        info = {**kernel.connection_info, "nanny_control_port": _dead_port()}
        cut_off = SlurmKernelManager.from_state(info, kernel.manager.describe(), type_id="slurm/k")
        cut_off.nanny.request_timeout = 3.0
        try:
            async with kernel.client() as client:
                go = asyncio.Event()

                def on_output(msg):
                    if "go" in msg.content.get("text", ""):
                        go.set()

                task = asyncio.ensure_future(
                    client.execute(
                        'print("go", flush=True)\nwhile True:\n    pass',
                        output_hook=on_output,
                        timeout=120,
                    )
                )
                await asyncio.wait_for(go.wait(), 60)
                await cut_off.interrupt()  # nanny: no answer in 3 s -> scancel --batch -s INT
                reply = await asyncio.wait_for(task, 60)
                assert reply.content["ename"] == "KeyboardInterrupt", reply.content
                # The nanny relayed the signal and lives on: the kernel still answers.
                content, text = await execute_output(client, "print('alive')", timeout=60)
                assert text.strip() == "alive"
        finally:
            cut_off.nanny.close()
            await kernel.shutdown()


@pytest.mark.asyncio
async def test_restart_in_place_keeps_the_job(slurm_cluster, slurm_table):
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120, restart=False)
        manager = kernel.manager
        assert isinstance(manager, SlurmKernelManager)
        before = manager.describe()
        async with kernel.client() as client:
            await client.execute("x = 1", timeout=60)
        pid = await manager.restart()
        assert pid != before["kernel_pid"]
        after = manager.describe()
        assert after["job_id"] == before["job_id"] and after["kernel_pid"] == pid
        async with kernel.client() as client:
            await client.wait_for_ready(timeout=60)
            content, text = await execute_output(client, "print('x' in globals())", timeout=60)
        assert text.strip() == "False"  # a new kernel process, in the same job
        assert await manager.is_alive()
        await kernel.shutdown()


def _node_back(cluster, timeout=60):
    """Bring the node back to idle (resume it if Slurm has not returned it to service)."""
    deadline = time.monotonic() + timeout
    resumed = False
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%T", check=False).strip()
        if state == "idle":
            return True
        if not resumed and state.startswith("down"):
            cluster.run(
                "scontrol", "update", f"nodename={cluster.node}", "state=resume", check=False
            )
            resumed = True
        time.sleep(0.2)  # polling sinfo: the node's return has no event for us
    return False


@pytest.mark.asyncio
async def test_node_failure_ends_the_kernel_with_that_reason(slurm_cluster, slurm_table):
    try:
        async with _hub({"slurm": {"k": slurm_table}}) as hub:
            events = _Events(hub)
            kernel = await hub.launch("slurm/k", ready_timeout=120)
            manager = kernel.manager
            job_id = manager.describe()["job_id"]
            slurm_cluster.run(
                "scontrol", "update", f"nodename={slurm_cluster.node}", "state=down", "reason=kh"
            )
            died = await events.wait_for("died", 60)
            assert died.data["reason"] == f"Slurm job {job_id} ended because its node failed"
            await asyncio.wait_for(kernel.wait(), 60)
        assert await _gone_from_queue(slurm_cluster, job_id)
        assert not os.path.exists(manager.describe()["job_dir"])
    finally:
        assert _node_back(slurm_cluster), "the test node did not return to idle"


@pytest.mark.asyncio
async def test_nanny_killed_outright_is_seen_through_the_queue(slurm_cluster, slurm_table):
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        events = _Events(hub)
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        manager = kernel.manager
        state = manager.describe()
        job_id = state["job_id"]
        os.kill(state["nanny_pid"], 9)  # it can publish nothing; the batch step fails
        # watch_interval is 1 s here: squeue shows the job gone long before the nanny
        # link's own check (a ping that times out after 10 s) would.
        t0 = asyncio.get_running_loop().time()
        await events.wait_for("died", 60)
        assert asyncio.get_running_loop().time() - t0 < 9
        assert manager.exit_reason.startswith(f"Slurm job {job_id} ended (FAILED"), manager
        await asyncio.wait_for(kernel.wait(), 60)
    assert await _gone_from_queue(slurm_cluster, job_id)
    assert not os.path.exists(state["job_dir"])
    deadline = time.monotonic() + 30
    while processes_with_env(f"SLURM_JOB_ID={job_id}") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the orphaned kernel notices its parent's end by itself
    assert processes_with_env(f"SLURM_JOB_ID={job_id}") == []


@pytest.mark.asyncio
async def test_restart_true_resubmits_a_dead_kernel(slurm_cluster, slurm_table):
    async with _hub({"slurm": {"again": {**slurm_table, "restart": True}}}) as hub:
        events = _Events(hub)
        kernel = await hub.launch("slurm/again", ready_timeout=120)
        first = kernel.manager.describe()["job_id"]
        slurm_cluster.run("scancel", first)
        await events.wait_for("restarted", 120)
        second = kernel.manager.describe()["job_id"]
        assert second != first  # a new job, through the queue
        assert second in slurm_cluster.jobs()
        async with kernel.client() as client:
            _, text = await execute_output(client, "print('back')", timeout=60)
        assert text.strip() == "back"
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, first)
    assert await _gone_from_queue(slurm_cluster, second)
